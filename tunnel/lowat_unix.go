//go:build linux || darwin

package tunnel

import (
	"net"

	"golang.org/x/sys/unix"
)

// setNotSentLowat limits the bytes the kernel holds for c that it has not
// sent yet (TCP_NOTSENT_LOWAT): beyond that the socket reports itself not
// writable, so the queue stays in twoway, where the packet queues manage it,
// rather than in a send buffer that autotunes to megabytes and delays
// every packet behind it. Sent but unacknowledged bytes (the congestion
// window) are not limited, so throughput is not.
func setNotSentLowat(c net.Conn, n int) error {
	tc, ok := c.(*net.TCPConn)
	if !ok || n <= 0 {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, n)
	}); err != nil {
		return err
	}
	return serr
}
