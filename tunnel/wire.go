package tunnel

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
)

// ALPN is the application protocol both sides must negotiate. A peer that
// offers anything else, or nothing, is refused: it is not speaking twoway.
const ALPN = "twoway/1"

// Protocol versions this implementation speaks (see docs/PROTOCOL.md). The
// hello exchange settles on the highest version both sides support.
const (
	ProtocolVersion    = 1
	minProtocolVersion = 1
)

// Wire limits. Every length on the wire is checked against one of these
// before anything is allocated, so a hostile peer cannot make us buffer more.
const (
	maxControlMessage = 64 << 10 // one control message (JSON)
	streamHeaderFixed = 9        // version, kind, port, listener, host length
	streamHeaderMax   = streamHeaderFixed + 255
	streamReplyMax    = 4 + 255 + 255
	streamWireVersion = 1
)

// StreamKind says what a data stream carries. It is the second byte of the
// stream header.
type StreamKind uint8

// Stream kinds.
const (
	// KindConnect is opened by the client: "dial Host:Port for me" (-L, -D).
	KindConnect StreamKind = 1
	// KindReverse is opened by the gateway: a connection accepted on a
	// remote (-R) listener the client registered; Listener names it and
	// Host:Port is where the connection came from.
	KindReverse StreamKind = 2
	// KindPackets is opened by a VPN client once per session: IP packets
	// to and from its TUN device, length-prefixed (see packets.go).
	KindPackets StreamKind = 3
	// KindRenew is opened by the client: "certify this new key for me",
	// one certificate request and one answer (see renew.go). Only with
	// the gateway's capRenew.
	KindRenew StreamKind = 4
)

