// Package socks5 is the server side of SOCKS5 (RFC 1928) with optional
// username/password authentication (RFC 1929), as the client's -D listener
// speaks it. It does the protocol only: Accept negotiates and reads the
// request, the caller dials (through the tunnel) and answers with
// Request.Reply, then copies bytes. Only CONNECT is supported; BIND and UDP
// ASSOCIATE are refused with "command not supported".
package socks5

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"time"
)

// DefaultTimeout bounds negotiation and the request when Options.Timeout is
// zero: long enough for a human-typed password prompt in a client, short
// enough that idle connections do not pin goroutines.
const DefaultTimeout = 30 * time.Second

// Protocol constants from RFC 1928 and RFC 1929.
const (
	version        = 5
	authVersion    = 1 // RFC 1929 subnegotiation version
	methodNoAuth   = 0x00
	methodUserPass = 0x02
	methodNone     = 0xff
	atypIPv4       = 1
	atypDomain     = 3
	atypIPv6       = 4
)

// Command is the CMD field of a request.
type Command byte

// Commands defined by RFC 1928. Accept returns only CommandConnect.
const (
	CommandConnect      Command = 1
	CommandBind         Command = 2
	CommandUDPAssociate Command = 3
)

// String is the command name as RFC 1928 spells it.
func (c Command) String() string {
	switch c {
	case CommandConnect:
		return "CONNECT"
	case CommandBind:
		return "BIND"
	case CommandUDPAssociate:
		return "UDP ASSOCIATE"
	}
	return "command " + strconv.Itoa(int(c))
}

// ReplyCode is the REP field of a reply.
type ReplyCode byte

// Reply codes defined by RFC 1928.
const (
	ReplySucceeded               ReplyCode = 0x00
	ReplyGeneralFailure          ReplyCode = 0x01
	ReplyNotAllowed              ReplyCode = 0x02 // connection not allowed by ruleset
	ReplyNetworkUnreachable      ReplyCode = 0x03
	ReplyHostUnreachable         ReplyCode = 0x04
	ReplyConnectionRefused       ReplyCode = 0x05
	ReplyTTLExpired              ReplyCode = 0x06
	ReplyCommandNotSupported     ReplyCode = 0x07
	ReplyAddressTypeNotSupported ReplyCode = 0x08
)

// String is the reply's meaning as RFC 1928 words it.
func (c ReplyCode) String() string {
	switch c {
	case ReplySucceeded:
		return "succeeded"
	case ReplyGeneralFailure:
		return "general SOCKS server failure"
	case ReplyNotAllowed:
		return "connection not allowed by ruleset"
	case ReplyNetworkUnreachable:
		return "network unreachable"
	case ReplyHostUnreachable:
		return "host unreachable"
	case ReplyConnectionRefused:
		return "connection refused"
	case ReplyTTLExpired:
		return "TTL expired"
	case ReplyCommandNotSupported:
		return "command not supported"
	case ReplyAddressTypeNotSupported:
		return "address type not supported"
	}
	return "reply code " + strconv.Itoa(int(c))
}

// Errors Accept and Reply return; I/O errors are wrapped with the step that
// failed. When Accept fails after the client has spoken SOCKS5 it has
// already sent the matching refusal, and the caller only closes the
// connection.
var (
	ErrVersion                 = errors.New("socks5: not a SOCKS5 client")
	ErrNoAcceptableMethod      = errors.New("socks5: no acceptable authentication method")
	ErrAuthFailed              = errors.New("socks5: authentication failed")
	ErrMalformed               = errors.New("socks5: malformed request")
	ErrCommandNotSupported     = errors.New("socks5: command not supported")
	ErrAddressTypeNotSupported = errors.New("socks5: address type not supported")
	ErrReplied                 = errors.New("socks5: request already answered")
)

// ErrNotAllowed is for callers: wrap it in a dial error to have ReplyFor
// answer "connection not allowed by ruleset".
var ErrNotAllowed = errors.New("connection not allowed by ruleset")

// ReplyError carries the reply code a failure should produce, for errors
// that know better than ReplyFor's guess (a refusal reported by the far end
// of the tunnel, for example).
type ReplyError struct {
	Code ReplyCode
	Err  error
}

// Error is the underlying error's message, or the code's meaning.
func (e *ReplyError) Error() string {
	if e.Err == nil {
		return e.Code.String()
	}
	return e.Err.Error()
}

// Unwrap returns the underlying error.
func (e *ReplyError) Unwrap() error { return e.Err }

// Options configures Accept. The zero value accepts clients without
// authentication.
type Options struct {
	// Authenticate, when set, makes username/password authentication
	// (RFC 1929) mandatory and checks each attempt; clients offering only
	// "no authentication" are refused. See StaticCredentials.
	Authenticate func(user, password string) bool
	// Timeout bounds negotiation and reading the request, and writing the
	// reply; zero means DefaultTimeout.
	Timeout time.Duration
}

