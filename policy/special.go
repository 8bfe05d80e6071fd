package policy

import "net/netip"

// SpecialAddress is the Decision.Reason for a target refused because its
// address is special: unspecified, loopback, link-local (cloud metadata
// services live at 169.254.169.254), multicast, broadcast, or one of the
// gateway's own addresses (Target.Local).
const SpecialAddress = "special address"

// specialBlocks are the ranges a forward must never reach by accident.
// Connecting to an unspecified address reaches the local host on Linux,
// so those are refused outright; the others only an explicit rule grants.
var specialBlocks = []struct {
	prefix netip.Prefix
	never  bool // no rule can grant it
}{
	{netip.MustParsePrefix("0.0.0.0/8"), true},
	{netip.MustParsePrefix("::/128"), true},
	{netip.MustParsePrefix("127.0.0.0/8"), false},
	{netip.MustParsePrefix("::1/128"), false},
	{netip.MustParsePrefix("169.254.0.0/16"), false},
	{netip.MustParsePrefix("fe80::/10"), false},
	{netip.MustParsePrefix("224.0.0.0/4"), false},
	{netip.MustParsePrefix("ff00::/8"), false},
	{netip.MustParsePrefix("255.255.255.255/32"), false},
}

// specialBlock returns the special range a belongs to, if any, and
// whether nothing may grant it.
func specialBlock(a netip.Addr) (netip.Prefix, bool, bool) {
	for _, b := range specialBlocks {
		if b.prefix.Contains(a) {
			return b.prefix, b.never, true
		}
	}
	return netip.Prefix{}, false, false
}

// IsSpecial reports whether a is in one of the special ranges (see
// SpecialAddress); the gateway's own addresses are not known here.
func IsSpecial(a netip.Addr) bool {
	_, _, ok := specialBlock(a.WithZone("").Unmap())
	return ok
}

// names reports whether target t grants a special address explicitly: it
// is an address or CIDR entry that lies inside the special range itself
// (127.0.0.0/8, 169.254.169.254, fe80::/64), or, for one of the gateway's
// own addresses, that very address. "any", wide CIDRs that merely contain
// the address, and host names never do: a rule for 0.0.0.0/0 or
// *.corp.example was not written with the gateway's loopback in mind.
func (t *target) names(addr netip.Addr, block netip.Prefix, special, local bool) bool {
	if t.kind != kindPrefix || !t.prefix.Contains(addr) {
		return false
	}
	if special {
		return t.prefix.Bits() >= block.Bits() && block.Contains(t.prefix.Addr())
	}
	return local && t.prefix.Bits() == addr.BitLen()
}
