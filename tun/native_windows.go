package tun

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/windows"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// nativeWriteCountsPackets is true: wireguard-go's Windows Write returns the
// number of packets written.
const nativeWriteCountsPackets = true

func openNative(name string, mtu int, _ Options) (Device, error) {
	dev, err := wgtun.CreateTUN(name, mtu)
	if err != nil {
		// wintun loads wintun.dll lazily from the executable's
		// directory or System32 and reports a missing file as
		// ERROR_MOD_NOT_FOUND deep inside a generic message.
		if errors.Is(err, windows.ERROR_MOD_NOT_FOUND) {
			dir := "the directory of twoway.exe"
			if exe, e := os.Executable(); e == nil {
				dir = filepath.Dir(exe)
			}
			return nil, fmt.Errorf("open tun %s: %w: download it from https://www.wintun.net and put wintun.dll for this architecture in %s", name, ErrWintunMissing, dir)
		}
		return nil, fmt.Errorf("open tun %s: %w (needs Administrator)", name, err)
	}
	return newNativeDevice(dev)
}

// groRefused is false: wintun has no write coalescing.
func groRefused(error) bool { return false }