// StaticCredentials returns an Authenticate function accepting exactly one
// user and password, compared in constant time.
func StaticCredentials(user, password string) func(string, string) bool {
	return func(u, p string) bool {
		// Evaluate both comparisons so timing does not reveal which failed.
		okUser := subtle.ConstantTimeCompare([]byte(u), []byte(user))
		okPass := subtle.ConstantTimeCompare([]byte(p), []byte(password))
		return okUser&okPass == 1
	}
}

// Request is a CONNECT request read by Accept. Exactly one of Host and Addr
// is set: a domain name the client asked for is in Host (resolution is left
// to the caller, which is what socks5h clients want), an IP address in Addr.
// A domain that is really an IP literal is reported in Addr.
type Request struct {
	Command Command
	Host    string
	Addr    netip.Addr
	Port    uint16
	// User is the authenticated user name, "" without authentication.
	User string

	conn    net.Conn
	timeout time.Duration
	replied bool
}

// Address is the destination as "host:port", ready for net.Dial.
func (r *Request) Address() string {
	if r.Host != "" {
		return net.JoinHostPort(r.Host, strconv.Itoa(int(r.Port)))
	}
	return netip.AddrPortFrom(r.Addr, r.Port).String()
}

// Reply sends the reply to the request. bound is the address the server
// side connected from (BND.ADDR/BND.PORT); pass the zero AddrPort when it is
// unknown, as it is across a tunnel. Reply may be called once; after a code
// other than ReplySucceeded the caller closes the connection.
func (r *Request) Reply(code ReplyCode, bound netip.AddrPort) error {
	if r.replied {
		return ErrReplied
	}
	r.replied = true
	return writeReply(r.conn, r.timeout, code, bound)
}

// Accept negotiates authentication on conn and reads one request, all
// within opts.Timeout. On success the request is CONNECT and the deadline
// is cleared; the caller must then call Reply. Unsupported commands and
// address types are answered here and reported as errors.
func Accept(conn net.Conn, opts Options) (*Request, error) {
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return nil, fmt.Errorf("socks5: set deadline: %w", err)
	}
	user, err := negotiate(conn, opts)
	if err != nil {
		return nil, err
	}
	req, err := readRequest(conn, timeout)
	if err != nil {
		return nil, err
	}
	req.User = user
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("socks5: clear deadline: %w", err)
	}
	return req, nil
}

// negotiate runs the method selection and, if chosen, RFC 1929
// authentication. It returns the authenticated user name.
func negotiate(conn net.Conn, opts Options) (string, error) {
	var buf [2 + 255]byte
	if _, err := io.ReadFull(conn, buf[:2]); err != nil {
		return "", fmt.Errorf("socks5: read greeting: %w", err)
	}
	if buf[0] != version {
		// Nothing useful can be sent to a SOCKS4 or HTTP client: close.
		return "", fmt.Errorf("%w (version byte %#02x)", ErrVersion, buf[0])
	}
	methods := buf[2 : 2+int(buf[1])]
	if _, err := io.ReadFull(conn, methods); err != nil {
		return "", fmt.Errorf("socks5: read methods: %w", err)
	}
	want := byte(methodNoAuth)
	if opts.Authenticate != nil {
		want = methodUserPass
	}
	chosen := byte(methodNone)
	for _, m := range methods {
		if m == want {
			chosen = want
		}
	}
	if _, err := conn.Write([]byte{version, chosen}); err != nil {
		return "", fmt.Errorf("socks5: write method selection: %w", err)
	}
	if chosen == methodNone {
		if want == methodUserPass {
			return "", fmt.Errorf("%w: client did not offer username/password", ErrNoAcceptableMethod)
		}
		return "", fmt.Errorf("%w: client requires authentication", ErrNoAcceptableMethod)
	}
	if chosen == methodNoAuth {
		return "", nil
	}
	return authenticate(conn, opts.Authenticate)
}

// authenticate is the RFC 1929 subnegotiation:
// VER(1)=1 ULEN(1) UNAME PLEN(1) PASSWD -> VER(1)=1 STATUS(1).
func authenticate(conn net.Conn, check func(string, string) bool) (string, error) {
	var buf [2 + 255 + 1 + 255]byte
	if _, err := io.ReadFull(conn, buf[:2]); err != nil {
		return "", fmt.Errorf("socks5: read credentials: %w", err)
	}
	if buf[0] != authVersion {
		_, _ = conn.Write([]byte{authVersion, 1})
		return "", fmt.Errorf("%w: username/password version %#02x", ErrMalformed, buf[0])
	}
	ulen := int(buf[1])
	// Read the user name and the password length in one go.
	if _, err := io.ReadFull(conn, buf[2:2+ulen+1]); err != nil {
		return "", fmt.Errorf("socks5: read credentials: %w", err)
	}
	user := string(buf[2 : 2+ulen])
	plen := int(buf[2+ulen])
	pass := buf[3+ulen : 3+ulen+plen]
	if _, err := io.ReadFull(conn, pass); err != nil {
		return "", fmt.Errorf("socks5: read credentials: %w", err)
	}
	ok := check(user, string(pass))
	clear(pass)
	status := byte(0)
	if !ok {
		status = 1
	}
	if _, err := conn.Write([]byte{authVersion, status}); err != nil {
		return "", fmt.Errorf("socks5: write authentication status: %w", err)
	}
	if !ok {
		return "", fmt.Errorf("%w for user %q", ErrAuthFailed, user)
	}
	return user, nil
}

