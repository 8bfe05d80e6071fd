//go:build unix

package tunnel

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// deliverTo returns a function that writes to c without ever blocking and
// returns how much it wrote, for yamux's Stream.SetDeliver: the session's
// receive loop writes a forward's incoming bytes to the local socket
// itself while the forward's copy goroutine is idle, so a small message
// crosses no goroutine hand-off between the TLS connection and the
// socket. A socket that is full takes what fits; yamux buffers the rest
// for the copy goroutine as usual, so a slow application never stalls
// the receive loop and through it the other streams. nil if c has no
// file descriptor to write to.
func deliverTo(c net.Conn) func([]byte) int {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	w := &sockWriter{rc: rc}
	w.fn = w.write // bound once: a closure per call would be an allocation per message
	return w.deliver
}

// sockWriter writes without blocking. Only yamux's receive loop calls
// deliver, one frame at a time, so p and off need no lock.
type sockWriter struct {
	rc  syscall.RawConn
	fn  func(fd uintptr) bool
	p   []byte
	off int
}

func (w *sockWriter) deliver(p []byte) int {
	w.p, w.off = p, 0
	_ = w.rc.Write(w.fn)
	n := w.off
	w.p = nil
	return n
}

func (w *sockWriter) write(fd uintptr) bool {
	for w.off < len(w.p) {
		n, err := unix.Write(int(fd), w.p[w.off:])
		if n > 0 {
			w.off += n
		}
		if err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			break
		}
	}
	return true // never wait for the socket to become writable
}
