package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
)

// Config describes the client address pools. It is plain data (config/
// decodes it from server.toml); New validates it.
type Config struct {
	// IPv4 is the IPv4 client pool, e.g. 198.18.100.0/24. Zero means no
	// IPv4 addresses are handed out. The network and broadcast addresses
	// are never assigned.
	IPv4 netip.Prefix `toml:"ipv4"`

	// IPv6 is the IPv6 client pool, e.g. 2001:db8:100::/64. Zero means no
	// IPv6 addresses. The all-zeros address of the prefix (the
	// Subnet-Router anycast address, RFC 4291 2.6.1) is never assigned.
	IPv6 netip.Prefix `toml:"ipv6"`

	// Gateway lists the gateway's own tunnel addresses, at most one per
	// family, each inside its pool. They are never assigned to a client.
	// A pool without one here gets its first host (198.18.100.1,
	// 2001:db8:100::1).
	Gateway []netip.Addr `toml:"gateway"`

	// Static pins identities (by pki.Identity.Name) to addresses, at most
	// one per family. A static address is reserved for its identity even
	// while it is offline, and takes precedence over group ranges (it may
	// lie inside one).
	Static map[string][]netip.Addr `toml:"static"`

	// Groups gives groups their own ranges inside the pools. A member of
	// a listed group gets its address only from its group's range (the
	// first listed group it belongs to that has a range of the family),
	// so LAN firewalls can trust "addresses in this range are group X";
	// everyone else never gets an address from any group range.
	Groups []GroupRange `toml:"group"`

	// StateFile keeps leases across restarts so that identities get
	// their previous addresses back. Empty means leases are kept in
	// memory only.
	StateFile string `toml:"state_file"`
}

// GroupRange reserves parts of the pools for the members of one group.
type GroupRange struct {
	Group string `toml:"group"`
	// Prefixes are inside the pool of their family; a single address is
	// a /32 or /128. Ranges of different groups must not overlap.
	Prefixes []netip.Prefix `toml:"prefixes"`
}

// Limits on pool size: a pool must hold the gateway and at least one client
// besides the addresses that are never assigned.
const (
	minIPv4Bits = 30
	minIPv6Bits = 126
)

// Validate checks cfg without touching the file system. Errors wrap
// ErrInvalidConfig and name the field at fault.
func (cfg *Config) Validate() error {
	_, err := compile(cfg)
	return err
}

// family is the compiled pool of one address family.
type family struct {
	prefix      netip.Prefix
	first, last netip.Addr // assignable range
	gateway     netip.Addr
}

func (f *family) valid() bool { return f.prefix.IsValid() }

// usable reports whether a may ever be assigned to a client.
func (f *family) usable(a netip.Addr) bool {
	return f.valid() && a.Compare(f.first) >= 0 && a.Compare(f.last) <= 0 && a != f.gateway
}

// groupRange is a compiled GroupRange.
type groupRange struct {
	group    string
	prefixes [2][]netip.Prefix // by famIndex
}

// compiled is a validated Config.
type compiled struct {
	fams        [2]family // famIndex: 0 IPv4, 1 IPv6
	static      map[string][2]netip.Addr
	staticOwner map[netip.Addr]string
	groups      []groupRange
}

func famIndex(a netip.Addr) int {
	if a.Is4() {
		return 0
	}
	return 1
}

var famName = [2]string{"IPv4", "IPv6"}

func invalid(field, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrInvalidConfig, field, fmt.Sprintf(format, args...))
}

