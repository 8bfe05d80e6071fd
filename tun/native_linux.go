package tun

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// nativeWriteCountsPackets is false: wireguard-go's Linux Write returns the
// number of bytes written, not packets.
const nativeWriteCountsPackets = false

// openNative relies on OpenWith having checked name and mtu: wireguard-go's
// CreateTUN leaks the file and its listener goroutines when setting the MTU
// fails after the interface exists.
func openNative(name string, mtu int, opts Options) (Device, error) {
	var (
		dev wgtun.Device
		err error
	)
	if opts.DisableOffload {
		dev, err = createWithoutOffload(name, mtu)
	} else {
		dev, err = wgtun.CreateTUN(name, mtu)
	}
	if err != nil {
		if errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("open tun %s: %w (is another twoway using it?)", name, err)
		}
		if errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("open tun %s: %w (needs root or CAP_NET_ADMIN)", name, err)
		}
		return nil, fmt.Errorf("open tun %s: %w", name, err)
	}
	d, err := newNativeDevice(dev)
	if err != nil {
		return nil, err
	}
	if f, ok := dev.(interface{ File() *os.File }); ok && !opts.DisableOffload {
		d.gso = gsoFile(f.File())
	}
	return d, nil
}

// createWithoutOffload is wireguard-go's CreateTUN minus IFF_VNET_HDR.
// wireguard-go picks the mode from the flags the file was created with, so
// without the virtio header it reads and writes plain packets, BatchSize 1.
func createWithoutOffload(name string, mtu int) (wgtun.Device, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	ifr.SetUint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF: %w", err)
	}
	// Non-blocking before os.NewFile so the file joins the netpoller and
	// Close can interrupt a blocked Read.
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "/dev/net/tun")
	dev, err := wgtun.CreateTUNFromFile(f, mtu)
	if err != nil {
		// CreateTUNFromFile does not close it, and an open descriptor
		// keeps the interface alive.
		f.Close()
		return nil, err
	}
	return dev, nil
}

// groRefused reports the error a kernel gives when it refuses a coalesced
// write: EINVAL (tailscale/tailscale#13041).
func groRefused(err error) bool {
	return errors.Is(err, unix.EINVAL)
}
