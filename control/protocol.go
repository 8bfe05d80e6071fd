// Package control is a daemon's local control socket: `twoway status` and
// `twoway kick` ask the running gateway or client what it is doing and tell
// it to end sessions.
//
// The endpoint is a unix socket (mode 0660, in a directory others cannot
// write; one the daemon creates is 0750) or, on Windows, a named pipe open
// to SYSTEM, Administrators and its owner. Access to it is the
// authorization: whoever can connect may query and kick.
//
// # Protocol
//
// One request and one response per connection, each a single JSON object.
// The client writes the request and reads the response; the server closes
// the connection after answering. A request is at most MaxRequest bytes and
// must arrive within the server's timeout (5 s).
//
//	{"op":"status"}
//	{"ok":true,"status":{"role":"server","sessions":[...],...}}
//
//	{"op":"kick","identity":"alice"}
//	{"ok":true,"kicked":2}
//
//	{"op":"reboot"}
//	{"ok":false,"error":"unknown op \"reboot\""}
//
// Unknown fields are ignored, so either side may add fields later.
package control

import "errors"

// Operations a request may ask for.
const (
	OpStatus = "status"
	OpKick   = "kick"
)

// MaxRequest bounds the size of a request; the server answers anything
// larger with an error without reading the rest.
const MaxRequest = 64 << 10

// Request is what a client asks.
type Request struct {
	Op string `json:"op"`
	// Identity names whose sessions to end (kick).
	Identity string `json:"identity,omitempty"`
	// Fleet asks about, or kicks on, every gateway of the daemon's fleet
	// (a FleetSource).
	Fleet bool `json:"fleet,omitempty"`
}

// Response is the server's answer. On failure OK is false and Error says
// why; nothing else is set.
type Response struct {
	OK     bool    `json:"ok"`
	Error  string  `json:"error,omitempty"`
	Status *Status `json:"status,omitempty"`
	// Kicked is how many sessions a kick ended.
	Kicked int `json:"kicked,omitempty"`
}

// Source is what the control server reports on and acts upon; the daemon
// implements it. Both methods may be called concurrently from several
// connections and must not block for long.
type Source interface {
	// Status returns a fresh snapshot.
	Status() Status
	// Kick ends every session of the named identity and returns how many
	// it ended. A daemon that cannot kick returns ErrNotSupported.
	Kick(identity string) (int, error)
}

// FleetSource is a Source that belongs to a fleet of gateways: it answers
// for all of them. Both methods may take a moment (they ask the fleet's
// store) and are called concurrently.
type FleetSource interface {
	// FleetStatus returns a snapshot with every gateway's sessions,
	// each with its Gateway.
	FleetStatus() (Status, error)
	// FleetKick ends the identity's sessions on every gateway and
	// returns how many ended.
	FleetKick(identity string) (int, error)
}

var (
	// ErrNotRunning means no daemon answers at the socket path: it does
	// not exist or nobody listens on it.
	ErrNotRunning = errors.New("no twoway daemon is running")
	// ErrInUse means another daemon already answers at the socket path.
	ErrInUse = errors.New("control socket in use")
	// ErrUnsafeDir means the socket's directory is open to other users.
	ErrUnsafeDir = errors.New("control socket directory is writable by other users")
	// ErrNotSupported is returned by a Source for an operation it does not
	// offer (kick on a client).
	ErrNotSupported = errors.New("not supported")
	// ErrTooLarge means a request exceeded MaxRequest.
	ErrTooLarge = errors.New("request too large")
)

// RemoteError is a failure the daemon reported in its response; Msg names
// the operation.
type RemoteError struct {
	Op  string
	Msg string
}

func (e *RemoteError) Error() string { return e.Msg }
