//go:build !linux && !darwin

package tunnel

import "net"

// setNotSentLowat does nothing where TCP_NOTSENT_LOWAT does not exist
// (Windows): the send buffer holds what it holds.
func setNotSentLowat(net.Conn, int) error { return nil }
