package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// ForwardType is the kind of a port forward.
type ForwardType string

// Forward types, as ssh's -L, -R and -D.
const (
	ForwardLocal   ForwardType = "local"   // -L: listen on the client, the gateway dials
	ForwardRemote  ForwardType = "remote"  // -R: the gateway listens, the client dials
	ForwardDynamic ForwardType = "dynamic" // -D: SOCKS5 on the client, the gateway dials
)

// ErrForwardSpec is wrapped by ParseForward errors.
var ErrForwardSpec = errors.New("invalid forward")

// Forward is one port forward, from a -L/-R/-D flag (ParseForward) or a
// [[forward]] table. Local is always the client-side address and Remote the
// gateway-side one:
//
//	local:   listen on Local (client side); the gateway dials Remote
//	remote:  the gateway listens on Remote; the client dials Local
//	dynamic: a SOCKS5 listener on Local; each request names its destination
//
// Listen addresses are IP:port after loading or parsing: a missing bind
// address becomes 127.0.0.1 (loopback, as ssh does), "*" or "" becomes
// 0.0.0.0 and "localhost" 127.0.0.1. Dial addresses keep their host name,
// which the dialing side resolves.
type Forward struct {
	Type   ForwardType `toml:"type"`
	Local  string      `toml:"local"`
	Remote string      `toml:"remote"`
}

// ListenAddr is the address of this forward's listener: Local for local
// and dynamic forwards (on the client), Remote for remote ones (on the
// gateway).
func (f Forward) ListenAddr() string {
	if f.Type == ForwardRemote {
		return f.Remote
	}
	return f.Local
}

// DialAddr is the address connections are forwarded to: Remote (dialed by
// the gateway) for local forwards, Local (dialed by the client) for remote
// ones, "" for dynamic ones.
func (f Forward) DialAddr() string {
	switch f.Type {
	case ForwardLocal:
		return f.Remote
	case ForwardRemote:
		return f.Local
	}
	return ""
}

// String renders the forward as its command-line flag, e.g.
// "-L 127.0.0.1:8080:db.corp.example:5432".
func (f Forward) String() string {
	switch f.Type {
	case ForwardLocal:
		return "-L " + f.Local + ":" + f.Remote
	case ForwardRemote:
		return "-R " + f.Remote + ":" + f.Local
	case ForwardDynamic:
		return "-D " + f.Local
	}
	return fmt.Sprintf("forward{type=%q local=%q remote=%q}", f.Type, f.Local, f.Remote)
}

// ParseForward parses the command-line forms
//
//	-L [bind:]port:host:hostport
//	-R [bind:]port:host:hostport
//	-D [bind:]port
//
// kind is "L", "R", "D" or the ForwardType names. IPv6 addresses go in
// brackets: -L [::1]:8080:[2001:db8::5]:80.
func ParseForward(kind, spec string) (Forward, error) {
	var t ForwardType
	switch kind {
	case "L", "local":
		t = ForwardLocal
	case "R", "remote":
		t = ForwardRemote
	case "D", "dynamic":
		t = ForwardDynamic
	default:
		return Forward{}, fmt.Errorf("%w: unknown forward type %q (want L, R or D)", ErrForwardSpec, kind)
	}
	fail := func(format string, args ...any) (Forward, error) {
		return Forward{}, fmt.Errorf("%w -%s %q: %s", ErrForwardSpec, strings.ToUpper(string(t[:1])), spec, fmt.Sprintf(format, args...))
	}
	parts, err := splitSpec(spec)
	if err != nil {
		return fail("%v", err)
	}
	if strings.HasSuffix(spec, ":") {
		// Else "8080:db:5432:" shifts every field and reads as a bad
		// port. (A leading colon is an empty bind address, as in ssh.)
		return fail("trailing colon")
	}
	usage := "want [bind:]port:host:hostport"
	if t == ForwardDynamic {
		usage = "want [bind:]port"
	}
	var bind, port string
	switch {
	case t == ForwardDynamic && len(parts) == 1:
		bind, port = "127.0.0.1", parts[0].s
	case t == ForwardDynamic && len(parts) == 2, t != ForwardDynamic && len(parts) == 4:
		bind, port = parts[0].s, parts[1].s
		parts = parts[2:]
	case t != ForwardDynamic && len(parts) == 3:
		bind, port = "127.0.0.1", parts[0].s
		parts = parts[1:]
	default:
		if strings.Count(spec, ":") > 3 && !strings.Contains(spec, "[") {
			return fail("%s (put IPv6 addresses in brackets)", usage)
		}
		return fail("%s", usage)
	}
	listen, err := listenAddr(bind, port)
	if err != nil {
		return fail("%v", err)
	}
	f := Forward{Type: t}
	if t == ForwardDynamic {
		f.Local = listen
		return f, nil
	}
	if !parts[0].bracketed && strings.Contains(parts[0].s, ":") {
		return fail("put IPv6 addresses in brackets")
	}
	dial := net.JoinHostPort(parts[0].s, parts[1].s)
	if err := checkDial(nil, "", dial); err != nil {
		return fail("%v", err)
	}
	if t == ForwardLocal {
		f.Local, f.Remote = listen, dial
	} else {
		f.Remote, f.Local = listen, dial
	}
	return f, nil
}

