package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ConfigError says which part of a Config is invalid: the rule (or the
// admission list), the field and the entry. The config package turns it into
// a file:line:key message.
type ConfigError struct {
	Rule  int    // index into Config.Rules; -1 for Config.Admit, -2 for Config.CAs (Entry is the CA's index)
	Name  string // the rule's name, if it has one
	Field string // TOML key of the field: "targets", "binds", "identities", ...
	Entry int    // index of the bad entry in Field; -1 when the field as a whole is wrong
	Err   error
}

// Error renders e as `policy: rule "eng" (#2): targets[1]: invalid CIDR "10.0.0/8"`.
func (e *ConfigError) Error() string {
	where := "admit"
	if e.Rule >= 0 {
		where = ruleLabel(e.Rule, e.Name)
	}
	field := e.Field
	if e.Rule == -2 {
		where, field = "ca["+strconv.Itoa(e.Entry)+"]", e.Field
	} else if e.Entry >= 0 {
		field += "[" + strconv.Itoa(e.Entry) + "]"
	}
	return fmt.Sprintf("policy: %s: %s: %v", where, field, e.Err)
}

// Unwrap returns the underlying problem.
func (e *ConfigError) Unwrap() error { return e.Err }

// ErrInvalid is wrapped by every error New returns about a bad entry.
var ErrInvalid = errors.New("invalid policy")

// invalidError carries a message without repeating "invalid policy" in it,
// while still matching errors.Is(err, ErrInvalid).
type invalidError struct{ msg string }

func (e *invalidError) Error() string        { return e.msg }
func (e *invalidError) Is(target error) bool { return target == ErrInvalid }

func errorf(format string, args ...any) error {
	return &invalidError{fmt.Sprintf(format, args...)}
}

type targetKind uint8

const (
	kindAny    targetKind = iota // every address and host name
	kindPrefix                   // Target.Addr inside prefix
	kindHost                     // Target.Host equal to host
	kindSuffix                   // Target.Host ends in host (".corp.example")
)

// target is one compiled targets or binds entry.
type target struct {
	kind   targetKind
	prefix netip.Prefix
	host   string      // lower case; for kindSuffix it starts with "."
	ports  []portRange // nil means every port
	text   string      // canonical form, for Grants
}

type portRange struct{ lo, hi uint16 }

func (t *target) match(host string, addr netip.Addr, port uint16) bool {
	switch t.kind {
	case kindPrefix:
		if !addr.IsValid() || !t.prefix.Contains(addr) {
			return false
		}
	case kindHost:
		if !strings.EqualFold(host, t.host) {
			return false
		}
	case kindSuffix:
		// len > len(suffix) keeps "*.corp.example" from matching
		// "corp.example" itself.
		if len(host) <= len(t.host) || !strings.EqualFold(host[len(host)-len(t.host):], t.host) {
			return false
		}
	}
	if t.ports == nil {
		return true
	}
	for _, r := range t.ports {
		if port >= r.lo && port <= r.hi {
			return true
		}
	}
	return false
}

// parseTarget parses one targets or binds entry:
//
//	any | * | any:PORTS
//	ADDR | ADDR:PORTS | [ADDR] | [ADDR]:PORTS           (IPv6 with a port needs brackets)
//	ADDR/BITS | ADDR/BITS:PORTS | [ADDR]/BITS:PORTS
//	HOST | HOST:PORTS | *.DOMAIN | *.DOMAIN:PORTS
//
// PORTS is "*" or a comma list of ports and lo-hi ranges.
func parseTarget(s string) (target, error) {
	var t target
	body, ports := s, ""
	switch {
	case s == "":
		return t, errorf("empty entry")
	case strings.TrimSpace(s) != s:
		return t, errorf("invalid entry %q: surrounding spaces", s)
	case strings.HasPrefix(s, "["):
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return t, errorf("invalid address %q: missing ]", s)
		}
		body = s[1:end]
		rest := s[end+1:]
		if strings.HasPrefix(rest, "/") {
			bits, p, hasPorts := strings.Cut(rest[1:], ":")
			body += "/" + bits
			if hasPorts {
				ports = p
				if p == "" {
					return t, errorf("invalid entry %q: empty port list", s)
				}
			}
		} else if rest != "" {
			if !strings.HasPrefix(rest, ":") || rest == ":" {
				return t, errorf("invalid entry %q: want [ADDR]:PORTS", s)
			}
			ports = rest[1:]
		}
		if strings.Contains(body, "/") {
			return prefixTarget(t, s, body, ports)
		}
		a, err := netip.ParseAddr(body)
		if err != nil || !a.Is6() || a.Zone() != "" {
			return t, errorf("invalid IPv6 address %q", s)
		}
		return addrTarget(t, s, a, ports)
	case strings.Contains(s, "/"):
		addr, rest, _ := strings.Cut(s, "/")
		bits, p, hasPorts := strings.Cut(rest, ":")
		if hasPorts && p == "" {
			return t, errorf("invalid entry %q: empty port list", s)
		}
		return prefixTarget(t, s, addr+"/"+bits, p)
	}
	if a, err := netip.ParseAddr(s); err == nil {
		// A bare address, including unbracketed IPv6 without a port.
		return addrTarget(t, s, a, "")
	}
	switch strings.Count(s, ":") {
	case 0:
	case 1:
		body, ports, _ = strings.Cut(s, ":")
		if ports == "" {
			return t, errorf("invalid entry %q: empty port list", s)
		}
	default:
		return t, errorf("invalid entry %q: put an IPv6 address in brackets, e.g. [2001:db8::1]:443", s)
	}
	if body == "any" || body == "*" {
		t.kind = kindAny
		return withPorts(t, s, "any", ports)
	}
	if a, err := netip.ParseAddr(body); err == nil {
		return addrTarget(t, s, a, ports)
	}
	if looksNumeric(body) {
		return t, errorf("invalid IP address %q", body)
	}
	name, wildcard := strings.CutPrefix(body, "*.")
	if !validHostname(name) {
		return t, errorf("invalid host name %q", body)
	}
	name = strings.ToLower(name)
	if wildcard {
		t.kind, t.host = kindSuffix, "."+name
		return withPorts(t, s, "*."+name, ports)
	}
	t.kind, t.host = kindHost, name
	return withPorts(t, s, name, ports)
}