// String names the kind as docs/PROTOCOL.md does.
func (k StreamKind) String() string {
	switch k {
	case KindConnect:
		return "connect"
	case KindReverse:
		return "reverse"
	case KindPackets:
		return "packets"
	case KindRenew:
		return "renew"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// streamHeader is the first thing on every data stream, written by the side
// that opened it:
//
//	0      version (1)
//	1      kind
//	2..3   port, big endian
//	4..7   listener id, big endian (KindReverse; 0 otherwise)
//	8      host length n (0..255)
//	9..    host, n bytes: a DNS name or an IP literal without brackets
type streamHeader struct {
	Kind     StreamKind
	Port     uint16
	Listener uint32
	Host     string
}

func (h streamHeader) marshal() ([]byte, error) {
	if len(h.Host) > 255 {
		return nil, fmt.Errorf("host name longer than 255 bytes")
	}
	b := make([]byte, streamHeaderFixed, streamHeaderFixed+len(h.Host))
	b[0] = streamWireVersion
	b[1] = byte(h.Kind)
	binary.BigEndian.PutUint16(b[2:4], h.Port)
	binary.BigEndian.PutUint32(b[4:8], h.Listener)
	b[8] = byte(len(h.Host))
	return append(b, h.Host...), nil
}

// readStreamHeader reads exactly one header and nothing after it: the bytes
// that follow belong to the forwarded connection.
func readStreamHeader(r io.Reader) (streamHeader, error) {
	var fixed [streamHeaderFixed]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return streamHeader{}, fmt.Errorf("%w: %w", ErrBadHeader, err)
	}
	if fixed[0] != streamWireVersion {
		return streamHeader{}, fmt.Errorf("%w: version %d", ErrBadHeader, fixed[0])
	}
	h := streamHeader{
		Kind:     StreamKind(fixed[1]),
		Port:     binary.BigEndian.Uint16(fixed[2:4]),
		Listener: binary.BigEndian.Uint32(fixed[4:8]),
	}
	if n := int(fixed[8]); n > 0 {
		host := make([]byte, n)
		if _, err := io.ReadFull(r, host); err != nil {
			return streamHeader{}, fmt.Errorf("%w: host: %w", ErrBadHeader, err)
		}
		h.Host = string(host)
	}
	return h, nil
}

// Code is the gateway's (or, for reverse streams, the client's) answer to a
// stream header. It is sent before any data.
type Code uint8

// Reply codes. docs/PROTOCOL.md lists them; values are part of the protocol.
const (
	CodeOK          Code = 0
	CodeDenied      Code = 1  // refused by policy
	CodeRefused     Code = 2  // the target refused the connection
	CodeUnreachable Code = 3  // no route to the target host or network
	CodeTimeout     Code = 4  // dialing the target timed out
	CodeNotFound    Code = 5  // the target name did not resolve
	CodeDialFailed  Code = 6  // any other dial failure
	CodeBadRequest  Code = 7  // malformed header, bad host or port
	CodeLimit       Code = 8  // too many streams on this session
	CodeShutdown    Code = 9  // the side is draining
	CodeUnsupported Code = 10 // unknown stream kind or listener
)

var codeNames = map[Code]string{
	CodeOK: "ok", CodeDenied: "denied by policy", CodeRefused: "connection refused",
	CodeUnreachable: "unreachable", CodeTimeout: "timed out", CodeNotFound: "host not found",
	CodeDialFailed: "dial failed", CodeBadRequest: "bad request", CodeLimit: "too many streams",
	CodeShutdown: "shutting down", CodeUnsupported: "unsupported",
}

// String is the code's human-readable meaning.
func (c Code) String() string {
	if s, ok := codeNames[c]; ok {
		return s
	}
	return "code(" + strconv.Itoa(int(c)) + ")"
}

// streamReply answers a stream header:
//
//	0      version (1)
//	1      code
//	2      bound length b, then b bytes: "ip:port" the answering side dialed from (OK only)
//	       message length m, then m bytes of UTF-8 explanation (errors only)
type streamReply struct {
	Code    Code
	Bound   string
	Message string
}

func (r streamReply) marshal() []byte {
	bound, msg := truncate(r.Bound, 255), truncate(r.Message, 255)
	b := make([]byte, 0, 4+len(bound)+len(msg))
	b = append(b, streamWireVersion, byte(r.Code), byte(len(bound)))
	b = append(b, bound...)
	b = append(b, byte(len(msg)))
	return append(b, msg...)
}

func readStreamReply(r io.Reader) (streamReply, error) {
	var head [3]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return streamReply{}, fmt.Errorf("%w: reply: %w", ErrBadHeader, err)
	}
	if head[0] != streamWireVersion {
		return streamReply{}, fmt.Errorf("%w: reply version %d", ErrBadHeader, head[0])
	}
	rep := streamReply{Code: Code(head[1])}
	bound, err := readShortString(r, int(head[2]))
	if err != nil {
		return streamReply{}, err
	}
	var ml [1]byte
	if _, err := io.ReadFull(r, ml[:]); err != nil {
		return streamReply{}, fmt.Errorf("%w: reply: %w", ErrBadHeader, err)
	}
	msg, err := readShortString(r, int(ml[0]))
	if err != nil {
		return streamReply{}, err
	}
	rep.Bound, rep.Message = bound, msg
	return rep, nil
}

func (r streamReply) err() error {
	if r.Code == CodeOK {
		return nil
	}
	return &StreamError{Code: r.Code, Message: r.Message}
}

