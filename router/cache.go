package router

import (
	"encoding/binary"
	"math/bits"
	"net/netip"

	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/policy"
)

// flowCache remembers policy decisions of one peer per (proto, dst, port).
// It is direct-mapped: a colliding flow evicts the previous one, which costs
// one policy evaluation. Collisions can only be provoked by the peer itself
// (the cache is per peer), so they slow down nobody else.
//
// Entries carry the policy generation they were computed under; SetPolicy
// bumps the generation, which invalidates every entry at once without
// touching any cache.
//
// Not safe for concurrent use: only the goroutine calling FromPeer for the
// peer touches it.
type flowCache struct {
	entries []cacheEntry // len is a power of two
	shift   uint         // 64 - log2(len)
}

type cacheEntry struct {
	gen   uint64 // policy generation; 0 for an empty slot
	addr  netip.Addr
	port  uint16
	class uint8
	dec   policy.Decision
}

// newFlowCache returns a cache of at least size entries (rounded up to a
// power of two), or an empty one that never hits when size is 0.
func newFlowCache(size int) flowCache {
	if size <= 0 {
		return flowCache{}
	}
	n := 1
	for n < size {
		n <<= 1
	}
	return flowCache{entries: make([]cacheEntry, n), shift: uint(64 - bits.TrailingZeros(uint(n)))}
}

// slot returns the entry for the flow, which matches it only if lookup says
// so.
func (c *flowCache) slot(addr netip.Addr, class uint8, port uint16) *cacheEntry {
	a := addr.As16()
	h := binary.LittleEndian.Uint64(a[:8]) ^ bits.RotateLeft64(binary.LittleEndian.Uint64(a[8:]), 29) ^
		uint64(port)<<40 ^ uint64(class)<<56
	// Fibonacci hashing: the high bits of the product mix every input bit.
	return &c.entries[(h*0x9e3779b97f4a7c15)>>c.shift]
}

// decide returns pol's decision for the flow, from the cache when an entry
// of generation gen matches.
func (c *flowCache) decide(pol Policy, gen uint64, id *pki.Identity, addr netip.Addr, class uint8, port uint16) policy.Decision {
	if len(c.entries) == 0 {
		return pol.Dial(id, policy.Target{Addr: addr, Port: port, Proto: className[class]})
	}
	e := c.slot(addr, class, port)
	if e.gen == gen && e.addr == addr && e.port == port && e.class == class {
		return e.dec
	}
	d := pol.Dial(id, policy.Target{Addr: addr, Port: port, Proto: className[class]})
	*e = cacheEntry{gen: gen, addr: addr, port: port, class: class, dec: d}
	return d
}