func addrTarget(t target, s string, a netip.Addr, ports string) (target, error) {
	if a.Zone() != "" {
		return t, errorf("invalid address %q: zones are not supported", s)
	}
	a = a.Unmap()
	t.kind, t.prefix = kindPrefix, netip.PrefixFrom(a, a.BitLen())
	text := a.String()
	if a.Is6() && ports != "" {
		text = "[" + text + "]"
	}
	return withPorts(t, s, text, ports)
}

func prefixTarget(t target, s, cidr, ports string) (target, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil || p.Addr().Zone() != "" {
		return t, errorf("invalid CIDR %q", cidr)
	}
	if p.Masked() != p {
		return t, errorf("invalid CIDR %q: host bits set (did you mean %s?)", cidr, p.Masked())
	}
	if p.Addr().Is4In6() {
		// ::ffff:10.0.0.0/104 and 10.0.0.0/8 mean the same thing to a
		// tunnel that unmaps addresses before matching. (A masked prefix
		// shorter than /96 is never IPv4-mapped.)
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	t.kind, t.prefix = kindPrefix, p
	text := p.String()
	if p.Addr().Is6() && ports != "" {
		text = "[" + p.Addr().String() + "]/" + strconv.Itoa(p.Bits())
	}
	return withPorts(t, s, text, ports)
}

func withPorts(t target, s, text, ports string) (target, error) {
	t.text = text
	if ports == "" || ports == "*" {
		return t, nil
	}
	for part := range strings.SplitSeq(ports, ",") {
		loS, hiS, isRange := strings.Cut(part, "-")
		lo, err := parsePort(loS)
		if err != nil {
			return t, errorf("invalid port %q in %q", part, s)
		}
		hi := lo
		if isRange {
			if hi, err = parsePort(hiS); err != nil || hi < lo {
				return t, errorf("invalid port range %q in %q", part, s)
			}
		}
		t.ports = append(t.ports, portRange{lo, hi})
	}
	t.text = text + ":" + ports
	return t, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 || (len(s) > 1 && s[0] == '0') {
		return 0, errorf("invalid port %q", s)
	}
	return uint16(n), nil
}

// looksNumeric catches "10.0.0" and "10.0.0.256": not an address, and not a
// host name anyone means either.
func looksNumeric(s string) bool {
	for _, c := range s {
		if (c < '0' || c > '9') && c != '.' {
			return false
		}
	}
	return true
}

// validHostname accepts LDH labels (and "_", which service names use) of
// 1..63 bytes, 253 bytes in all.
func validHostname(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