type specPart struct {
	s         string
	bracketed bool
}

// splitSpec splits on colons outside brackets and removes the brackets.
func splitSpec(spec string) ([]specPart, error) {
	var parts []specPart
	for rest := spec; ; {
		var p specPart
		if strings.HasPrefix(rest, "[") {
			end := strings.IndexByte(rest, ']')
			if end < 0 {
				return nil, errors.New("missing ]")
			}
			p = specPart{rest[1:end], true}
			rest = rest[end+1:]
			if rest != "" && rest[0] != ':' {
				return nil, fmt.Errorf("unexpected %q after ]", rest)
			}
		} else {
			i := strings.IndexByte(rest, ':')
			if i < 0 {
				i = len(rest)
			}
			p = specPart{rest[:i], false}
			rest = rest[i:]
		}
		parts = append(parts, p)
		if rest == "" {
			return parts, nil
		}
		rest = rest[1:] // the colon
	}
}

// listenAddr normalizes a bind address and port to IP:port.
func listenAddr(bind, port string) (string, error) {
	if _, err := parsePort(port, true); err != nil {
		return "", err
	}
	switch bind {
	case "", "*":
		bind = "0.0.0.0"
	case "localhost":
		bind = "127.0.0.1"
	}
	a, err := netip.ParseAddr(bind)
	if err != nil || a.Zone() != "" {
		return "", fmt.Errorf("bind address %q is not an IP address (or *, localhost)", bind)
	}
	return net.JoinHostPort(a.Unmap().String(), port), nil
}

// normalizeListen applies listenAddr to a host:port from a config file,
// leaving it alone when it does not parse (Validate reports that).
func normalizeListen(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if n, err := listenAddr(host, port); err == nil {
		return n
	}
	return addr
}

func (f *Forward) normalize() {
	if f.Type == "" {
		f.Type = ForwardLocal
	}
	switch f.Type {
	case ForwardLocal, ForwardDynamic:
		f.Local = normalizeListen(f.Local)
	case ForwardRemote:
		f.Remote = normalizeListen(f.Remote)
	}
}

// validate checks one forward; key is its path, e.g. "forward[2]".
func (f *Forward) validate(src *source, key string) error {
	listenKey, dialKey := key+".local", key+".remote"
	switch f.Type {
	case ForwardLocal:
	case ForwardRemote:
		listenKey, dialKey = dialKey, listenKey
	case ForwardDynamic:
		if f.Remote != "" {
			return src.errf(key+".remote", "a dynamic forward has no remote address: each SOCKS request names its own")
		}
	default:
		return src.errf(key+".type", "invalid type %q (want local, remote or dynamic)", f.Type)
	}
	listen := f.ListenAddr()
	if listen == "" {
		return src.err(listenKey, ErrRequired)
	}
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return src.errf(listenKey, "invalid address %q: want IP:port, e.g. \"127.0.0.1:8080\"", listen)
	}
	if _, err := listenAddr(host, port); err != nil {
		return src.errf(listenKey, "invalid address %q: %v", listen, err)
	}
	if f.Type == ForwardDynamic {
		return nil
	}
	if f.DialAddr() == "" {
		return src.err(dialKey, ErrRequired)
	}
	return checkDial(src, dialKey, f.DialAddr())
}

// listenPort is the numeric port of a listen address, 0 if unknown.
func listenPort(addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}