// readRequest reads VER CMD RSV ATYP DST.ADDR DST.PORT and refuses what is
// not a CONNECT to a known address type.
func readRequest(conn net.Conn, timeout time.Duration) (*Request, error) {
	refuse := func(code ReplyCode, err error) (*Request, error) {
		_ = writeReply(conn, timeout, code, netip.AddrPort{})
		return nil, err
	}
	var buf [4 + 1 + 255 + 2]byte
	if _, err := io.ReadFull(conn, buf[:4]); err != nil {
		return nil, fmt.Errorf("socks5: read request: %w", err)
	}
	if buf[0] != version {
		return refuse(ReplyGeneralFailure, fmt.Errorf("%w: request version %#02x", ErrMalformed, buf[0]))
	}
	req := &Request{Command: Command(buf[1]), conn: conn, timeout: timeout}
	// buf[2] is RSV; RFC 1928 says it is zero, but some clients send junk
	// and nothing depends on it.
	switch buf[3] {
	case atypIPv4:
		if _, err := io.ReadFull(conn, buf[:4+2]); err != nil {
			return nil, fmt.Errorf("socks5: read request address: %w", err)
		}
		req.Addr = netip.AddrFrom4([4]byte(buf[:4]))
		req.Port = uint16(buf[4])<<8 | uint16(buf[5])
	case atypIPv6:
		if _, err := io.ReadFull(conn, buf[:16+2]); err != nil {
			return nil, fmt.Errorf("socks5: read request address: %w", err)
		}
		req.Addr = netip.AddrFrom16([16]byte(buf[:16]))
		req.Port = uint16(buf[16])<<8 | uint16(buf[17])
	case atypDomain:
		if _, err := io.ReadFull(conn, buf[:1]); err != nil {
			return nil, fmt.Errorf("socks5: read request address: %w", err)
		}
		n := int(buf[0])
		if _, err := io.ReadFull(conn, buf[1:1+n+2]); err != nil {
			return nil, fmt.Errorf("socks5: read request address: %w", err)
		}
		name := buf[1 : 1+n]
		req.Port = uint16(buf[1+n])<<8 | uint16(buf[2+n])
		if !validDomain(name) {
			return refuse(ReplyGeneralFailure, fmt.Errorf("%w: bad domain name %q", ErrMalformed, name))
		}
		if a, err := netip.ParseAddr(trimBrackets(string(name))); err == nil && a.Zone() == "" {
			req.Addr = a
		} else {
			req.Host = string(name)
		}
	default:
		return refuse(ReplyAddressTypeNotSupported, fmt.Errorf("%w: %#02x", ErrAddressTypeNotSupported, buf[3]))
	}
	if req.Command != CommandConnect {
		return refuse(ReplyCommandNotSupported, fmt.Errorf("%w: %s %s", ErrCommandNotSupported, req.Command, req.Address()))
	}
	return req, nil
}

// validDomain rejects names no resolver would take but a log line or a
// policy matcher might misread: empty, or with control bytes or spaces.
func validDomain(name []byte) bool {
	if len(name) == 0 {
		return false
	}
	for _, c := range name {
		if c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

func trimBrackets(s string) string {
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		return s[1 : len(s)-1]
	}
	return s
}

// writeReply writes VER REP RSV ATYP BND.ADDR BND.PORT with its own write
// deadline, since by now the connection has none.
func writeReply(conn net.Conn, timeout time.Duration, code ReplyCode, bound netip.AddrPort) error {
	var buf [4 + 16 + 2]byte
	buf[0], buf[1], buf[2] = version, byte(code), 0
	n := 4
	addr := bound.Addr().Unmap()
	switch {
	case addr.Is6():
		buf[3] = atypIPv6
		a := addr.As16()
		n += copy(buf[n:], a[:])
	default:
		// An unknown bound address is sent as 0.0.0.0:0.
		buf[3] = atypIPv4
		if addr.Is4() {
			a := addr.As4()
			copy(buf[n:], a[:])
		}
		n += 4
	}
	buf[n], buf[n+1] = byte(bound.Port()>>8), byte(bound.Port())
	n += 2
	if err := conn.SetWriteDeadline(time.Now().Add(timeout)); err != nil {
		return fmt.Errorf("socks5: set deadline: %w", err)
	}
	if _, err := conn.Write(buf[:n]); err != nil {
		return fmt.Errorf("socks5: write reply: %w", err)
	}
	if err := conn.SetWriteDeadline(time.Time{}); err != nil {
		return fmt.Errorf("socks5: clear deadline: %w", err)
	}
	return nil
}
