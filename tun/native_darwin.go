package tun

import (
	"fmt"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

// nativeWriteCountsPackets is true: wireguard-go's macOS Write returns the
// number of packets written.
const nativeWriteCountsPackets = true

func openNative(name string, mtu int, _ Options) (Device, error) {
	dev, err := wgtun.CreateTUN(name, mtu)
	if err != nil {
		return nil, fmt.Errorf("open tun %s: %w (needs root)", name, err)
	}
	return newNativeDevice(dev)
}

// groRefused is false: macOS has no write coalescing.
func groRefused(error) bool { return false }
