package tun

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Config is what a Configurator applies to a TUN interface.
type Config struct {
	// Addresses are the interface's own addresses with their prefix
	// length, for example 198.18.0.2/24 and 2001:db8::2/64. At least one.
	Addresses []netip.Prefix

	// MTU of the interface: MinMTU..MaxMTU, and at least MinMTUIPv6 when
	// any address or route is IPv6.
	MTU int

	// Routes are the destinations sent into the tunnel (split tunnel).
	// 0.0.0.0/0 and ::/0 make a full tunnel for that family; they are
	// installed as the halves 0.0.0.0/1 + 128.0.0.0/1 and ::/1 + 8000::/1,
	// which win over the default route by being more specific without
	// replacing it, so it is still there when the tunnel goes away.
	Routes []netip.Prefix

	// Bypass are addresses that must keep the path they had before the
	// tunnel came up: the gateway's own addresses, or the tunnel would
	// carry its own packets. For each one a route covers, a host route via
	// the pre-existing default gateway is added. A config with a /0 route
	// needs at least one.
	Bypass []netip.Addr

	// DNS servers for the tunnel. When the config is a full tunnel or has
	// no search domains they get every query; otherwise only queries under
	// SearchDomains (split DNS) where the OS can do that (systemd-resolved,
	// macOS, Windows NRPT; a plain /etc/resolv.conf cannot).
	DNS []netip.Addr

	// SearchDomains are DNS suffixes, for example corp.example. They need
	// DNS.
	SearchDomains []string
}

// Validate checks everything before any system state is touched: address
// and route families, prefix sanity, overlaps, MTU range and DNS names. Every
// error wraps ErrInvalidConfig and names the offending value.
func (c Config) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	if len(c.Addresses) == 0 {
		return bad("no interface address")
	}
	has4, has6 := false, false
	for i, p := range c.Addresses {
		if err := checkUnicast("address", p.Addr(), p.IsValid()); err != nil {
			return err
		}
		a := p.Addr()
		if p.Bits() == 0 {
			return bad("address %s: prefix length 0", p)
		}
		if a.Is4() {
			has4 = true
			// On a /30 or wider the all-zeros and all-ones host are
			// the network and broadcast addresses.
			if p.Bits() <= 30 && (a == p.Masked().Addr() || a == lastAddr(p)) {
				return bad("address %s is the network or broadcast address of its subnet", p)
			}
		} else {
			has6 = true
			if p.Bits() <= 126 && a == p.Masked().Addr() {
				return bad("address %s is the subnet-router anycast address of its prefix", p)
			}
		}
		for _, q := range c.Addresses[:i] {
			if q.Addr() == a {
				return bad("address %s listed twice", a)
			}
			if q.Overlaps(p) && q.Masked() != p.Masked() {
				return bad("addresses %s and %s overlap with different prefix lengths", q, p)
			}
		}
	}

	usesV6 := has6
	full4, full6 := false, false
	for i, r := range c.Routes {
		if !r.IsValid() {
			return bad("route: invalid prefix")
		}
		if r.Addr().Is4In6() {
			return bad("route %s: IPv4-mapped IPv6; write it as IPv4", r)
		}
		if r.Addr().Zone() != "" {
			return bad("route %s: zones are not allowed", r)
		}
		if r != r.Masked() {
			return bad("route %s has host bits set (did you mean %s?)", r, r.Masked())
		}
		a := r.Addr()
		if r.Bits() > 0 && (a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast()) {
			return bad("route %s: loopback, multicast and link-local destinations cannot go through the tunnel", r)
		}
		if a.Is4() && !has4 {
			return bad("route %s is IPv4 but the interface has no IPv4 address", r)
		}
		if a.Is6() && !has6 {
			return bad("route %s is IPv6 but the interface has no IPv6 address", r)
		}
		if a.Is6() {
			usesV6 = true
		}
		if r.Bits() == 0 {
			if a.Is4() {
				full4 = true
			} else {
				full6 = true
			}
		}
		for _, q := range c.Routes[:i] {
			if q == r {
				return bad("route %s listed twice", r)
			}
			if q.Overlaps(r) {
				return bad("routes %s and %s overlap (one contains the other)", q, r)
			}
		}
		for _, p := range c.Addresses {
			if p.Masked() == r {
				return bad("route %s is the subnet of address %s, which is routed to the interface already", r, p)
			}
		}
	}

	min := MinMTU
	if usesV6 {
		min = MinMTUIPv6
	}
	if c.MTU < min || c.MTU > MaxMTU {
		if usesV6 && c.MTU >= MinMTU && c.MTU < MinMTUIPv6 {
			return bad("mtu %d: IPv6 needs at least %d", c.MTU, MinMTUIPv6)
		}
		return bad("mtu %d outside %d..%d", c.MTU, min, MaxMTU)
	}

	for i, b := range c.Bypass {
		if err := checkUnicast("bypass address", b, b.IsValid()); err != nil {
			return err
		}
		for _, p := range c.Addresses {
			if p.Contains(b) {
				return bad("bypass address %s is inside the tunnel's own subnet %s", b, p)
			}
		}
		if slices.Contains(c.Bypass[:i], b) {
			return bad("bypass address %s listed twice", b)
		}
	}
	if (full4 || full6) && len(c.Bypass) == 0 {
		return bad("full tunnel (a /0 route) needs the gateway's address in Bypass, or the tunnel would route its own packets into itself")
	}

	for i, d := range c.DNS {
		if !d.IsValid() {
			return bad("dns server: invalid address")
		}
		if d.Is4In6() {
			return bad("dns server %s: IPv4-mapped IPv6; write it as IPv4", d)
		}
		if d.Zone() != "" {
			return bad("dns server %s: zones are not allowed", d)
		}
		if d.IsUnspecified() || d.IsMulticast() {
			return bad("dns server %s is not a unicast address", d)
		}
		if slices.Contains(c.DNS[:i], d) {
			return bad("dns server %s listed twice", d)
		}
	}
	if len(c.SearchDomains) > 0 && len(c.DNS) == 0 {
		return bad("search domains without dns servers")
	}
	for i, d := range c.SearchDomains {
		if err := checkDomain(d); err != nil {
			return err
		}
		for _, e := range c.SearchDomains[:i] {
			if normDomain(e) == normDomain(d) {
				return bad("search domain %s listed twice", d)
			}
		}
	}
	return nil
}

