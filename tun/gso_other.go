//go:build darwin || windows

package tun

// GSO passthrough needs the Linux virtio-net header: elsewhere a device
// reads and writes finished packets only.

func (d *nativeDevice) CanGSO() bool { return false }

func (d *nativeDevice) ReadGSO([]byte, int) (int, error) { return 0, ErrUnsupported }

func (d *nativeDevice) WriteGSO([][]byte, int) (int, error) { return 0, ErrUnsupported }
