//go:build !unix

package tunnel

import "net"

// deliverTo has no non-blocking write here, so forwards take the copy
// goroutine's path (see deliver_unix.go).
func deliverTo(net.Conn) func([]byte) int { return nil }
