//go:build unix

package tunnel

import (
	"net"

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
	return func(p []byte) int {
		off := 0
		_ = rc.Write(func(fd uintptr) bool {
			for off < len(p) {
				n, err := unix.Write(int(fd), p[off:])
				if n > 0 {
					off += n
				}
				if err == unix.EINTR {
					continue
				}
				if err != nil || n <= 0 {
					break
				}
			}
			return true // never wait for the socket to become writable
		})
		return off
	}
}
