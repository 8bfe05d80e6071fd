package tunnel

import (
	"errors"
	"fmt"
	"syscall"
)

// Every sentinel error the package returns is declared here, as yamux's
// const.go does, and so is the one table (wireErrors) that maps the
// failure codes the peers exchange to them: the reply codes of a data
// stream (Code, wire.go) and the codes of a hello error, bye or
// listen_error on the control stream (ctl*, wire.go). StreamError,
// HelloError and ByeError all read that table, so a code means the same
// sentinel wherever it arrives.

// Sentinel errors, one per failure code, so callers (the SOCKS5 front end,
// the CLI) can branch with errors.Is.
var (
	ErrDenied      = errors.New("denied by policy")
	ErrRefused     = errors.New("connection refused")
	ErrUnreachable = errors.New("unreachable")
	ErrTimeout     = errors.New("timed out")
	ErrNotFound    = errors.New("host not found")
	ErrDialFailed  = errors.New("dial failed")
	ErrBadRequest  = errors.New("bad request")
	ErrLimit       = errors.New("too many streams")
	ErrShutdown    = errors.New("shutting down")
	ErrUnsupported = errors.New("unsupported")
)

// Session-level errors.
var (
	// ErrPeerDead means nothing was received from the peer for the
	// dead-peer timeout.
	ErrPeerDead = errors.New("peer stopped responding")
	// ErrClosedByPeer means the peer closed the session or its control
	// stream.
	ErrClosedByPeer = errors.New("session closed by peer")
	// ErrStopped is returned by a stopped Client or Server.
	ErrStopped = errors.New("stopped")
	// ErrPacketsLost ends a VPN session whose packets stream ended while
	// the session itself was up; the client reconnects.
	ErrPacketsLost = errors.New("VPN packets lost")
)

// Errors for what a peer sent that could not be decoded or used.
var (
	// ErrALPN means the peer did not negotiate the twoway protocol.
	ErrALPN = errors.New("peer does not speak " + ALPN)
	// ErrBadHeader means a stream header or reply could not be decoded.
	ErrBadHeader = errors.New("malformed stream header")
	// ErrBadControl means a control message could not be decoded.
	ErrBadControl = errors.New("malformed control message")
	// ErrBadPacket means a packets stream carried a frame that is not a
	// packet (length 0).
	ErrBadPacket = errors.New("malformed packet frame")
	// ErrBadForward means a forward is not usable.
	ErrBadForward = errors.New("bad forward")
)

// Errors a streamGuard or the muxConn ends a session with: the gateway's
// connection refusing what the peer sent.
var (
	// ErrEarlyStreams means the peer opened a second stream before the
	// hello completed.
	ErrEarlyStreams = errors.New("peer opened more than one stream before the hello")
	// ErrStreamAbuse means the peer kept sending data on streams the
	// gateway had not accepted (refused, or not answered yet).
	ErrStreamAbuse = errors.New("peer keeps sending data on streams it was not given")
	// ErrPingFlood ends a session whose peer sends multiplexer pings
	// faster than pingLimit allows.
	ErrPingFlood = errors.New("peer sends pings faster than allowed")
	// errPendingStreams means the peer has more unanswered streams than
	// the session allows at all; yamux would take them, so the guard
	// stops before its own table grows without bound.
	errPendingStreams = fmt.Errorf("%w: peer has too many unanswered streams", ErrLimit)
)

// isPeerAbuse reports the read errors by which the gateway's connection
// refuses what the peer sent: the session's end is their doing, and the
// log should say so rather than "closed by peer".
func isPeerAbuse(err error) bool {
	return errors.Is(err, ErrPingFlood) || errors.Is(err, ErrEarlyStreams) ||
		errors.Is(err, ErrStreamAbuse) || errors.Is(err, errPendingStreams)
}

// Errors the handshake gate refuses with.
var (
	errGateFull   = errors.New("every handshake slot is busy with a connection past its ClientHello")
	errSourceFull = errors.New("this source has too many handshakes in progress")
	errEvicted    = errors.New("evicted: no ClientHello while the handshake slots were needed")
)

// wireErrors maps each failure a peer can report to its sentinel: as the
// reply code of a data stream, and as the control codes of a hello error,
// bye or listen_error that mean the same. errno, where set, is what a local
// dial failing the same way returns, so code written for net.Dial errors
// (a SOCKS5 reply mapper, say) treats a remote failure like a local one.
// Control codes not listed (bad_request, failed) match no sentinel.
var wireErrors = []struct {
	code  Code
	ctl   []string
	err   error
	errno error
}{
	{CodeDenied, []string{ctlDenied, ctlRevoked, ctlExpired}, ErrDenied, nil},
	{CodeRefused, nil, ErrRefused, syscall.ECONNREFUSED},
	{CodeUnreachable, nil, ErrUnreachable, syscall.EHOSTUNREACH},
	{CodeTimeout, nil, ErrTimeout, syscall.ETIMEDOUT},
	{CodeNotFound, nil, ErrNotFound, nil},
	{CodeDialFailed, nil, ErrDialFailed, nil},
	{CodeBadRequest, nil, ErrBadRequest, nil},
	{CodeLimit, []string{ctlLimit, ctlBusy}, ErrLimit, nil},
	{CodeShutdown, []string{ctlShutdown}, ErrShutdown, nil},
	{CodeUnsupported, []string{ctlVersion}, ErrUnsupported, nil},
}

// controlErr is the sentinel a control code stands for, or nil.
func controlErr(code string) error {
	for _, w := range wireErrors {
		for _, c := range w.ctl {
			if c == code {
				return w.err
			}
		}
	}
	return nil
}

// StreamError is a non-OK reply: the code and the peer's explanation (for
// policy denials, the rule that decided).
type StreamError struct {
	Code    Code
	Message string
}

// Error is the code's meaning and the peer's explanation.
func (e *StreamError) Error() string {
	if e.Message == "" {
		return e.Code.String()
	}
	return e.Code.String() + ": " + e.Message
}

// Unwrap returns the code's sentinel and, where one fits, the errno a local
// dial would have produced (see wireErrors).
func (e *StreamError) Unwrap() []error {
	for _, w := range wireErrors {
		if w.code == e.Code {
			if w.errno != nil {
				return []error{w.err, w.errno}
			}
			return []error{w.err}
		}
	}
	return nil
}

// HelloError is the gateway's refusal of a session, after the TLS
// handshake: denied by policy, busy, version mismatch. The client also
// reports a refused remote (-R) listener with it.
type HelloError struct {
	Code    string
	Message string
}

// Error says the gateway refused and why.
func (e *HelloError) Error() string { return "gateway refused session: " + e.Code + ": " + e.Message }

// Is maps codes to the package's sentinels (see wireErrors).
func (e *HelloError) Is(target error) bool {
	err := controlErr(e.Code)
	return err != nil && target == err
}

// ByeError is the reason a peer gave for ending (or draining) a session.
type ByeError struct {
	Code    string // "shutdown", "revoked", "expired", "denied", ...
	Message string
}

// Error gives the peer's code and message.
func (e *ByeError) Error() string {
	if e.Message == "" {
		return "peer said bye: " + e.Code
	}
	return "peer said bye: " + e.Code + ": " + e.Message
}

// Is maps codes to the package's sentinels (see wireErrors).
func (e *ByeError) Is(target error) bool {
	err := controlErr(e.Code)
	return err != nil && target == err
}
