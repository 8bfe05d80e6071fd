package tun

import (
	"fmt"
	"runtime"
	"strings"
)

// MTU bounds accepted by Open and Config.Validate.
const (
	// MinMTU is the smallest MTU an IPv4-only tunnel accepts (RFC 791's
	// minimum datagram every host must take).
	MinMTU = 576
	// MinMTUIPv6 is the smallest MTU once IPv6 is in play (RFC 8200).
	MinMTUIPv6 = 1280
	// MaxMTU is the largest MTU (the 16-bit IP length field).
	MaxMTU = 65535
	// DefaultMTU leaves room for TLS, yamux and framing overhead inside a
	// 1500-byte path.
	DefaultMTU = 1380
)

// Options tunes Open.
type Options struct {
	// DisableOffload opens the Linux device without the virtio-net header,
	// so without TSO/GSO reads and GRO writes and with BatchSize 1. It is
	// the switch for kernels that advertise offloads but mishandle them;
	// the device also falls back on its own (see Open). Ignored elsewhere.
	DisableOffload bool
}

// Open creates the TUN interface name with the given MTU (name "" picks
// DefaultName) and returns it as a Device. It needs root or CAP_NET_ADMIN on
// Linux, root on macOS (name must be "utun" or "utunN") and Administrator plus
// wintun.dll next to the executable on Windows (ErrWintunMissing otherwise).
//
// On Linux the device uses the kernel's offloads when it has them (BatchSize
// 128, reads of up to 64 KiB superpackets split into MTU-sized packets, GRO
// on writes). Some kernels accept the offload flags and then refuse coalesced
// writes with EINVAL (Linux 6.6.44 and LTS backports of its virtio_net change,
// tailscale/tailscale#13041; some vendor NAS kernels). The pinned wireguard-go
// has no switch to turn GRO off afterwards, so the first such refusal makes
// this device write packets one by one from then on: the refused batch is
// lost (TCP retransmits it) and the Write reports it once.
func Open(name string, mtu int) (Device, error) {
	return OpenWith(name, mtu, Options{})
}

// OpenWith is Open with Options.
func OpenWith(name string, mtu int, opts Options) (Device, error) {
	if name == "" {
		name = DefaultName()
	}
	if err := ValidateName(runtime.GOOS, name); err != nil {
		return nil, err
	}
	if mtu < MinMTU || mtu > MaxMTU {
		return nil, fmt.Errorf("%w: mtu %d outside %d..%d", ErrInvalidConfig, mtu, MinMTU, MaxMTU)
	}
	return openNative(name, mtu, opts)
}

// DefaultName is the interface name Open uses for "": "twoway0" on Linux,
// "utun" (next free utunN) on macOS, "twoway" on Windows.
func DefaultName() string {
	switch runtime.GOOS {
	case "darwin":
		return "utun"
	case "windows":
		return "twoway"
	default:
		return "twoway0"
	}
}

// ValidateName checks an interface name for goos before anything is created:
// Linux allows 15 bytes (IFNAMSIZ-1); macOS only utun or utunN; and since
// names end up as command arguments on macOS and Windows, only letters,
// digits, '.', '_' and '-' are accepted anywhere.
func ValidateName(goos, name string) error {
	if name == "" {
		return fmt.Errorf("%w: empty interface name", ErrInvalidConfig)
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
		if !ok {
			return fmt.Errorf("%w: interface name %q: only letters, digits, '.', '_' and '-' are allowed", ErrInvalidConfig, name)
		}
	}
	if name[0] == '-' {
		return fmt.Errorf("%w: interface name %q starts with '-'", ErrInvalidConfig, name)
	}
	switch goos {
	case "linux":
		if len(name) > 15 {
			return fmt.Errorf("%w: interface name %q longer than 15 bytes", ErrInvalidConfig, name)
		}
		if name == "." || name == ".." {
			return fmt.Errorf("%w: interface name %q", ErrInvalidConfig, name)
		}
	case "darwin":
		if name != "utun" {
			rest, ok := strings.CutPrefix(name, "utun")
			if !ok || rest == "" || !allDigits(rest) || (len(rest) > 1 && rest[0] == '0') {
				return fmt.Errorf("%w: interface name %q: macOS needs utun or utunN", ErrInvalidConfig, name)
			}
		}
	case "windows":
		if len(name) > 128 {
			return fmt.Errorf("%w: interface name %q longer than 128 characters", ErrInvalidConfig, name)
		}
	}
	return nil
}

func allDigits(s string) bool {
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