// checkUnicast checks an address assigned to or pinned for an interface.
func checkUnicast(what string, a netip.Addr, valid bool) error {
	switch {
	case !valid || !a.IsValid():
		return fmt.Errorf("%w: %s: invalid address", ErrInvalidConfig, what)
	case a.Is4In6():
		return fmt.Errorf("%w: %s %s: IPv4-mapped IPv6; write it as IPv4", ErrInvalidConfig, what, a)
	case a.Zone() != "":
		return fmt.Errorf("%w: %s %s: zones are not allowed", ErrInvalidConfig, what, a)
	case a.IsUnspecified(), a.IsLoopback(), a.IsMulticast(), a.IsLinkLocalUnicast(), a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return fmt.Errorf("%w: %s %s: must be a global or private unicast address", ErrInvalidConfig, what, a)
	}
	return nil
}

// checkDomain accepts DNS names of letters, digits and hyphens (RFC 1123
// labels), with an optional trailing dot. The strictness is deliberate: the
// names end up in resolv.conf lines and command arguments.
func checkDomain(d string) error {
	name := strings.TrimSuffix(d, ".")
	if name == "" || len(name) > 253 {
		return fmt.Errorf("%w: search domain %q: empty or longer than 253 bytes", ErrInvalidConfig, d)
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("%w: search domain %q: empty label or label longer than 63 bytes", ErrInvalidConfig, d)
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("%w: search domain %q: label %q starts or ends with '-'", ErrInvalidConfig, d, label)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return fmt.Errorf("%w: search domain %q: only letters, digits, '-' and '.' are allowed", ErrInvalidConfig, d)
			}
		}
	}
	return nil
}

// normDomain is the form a domain is written in to the OS: lower case, no
// trailing dot.
func normDomain(d string) string { return strings.ToLower(strings.TrimSuffix(d, ".")) }

// lastAddr is the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().AsSlice()
	bits := p.Bits()
	for i := range a {
		switch {
		case bits >= 8:
			bits -= 8
		case bits > 0:
			a[i] |= 0xff >> bits
			bits = 0
		default:
			a[i] = 0xff
		}
	}
	r, _ := netip.AddrFromSlice(a)
	return r
}

// Halves of the default routes; see Config.Routes.
var (
	v4Halves = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/1"), netip.MustParsePrefix("128.0.0.0/1")}
	v6Halves = []netip.Prefix{netip.MustParsePrefix("::/1"), netip.MustParsePrefix("8000::/1")}
)

// FullTunnel reports whether c routes everything of some family into the
// tunnel (a /0 route).
func (c Config) FullTunnel() bool {
	for _, r := range c.Routes {
		if r.Bits() == 0 {
			return true
		}
	}
	return false
}

// KernelRoutes are the routes actually installed for c.Routes: a /0 becomes
// its two halves, everything else is kept as is, in order.
func (c Config) KernelRoutes() []netip.Prefix {
	var out []netip.Prefix
	for _, r := range c.Routes {
		switch {
		case r.Bits() == 0 && r.Addr().Is4():
			out = append(out, v4Halves...)
		case r.Bits() == 0:
			out = append(out, v6Halves...)
		default:
			out = append(out, r)
		}
	}
	return out
}

// BypassRoutes are the Bypass addresses that a tunnel route covers, so those
// that need a host route via the pre-existing default gateway.
func (c Config) BypassRoutes() []netip.Addr {
	var out []netip.Addr
	for _, b := range c.Bypass {
		for _, r := range c.Routes {
			if r.Contains(b) {
				out = append(out, b)
				break
			}
		}
	}
	return out
}

// dnsDomains is the list of domains written to the OS.
func (c Config) dnsDomains() []string {
	out := make([]string, len(c.SearchDomains))
	for i, d := range c.SearchDomains {
		out[i] = normDomain(d)
	}
	return out
}

// dnsGetsAll reports whether the tunnel's DNS servers take every query, not
// just those under the search domains (see Config.DNS).
func (c Config) dnsGetsAll() bool {
	return len(c.DNS) > 0 && (c.FullTunnel() || len(c.SearchDomains) == 0)
}
