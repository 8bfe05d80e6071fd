package tun

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// gsoFile is the device's file when GSO passthrough works on it: opened
// with the virtio-net header and with TCP and UDP segmentation offloads
// (Linux 6.2 or later), so that every superpacket the kernel hands over can
// also be handed to a peer's kernel. Nil otherwise.
func gsoFile(f *os.File) *os.File {
	sc, err := f.SyscallConn()
	if err != nil {
		return nil
	}
	ok := false
	_ = sc.Control(func(fd uintptr) {
		ifr, err := unix.NewIfreq("")
		if err != nil || unix.IoctlIfreq(int(fd), unix.TUNGETIFF, ifr) != nil {
			return
		}
		if ifr.Uint16()&unix.IFF_VNET_HDR == 0 {
			return
		}
		// wireguard-go already asked for these; asking again tells
		// whether the kernel has UDP segmentation offload, without
		// which a peer's UDP superpacket could not be written here.
		ok = unix.IoctlSetInt(int(fd), unix.TUNSETOFFLOAD,
			unix.TUN_F_CSUM|unix.TUN_F_TSO4|unix.TUN_F_TSO6|unix.TUN_F_USO4|unix.TUN_F_USO6) == nil
	})
	if !ok {
		return nil
	}
	return f
}

func (d *nativeDevice) CanGSO() bool { return d.gso != nil }

func (d *nativeDevice) ReadGSO(buf []byte, offset int) (int, error) {
	if d.gso == nil {
		return 0, ErrUnsupported
	}
	if offset < Offset || len(buf) < offset+MaxPacketSize {
		return 0, ErrOffset
	}
	if d.closed.Load() {
		return 0, ErrClosed
	}
	for {
		n, err := d.gso.Read(buf[offset-virtioHdrLen : offset+MaxPacketSize])
		if err != nil {
			if d.isClosed(err) || errors.Is(err, syscall.EBADFD) {
				return 0, ErrClosed
			}
			return 0, fmt.Errorf("tun read: %w", err)
		}
		if n <= virtioHdrLen {
			continue // nothing after the header: not a packet
		}
		n -= virtioHdrLen
		if err := fromVirtio(buf, offset, n); err != nil {
			return 0, fmt.Errorf("tun read: %w", err)
		}
		return n, nil
	}
}

func (d *nativeDevice) WriteGSO(bufs [][]byte, offset int) (int, error) {
	if d.gso == nil {
		return 0, ErrUnsupported
	}
	if err := CheckBuffers(bufs, offset); err != nil {
		return 0, err
	}
	var errs error
	written := 0
	for _, b := range bufs {
		n := len(b) - offset
		if n > MaxPacketSize {
			errs = fmt.Errorf("%d-byte packet larger than %d", n, MaxPacketSize)
			continue
		}
		if err := toVirtio(b, offset, n); err != nil {
			errs = err
			continue
		}
		if _, err := d.gso.Write(b[offset-virtioHdrLen:]); err != nil {
			if d.isClosed(err) || errors.Is(err, syscall.EBADFD) {
				return written, ErrClosed
			}
			errs = err // every packet is independent: keep going
			continue
		}
		written++
	}
	if errs != nil {
		return written, fmt.Errorf("tun write: %d of %d packets: %w", len(bufs)-written, len(bufs), errs)
	}
	return written, nil
}