func readShortString(r io.Reader, n int) (string, error) {
	if n == 0 {
		return "", nil
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", fmt.Errorf("%w: reply: %w", ErrBadHeader, err)
	}
	return string(b), nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// Control message types (the "type" field). See docs/PROTOCOL.md.
const (
	msgHello       = "hello"
	msgError       = "error"
	msgListen      = "listen"
	msgListenOK    = "listen_ok"
	msgListenError = "listen_error"
	msgUnlisten    = "unlisten"
	msgReset       = "reset"
	msgBye         = "bye"
	// msgPath is in udp.go.
)

// Control error and bye codes.
const (
	ctlVersion    = "version"
	ctlDenied     = "denied"
	ctlBusy       = "busy"
	ctlBadRequest = "bad_request"
	ctlRevoked    = "revoked"
	ctlExpired    = "expired"
	ctlShutdown   = "shutdown"
	ctlLimit      = "limit"
	ctlFailed     = "failed"
)

// Capabilities announced in the hello. A side uses a feature only if both
// announced it.
const (
	capForward = "forward" // KindConnect streams
	capReverse = "reverse" // listen / KindReverse streams
	capReset   = "reset"   // reset messages abort a stream on both sides
	capRenew   = "renew"   // the gateway renews certificates (KindRenew streams)
)

// controlMsg is one message on the control stream. The framing is a 4-byte
// big-endian length followed by that many bytes of JSON; one flat struct
// keeps decoding trivial, and unknown fields are ignored so later versions
// can add some.
type controlMsg struct {
	Type string `json:"type"`

	// hello
	Version      int            `json:"version,omitempty"`
	MinVersion   int            `json:"min_version,omitempty"`
	Software     string         `json:"software,omitempty"`
	Capabilities []string       `json:"capabilities,omitempty"`
	Session      string         `json:"session,omitempty"`
	Identity     *HelloIdentity `json:"identity,omitempty"`
	Grants       []string       `json:"grants,omitempty"`
	Params       *SessionParams `json:"params,omitempty"`
	VPN          *VPNConfig     `json:"vpn,omitempty"`
	VPNError     string         `json:"vpn_error,omitempty"`
	UDP          *udpHello      `json:"udp,omitempty"`

	// path
	Path string `json:"path,omitempty"`
	// rekey, rekey_ack
	Epoch uint32 `json:"epoch,omitempty"`

	// listen, listen_ok, listen_error, unlisten
	ID    uint32 `json:"id,omitempty"`
	Bind  string `json:"bind,omitempty"`
	Bound string `json:"bound,omitempty"`

	// reset
	Stream uint32 `json:"stream,omitempty"`

	// error, bye, listen_error
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

// HelloIdentity is how the gateway saw the client's certificate, sent back
// in its hello so the client can show what it was admitted as.
type HelloIdentity struct {
	Name   string   `json:"name"`
	Serial string   `json:"serial"`
	Groups []string `json:"groups,omitempty"`
	Issuer string   `json:"issuer"`
}

// SessionParams are the gateway's limits for this session, announced in
// its hello.
type SessionParams struct {
	MaxStreams   int    `json:"max_streams"`
	MaxListeners int    `json:"max_listeners"`
	StreamWindow uint32 `json:"stream_window"`
	DialTimeout  int64  `json:"dial_timeout_ms"`
	KeepAlive    int64  `json:"keepalive_ms"`
	DeadPeer     int64  `json:"dead_peer_ms"`
}

func writeControl(w io.Writer, m *controlMsg) error {
	body, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if len(body) > maxControlMessage {
		return fmt.Errorf("control message %q is %d bytes, limit %d", m.Type, len(body), maxControlMessage)
	}
	buf := make([]byte, 4, 4+len(body))
	binary.BigEndian.PutUint32(buf, uint32(len(body)))
	_, err = w.Write(append(buf, body...))
	return err
}

// readControl reads one message; the length is checked before the body is
// allocated.
func readControl(r io.Reader) (*controlMsg, error) {
	var l [4]byte
	if _, err := io.ReadFull(r, l[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(l[:])
	if n == 0 || n > maxControlMessage {
		return nil, fmt.Errorf("%w: length %d (limit %d)", ErrBadControl, n, maxControlMessage)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadControl, err)
	}
	m := new(controlMsg)
	if err := json.Unmarshal(body, m); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadControl, err)
	}
	if m.Type == "" {
		return nil, fmt.Errorf("%w: no type", ErrBadControl)
	}
	return m, nil
}
