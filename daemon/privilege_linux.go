package daemon

import (
	"fmt"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// dropNetAdmin removes CAP_NET_ADMIN from the effective, permitted and
// inheritable sets of every thread (which takes it out of the ambient set
// too), so that a daemon without VPN mode that a unit gave it to cannot
// use it. Capabilities are per thread in Linux, hence AllThreadsSyscall;
// it is unavailable in cgo builds (the packaged binaries are not), which
// is then an error. It reports whether there was anything to drop.
func dropNetAdmin() (bool, error) {
	hdr := &unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	data := new([2]unix.CapUserData)
	if err := unix.Capget(hdr, &data[0]); err != nil {
		return false, fmt.Errorf("capget: %w", err)
	}
	const bit = uint32(1) << unix.CAP_NET_ADMIN // word 0: CAP_NET_ADMIN is 12
	d := &data[0]
	if (d.Effective|d.Permitted|d.Inheritable)&bit == 0 {
		return false, nil
	}
	d.Effective &^= bit
	d.Permitted &^= bit
	d.Inheritable &^= bit
	if _, _, errno := syscall.AllThreadsSyscall(unix.SYS_CAPSET, uintptr(unsafe.Pointer(hdr)), uintptr(unsafe.Pointer(&data[0])), 0); errno != 0 {
		return false, fmt.Errorf("capset: %w", errno)
	}
	return true, nil
}