func compile(cfg *Config) (*compiled, error) {
	c := &compiled{
		static:      make(map[string][2]netip.Addr),
		staticOwner: make(map[netip.Addr]string),
	}
	if !cfg.IPv4.IsValid() && !cfg.IPv6.IsValid() {
		return nil, invalid("ipv4/ipv6", "no pool configured: set an IPv4 and/or an IPv6 prefix")
	}
	if p := cfg.IPv4; p.IsValid() {
		switch {
		case !p.Addr().Is4():
			return nil, invalid("ipv4", "%s is not an IPv4 prefix", p)
		case p.Masked() != p:
			return nil, invalid("ipv4", "%s has host bits set (did you mean %s?)", p, p.Masked())
		case p.Bits() > minIPv4Bits:
			return nil, invalid("ipv4", "pool %s is too small: want /%d or larger", p, minIPv4Bits)
		}
		c.fams[0] = family{prefix: p, first: p.Addr().Next(), last: lastAddr(p).Prev()}
	}
	if p := cfg.IPv6; p.IsValid() {
		switch {
		case !p.Addr().Is6() || p.Addr().Is4In6():
			return nil, invalid("ipv6", "%s is not an IPv6 prefix", p)
		case p.Addr().Zone() != "":
			return nil, invalid("ipv6", "%s has a zone", p)
		case p.Masked() != p:
			return nil, invalid("ipv6", "%s has host bits set (did you mean %s?)", p, p.Masked())
		case p.Bits() > minIPv6Bits:
			return nil, invalid("ipv6", "pool %s is too small: want /%d or larger", p, minIPv6Bits)
		}
		c.fams[1] = family{prefix: p, first: p.Addr().Next(), last: lastAddr(p)}
	}

	for i, a := range cfg.Gateway {
		field := "gateway[" + strconv.Itoa(i) + "]"
		f, err := c.inPool(field, a)
		if err != nil {
			return nil, err
		}
		if f.gateway.IsValid() {
			return nil, invalid(field, "second %s gateway address %s (already %s)", famName[famIndex(a)], a, f.gateway)
		}
		f.gateway = a
	}
	for i := range c.fams {
		if f := &c.fams[i]; f.valid() && !f.gateway.IsValid() {
			f.gateway = f.first
		}
	}

	// Sorted so that errors about duplicates are deterministic.
	names := make([]string, 0, len(cfg.Static))
	for name := range cfg.Static {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		field := "static[" + strconv.Quote(name) + "]"
		if name == "" {
			return nil, invalid(field, "empty identity name")
		}
		var pair [2]netip.Addr
		for _, a := range cfg.Static[name] {
			f, err := c.inPool(field, a)
			if err != nil {
				return nil, err
			}
			if a == f.gateway {
				return nil, invalid(field, "%s is the gateway's address", a)
			}
			fi := famIndex(a)
			if pair[fi].IsValid() {
				return nil, invalid(field, "two %s addresses (%s and %s)", famName[fi], pair[fi], a)
			}
			if other, dup := c.staticOwner[a]; dup {
				return nil, invalid(field, "%s is also the static address of %q", a, other)
			}
			pair[fi] = a
			c.staticOwner[a] = name
		}
		c.static[name] = pair
	}

	seen := make(map[string]bool)
	for i, g := range cfg.Groups {
		field := "group[" + strconv.Itoa(i) + "]"
		if g.Group == "" {
			return nil, invalid(field, "empty group name")
		}
		if seen[g.Group] {
			return nil, invalid(field, "group %q listed twice", g.Group)
		}
		seen[g.Group] = true
		if len(g.Prefixes) == 0 {
			return nil, invalid(field, "group %q has no prefixes", g.Group)
		}
		gr := groupRange{group: g.Group}
		for j, p := range g.Prefixes {
			pf := field + ".prefixes[" + strconv.Itoa(j) + "]"
			if !p.IsValid() {
				return nil, invalid(pf, "invalid prefix")
			}
			if p.Masked() != p {
				return nil, invalid(pf, "%s has host bits set (did you mean %s?)", p, p.Masked())
			}
			f, err := c.poolOf(pf, p.Addr())
			if err != nil {
				return nil, err
			}
			if p.Bits() < f.prefix.Bits() {
				return nil, invalid(pf, "%s is larger than the pool %s", p, f.prefix)
			}
			for _, other := range c.groups {
				for _, q := range other.prefixes[famIndex(p.Addr())] {
					if q.Overlaps(p) {
						return nil, invalid(pf, "%s overlaps %s of group %q", p, q, other.group)
					}
				}
			}
			for _, q := range gr.prefixes[famIndex(p.Addr())] {
				if q.Overlaps(p) {
					return nil, invalid(pf, "%s overlaps %s of the same group", p, q)
				}
			}
			fi := famIndex(p.Addr())
			gr.prefixes[fi] = append(gr.prefixes[fi], p)
		}
		c.groups = append(c.groups, gr)
	}
	return c, nil
}

// inPool returns the family whose pool holds a as an assignable address, or
// an error naming field.
func (c *compiled) inPool(field string, a netip.Addr) (*family, error) {
	f, err := c.poolOf(field, a)
	if err != nil {
		return nil, err
	}
	if a.Compare(f.first) < 0 || a.Compare(f.last) > 0 {
		return nil, invalid(field, "%s is the network or broadcast address of %s", a, f.prefix)
	}
	return f, nil
}

// poolOf returns the family whose pool contains a, or an error naming field.
func (c *compiled) poolOf(field string, a netip.Addr) (*family, error) {
	if !a.IsValid() {
		return nil, invalid(field, "invalid address")
	}
	if a.Zone() != "" || a.Is4In6() {
		return nil, invalid(field, "%s: zones and IPv4-mapped addresses are not allowed", a)
	}
	fi := famIndex(a)
	f := &c.fams[fi]
	if !f.valid() {
		return nil, invalid(field, "%s: no %s pool configured", a, famName[fi])
	}
	if !f.prefix.Contains(a) {
		return nil, invalid(field, "%s is outside the %s pool %s", a, famName[fi], f.prefix)
	}
	return f, nil
}

// lastAddr returns the highest address in p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As16()
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	for i := bits; i < 128; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a := netip.AddrFrom16(b)
	if p.Addr().Is4() {
		a = a.Unmap()
	}
	return a
}

// Sentinel errors callers branch on.
var (
	// ErrPoolExhausted is returned by Acquire when no address the
	// identity may have is free.
	ErrPoolExhausted = errors.New("address pool exhausted")

	// ErrInvalidConfig wraps every error from Config.Validate.
	ErrInvalidConfig = errors.New("invalid address pool config")

	// ErrCorruptState is wrapped by New when the state file cannot be
	// understood. New refuses to start rather than silently forget every
	// lease: move the file away to start afresh.
	ErrCorruptState = errors.New("corrupt lease state file")

	// ErrConflict is wrapped by Store.Commit when a decision was made
	// from a view of the store that another gateway has changed since.
	// Acquire decides again; it returns ErrConflict only when that kept
	// happening.
	ErrConflict = errors.New("lease store changed meanwhile")
)
