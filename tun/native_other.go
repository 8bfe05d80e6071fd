//go:build !linux && !darwin && !windows

package tun

func openNative(name string, mtu int, _ Options) (Device, error) {
	return nil, ErrUnsupported
}
