// Package tun is the operating-system side of twoway's VPN mode: it opens the
// TUN device (through golang.zx2c4.com/wireguard/tun) and configures its
// addresses, routes and DNS per OS, undoing every change on exit or, after a
// crash, on the next start.
//
// The tunnel depends only on the small Device interface; cmd wires in a real
// device from Open, tests wire in tun/tuntest.
package tun

import (
	"errors"
	"net"
	"os"
)

// Buffer geometry shared by every Device and its callers.
const (
	// Offset is the headroom twoway leaves in front of each packet in a
	// buffer. The Linux device writes a 10-byte virtio-net header there
	// when offloads are on and macOS a 4-byte address-family header; 16
	// covers both and keeps packets 8-byte aligned.
	Offset = 16

	// MaxPacketSize is the largest packet or coalesced superpacket a
	// Device reads or writes (the IPv4/IPv6 length fields are 16 bits).
	MaxPacketSize = 65535

	// BufferSize is the size of one pooled packet buffer: Offset bytes of
	// headroom followed by room for MaxPacketSize bytes.
	BufferSize = Offset + MaxPacketSize

	// MaxBatchSize is the largest BatchSize any Device reports
	// (wireguard-go's conn.IdealBatchSize on Linux with offloads).
	MaxBatchSize = 128
)

// Device is a TUN interface as the tunnel sees it: batches of raw IP packets
// (no link-layer or protocol-information header) in and out. It mirrors
// golang.zx2c4.com/wireguard/tun.Device without Events and File, which the
// tunnel does not need.
//
// Buffers: every element of bufs has Offset (or more) bytes of headroom in
// front of the packet, which the device may overwrite, and Read needs room
// for MaxPacketSize bytes after the offset (allocate BufferSize). An offset
// below Offset is refused with ErrOffset on every implementation, so a caller
// that works against tuntest also works against the kernel.
//
// Concurrency: one goroutine calls Read at a time. Write is safe for
// concurrent use (implementations serialise it) and may run concurrently with
// Read. Close may be called at any time, more than once, from any goroutine;
// it unblocks a pending Read and makes later calls return an error matching
// ErrClosed.
//
// Errors: ErrClosed is final. Any other Read or Write error concerns that
// batch only (for example ErrTooManySegments, or a write the kernel refused):
// the caller logs it, rate-limited, and keeps going, as IP loss is
// recoverable end to end.
type Device interface {
	// Read reads one or more packets into bufs, packet i at
	// bufs[i][offset:offset+sizes[i]], and returns how many it read. It
	// blocks until at least one packet is available. len(sizes) must be
	// at least len(bufs); pass BatchSize() buffers so a coalesced
	// superpacket from the kernel can be split without loss. A Read may
	// return n > 0 together with ErrTooManySegments.
	Read(bufs [][]byte, sizes []int, offset int) (n int, err error)

	// Write writes each bufs[i][offset:] as one packet and returns how
	// many were handed to the OS. It may coalesce packets of one flow
	// into a superpacket in place (Linux GRO): it can overwrite the
	// headroom, extend bufs[i] up to its capacity and reorder the elements
	// of bufs, so callers re-slice pooled buffers before reusing them and
	// give each element the capacity of a whole buffer (BufferSize;
	// capacity past offset+MaxPacketSize is not used). Packets longer
	// than MaxPacketSize are refused.
	Write(bufs [][]byte, offset int) (int, error)

	// BatchSize is the largest number of packets one Read returns and the
	// preferred number per Write; it never changes for a Device. It is 1
	// without offloads and at most MaxBatchSize.
	BatchSize() int

	// MTU returns the interface's current MTU.
	MTU() (int, error)

	// Name returns the interface name the OS gave the device (on macOS
	// "utun" asks for the next free utunN).
	Name() (string, error)

	// Close removes the interface; addresses and routes bound to it go
	// with it.
	Close() error
}

// Sentinel errors callers branch on.
var (
	// ErrClosed is returned by Read and Write once the device is closed.
	// It matches both os.ErrClosed and net.ErrClosed under errors.Is, so
	// callers can use whichever their shutdown code already checks.
	ErrClosed error = closedError{}

	// ErrTooManySegments is returned by Read when the kernel handed over a
	// coalesced superpacket with more segments than len(bufs); the packets
	// that did fit are returned, the rest are dropped. It is not fatal.
	// It happens with an unusually small MSS under load, or when fewer than
	// BatchSize() buffers are passed.
	ErrTooManySegments = errors.New("tun: superpacket has more segments than buffers; some packets dropped")

	// ErrOffset is returned when the offset is smaller than Offset or
	// the buffers are too short for it.
	ErrOffset = errors.New("tun: offset smaller than tun.Offset or buffer too short")

	// ErrUnsupported is returned on an OS twoway cannot drive a TUN on.
	ErrUnsupported = errors.New("tun: not supported on this operating system")

	// ErrWintunMissing is returned on Windows when wintun.dll cannot be
	// loaded; it ships separately (https://www.wintun.net) and has to sit
	// next to twoway.exe.
	ErrWintunMissing = errors.New("tun: wintun.dll not found")

	// ErrInvalidConfig wraps every error from Config.Validate and from
	// name or MTU checks in Open.
	ErrInvalidConfig = errors.New("invalid tun config")
)

// closedError is ErrClosed's type. A type rather than errors.New because
// wireguard-go and the standard library report closure as os.ErrClosed while
// network-style callers check net.ErrClosed; matching both saves every caller
// from guessing.
type closedError struct{}

func (closedError) Error() string { return "tun: device closed" }

// Is reports whether target is one of the closure errors ErrClosed stands for.
func (closedError) Is(target error) bool {
	return target == os.ErrClosed || target == net.ErrClosed
}

// CheckBuffers returns ErrOffset when offset or bufs break the buffer rules
// of Device: offset at least Offset and every buffer longer than offset (for
// Read, room for a packet; for Write, a non-empty packet). Implementations call
// it first so that a misuse fails the same way on every Device.
func CheckBuffers(bufs [][]byte, offset int) error {
	if offset < Offset {
		return ErrOffset
	}
	for _, b := range bufs {
		if len(b) <= offset {
			return ErrOffset
		}
	}
	return nil
}

// CheckRead is CheckBuffers plus the Read-only rules: at least one buffer and
// len(sizes) >= len(bufs).
func CheckRead(bufs [][]byte, sizes []int, offset int) error {
	if len(bufs) == 0 || len(sizes) < len(bufs) {
		return errReadArgs
	}
	return CheckBuffers(bufs, offset)
}

var errReadArgs = errors.New("tun: Read needs at least one buffer and len(sizes) >= len(bufs)")
