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

// Validate checks f: Listen is IP:port (a host name is allowed on the
// client side, -L and -D; the gateway's policy decides -R binds by address,
// so there it must be an IP), port 0 picks a free port; Target is
// host:port with a non-zero port for -L and -R and empty for -D. The
// command-line form (-L [bind:]port:host:hostport) is parsed by
// config.ParseForward.
func (f Forward) Validate() error {
	fail := func(format string, a ...any) error {
		return fmt.Errorf("%w %s: %s", ErrBadForward, f, fmt.Sprintf(format, a...))
	}
	switch f.Kind {
	case ForwardLocal, ForwardRemote, ForwardDynamic:
	default:
		return fmt.Errorf("%w: unknown kind %q", ErrBadForward, f.Kind)
	}
	bind, port, err := net.SplitHostPort(f.Listen)
	if err != nil {
		return fail("listen address: %v", err)
	}
	if f.Kind == ForwardRemote {
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
	if f.Kind == ForwardDynamic {
		if f.Target != "" {
			return fail("a dynamic forward has no target")
		}
		return nil
	}
	host, tport, err := net.SplitHostPort(f.Target)
	if err != nil {
		return fail("target: %v", err)
	}
	if err := checkHost(host); err != nil {
		return fail("target host: %v", err)
	}
	if _, err := parsePort(tport, false); err != nil {
		return fail("target port: %v", err)
	}
	return nil
}

// String renders the forward as its command-line flag.
func (f Forward) String() string {
	if f.Kind == ForwardDynamic {
		return fmt.Sprintf("-D %s", f.Listen)
	}
	return fmt.Sprintf("-%c %s:%s", f.Kind, f.Listen, f.Target)
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
