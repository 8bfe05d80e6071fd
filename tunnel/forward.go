package tunnel

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// ForwardKind is the ssh-style flag a forward came from.
type ForwardKind byte

// Forward kinds.
const (
	// ForwardLocal (-L): the client listens; connections go through the
	// gateway to Target.
	ForwardLocal ForwardKind = 'L'
	// ForwardRemote (-R): the gateway listens; connections come back
	// through the tunnel and the client dials Target.
	ForwardRemote ForwardKind = 'R'
	// ForwardDynamic (-D): the client runs a SOCKS5 server; each request
	// names its own target, which the gateway dials.
	ForwardDynamic ForwardKind = 'D'
)

// Forward is one port forward.
type Forward struct {
	Kind ForwardKind
	// Listen is the host:port to listen on: on the client for -L and -D,
	// on the gateway for -R. Port 0 picks a free port.
	Listen string
	// Target is the host:port to connect to: from the gateway for -L,
	// from the client for -R. Empty for -D.
	Target string
}

// ErrBadForward means a forward specification could not be parsed.
var ErrBadForward = errors.New("bad forward")

// defaultBind is where forwards listen when the spec names no address:
// loopback, as ssh does, so a forward is not exposed to the network by
// accident.
const defaultBind = "127.0.0.1"

// ParseForward parses the argument of -L or -R, "[bind:]port:host:hostport",
// or of -D, "[bind:]port". IPv6 addresses go in brackets; a bind of "*"
// means every IPv4 address.
func ParseForward(kind ForwardKind, spec string) (Forward, error) {
	fail := func(format string, a ...any) (Forward, error) {
		return Forward{}, fmt.Errorf("%w -%c %q: %s", ErrBadForward, kind, spec, fmt.Sprintf(format, a...))
	}
	parts, err := splitColons(spec)
	if err != nil {
		return fail("%v", err)
	}
	var bind, port, host, hostport string
	switch kind {
	case ForwardLocal, ForwardRemote:
		switch len(parts) {
		case 3:
			port, host, hostport = parts[0], parts[1], parts[2]
		case 4:
			bind, port, host, hostport = parts[0], parts[1], parts[2], parts[3]
		default:
			return fail("want [bind:]port:host:hostport")
		}
	case ForwardDynamic:
		switch len(parts) {
		case 1:
			port = parts[0]
		case 2:
			bind, port = parts[0], parts[1]
		default:
			return fail("want [bind:]port")
		}
	default:
		return Forward{}, fmt.Errorf("%w: unknown kind %q", ErrBadForward, kind)
	}
	switch bind {
	case "":
		bind = defaultBind
	case "*":
		bind = "0.0.0.0"
	}
	if kind == ForwardRemote {
		// The gateway's policy decides binds by address, so a name is
		// not good enough here.
		if bind == "localhost" {
			bind = defaultBind
		}
		if _, err := netip.ParseAddr(bind); err != nil {
			return fail("remote bind address %q must be an IP address", bind)
		}
	}
	if err := checkHost(bind); err != nil {
		return fail("bind address: %v", err)
	}
	if _, err := parsePort(port, true); err != nil {
		return fail("listen port: %v", err)
	}
	f := Forward{Kind: kind, Listen: net.JoinHostPort(bind, port)}
	if kind != ForwardDynamic {
		if err := checkHost(host); err != nil {
			return fail("target host: %v", err)
		}
		if _, err := parsePort(hostport, false); err != nil {
			return fail("target port: %v", err)
		}
		f.Target = net.JoinHostPort(host, hostport)
	}
	return f, nil
}

// String renders the forward as its command-line flag.
func (f Forward) String() string {
	if f.Kind == ForwardDynamic {
		return fmt.Sprintf("-D %s", f.Listen)
	}
	return fmt.Sprintf("-%c %s:%s", f.Kind, f.Listen, f.Target)
}

// splitColons splits on colons outside square brackets and strips the
// brackets.
func splitColons(s string) ([]string, error) {
	var parts []string
	var cur strings.Builder
	inBracket := false
	bracketed := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '[' && !inBracket && cur.Len() == 0 && !bracketed:
			inBracket, bracketed = true, true
		case c == ']' && inBracket:
			inBracket = false
			if i+1 < len(s) && s[i+1] != ':' {
				return nil, errors.New("']' must be followed by ':'")
			}
		case c == ':' && !inBracket:
			parts = append(parts, cur.String())
			cur.Reset()
			bracketed = false
		case c == '[' || c == ']':
			return nil, errors.New("misplaced bracket")
		default:
			cur.WriteByte(c)
		}
	}
	if inBracket {
		return nil, errors.New("unclosed '['")
	}
	return append(parts, cur.String()), nil
}

func parsePort(s string, zeroOK bool) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("%q is not a port number", s)
	}
	if n == 0 && !zeroOK {
		return 0, errors.New("port 0")
	}
	return uint16(n), nil
}

// checkHost accepts an IP literal or a DNS name (letters, digits, '-', '_'
// and dots, at most 253 bytes).
func checkHost(h string) error {
	if h == "" {
		return errors.New("empty host")
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return nil
	}
	if len(h) > 253 {
		return fmt.Errorf("host name longer than 253 bytes")
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("%q is not a valid host name", h)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("%q is not a valid host name", h)
			}
		}
	}
	return nil
}
