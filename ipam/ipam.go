// Package ipam hands out the gateway's VPN client addresses: one IPv4 and/or
// one IPv6 address per identity, from configured pools, with static
// assignments per identity and address ranges per group.
//
// An identity gets, in order of preference: its static address; the address
// it had last time (leases are sticky and survive gateway restarts through a
// small state file); the lowest address nobody has held; and, when every
// address has been held, the one released longest ago by an identity that is
// offline now. Leases of offline identities are thus reclaimed only under
// pressure, so a returning user usually keeps the same address.
//
// Sessions share leases: when an identity that already holds a lease asks
// again (a reconnect while the old session is still closing, or one
// certificate on two devices), it gets the same addresses and the lease is
// reference-counted; the addresses become free for others only after the
// last holder released it. Release is idempotent per Lease, so a session may
// release in more than one shutdown path.
//
// Typical use by the tunnel, once per VPN session:
//
//	lease, err := pool.Acquire(id.Name(), id.Groups)
//	if err != nil { ... refuse the VPN request ... }
//	defer pool.Release(lease)
//	peer, err := router.AddPeer(id, lease.Addrs())
//
// A Pool's configuration is fixed; it is safe for concurrent use.
package ipam

import (
	"cmp"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
)

// Lease is the addresses one session of an identity uses. The prefixes
// carry the pool's length (198.18.100.7/24) because that is what the client
// configures on its TUN device. A family without a pool has an invalid
// (zero) prefix.
type Lease struct {
	Identity string
	IPv4     netip.Prefix
	IPv6     netip.Prefix

	token uint64 // identifies this holder for Release
}

// Addrs returns the lease's addresses, IPv4 first.
func (l Lease) Addrs() []netip.Addr {
	var out []netip.Addr
	for _, p := range [2]netip.Prefix{l.IPv4, l.IPv6} {
		if p.IsValid() {
			out = append(out, p.Addr())
		}
	}
	return out
}

// Assignment is one identity's entry in the pool, for status output and
// tests.
type Assignment struct {
	Identity   string
	IPv4, IPv6 netip.Addr
	// Sessions is how many leases are held; 0 means the identity is
	// offline and the addresses are kept for it until reclaimed.
	Sessions int
}

// Pool assigns client addresses. Create it with New.
type Pool struct {
	cfg    *compiled
	state  string // state file path; "" for none
	logger *slog.Logger

	saveMu sync.Mutex // serialises state file writes; taken after mu, never before
	saved  uint64     // generation of the snapshot last written; guarded by saveMu

	mu      sync.Mutex // guards the fields below
	gen     uint64     // bumped per snapshot
	byIdent map[string]*entry
	owner   map[netip.Addr]*entry // every address held or remembered
	seq     uint64                // release order, persisted
	token   uint64                // last Lease.token handed out
}

// entry is one identity's addresses, held or remembered.
type entry struct {
	identity string
	addrs    [2]netip.Addr // famIndex; invalid when none
	holders  map[uint64]struct{}
	released uint64 // Pool.seq when the last holder released it
}

// New validates cfg and loads the state file, if any. A missing state file
// means no leases; an unreadable or corrupt one is an error wrapping
// ErrCorruptState or the I/O error, naming the file. New writes the state
// file back at once, so a state directory that is not writable fails here
// rather than at the first connection.
func New(cfg Config, logger *slog.Logger) (*Pool, error) {
	c, err := compile(&cfg)
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &Pool{
		cfg:     c,
		state:   cfg.StateFile,
		logger:  logger,
		byIdent: make(map[string]*entry),
		owner:   make(map[netip.Addr]*entry),
	}
	if p.state == "" {
		return p, nil
	}
	st, err := loadState(p.state)
	if err != nil {
		return nil, err
	}
	p.seq = st.Seq
	for _, l := range st.Leases {
		e := &entry{identity: l.Identity, released: l.Released}
		for _, a := range []netip.Addr{l.IPv4, l.IPv6} {
			if !a.IsValid() {
				continue
			}
			// The pool may have been reconfigured since the file was
			// written; such leases are simply forgotten.
			f := &c.fams[famIndex(a)]
			if owner, static := c.staticOwner[a]; !f.usable(a) || (static && owner != l.Identity) {
				logger.Info("forgetting stored lease: address no longer assignable to it",
					"identity", l.Identity, "addr", a)
				continue
			}
			e.addrs[famIndex(a)] = a
			p.owner[a] = e
		}
		if e.addrs[0].IsValid() || e.addrs[1].IsValid() {
			p.byIdent[e.identity] = e
		}
	}
	if err := p.save(p.snapshot()); err != nil {
		return nil, err
	}
	return p, nil
}

// Gateway returns the gateway's own tunnel addresses with the pools' prefix
// lengths, IPv4 first: what the gateway configures on its TUN device.
func (p *Pool) Gateway() []netip.Prefix {
	var out []netip.Prefix
	for _, f := range p.cfg.fams {
		if f.valid() {
			out = append(out, netip.PrefixFrom(f.gateway, f.prefix.Bits()))
		}
	}
	return out
}

// Contains reports whether a lies in one of the pools: the gateway's own
// tunnel address or a client's.
func (p *Pool) Contains(a netip.Addr) bool {
	a = a.WithZone("").Unmap()
	for _, f := range p.cfg.fams {
		if f.valid() && f.prefix.Contains(a) {
			return true
		}
	}
	return false
}

// Acquire returns a lease for identity, a member of groups. It fails with
// an error wrapping ErrPoolExhausted when a configured family has no
// address left that identity may have; then nothing is assigned.
func (p *Pool) Acquire(identity string, groups []string) (Lease, error) {
	if identity == "" {
		return Lease{}, fmt.Errorf("ipam: acquire: empty identity name")
	}
	l, snap, err := p.acquire(identity, groups)
	if snap != nil {
		p.write(snap)
	}
	return l, err
}

// acquire is Acquire under p.mu. It returns a state snapshot to write when
// the assignment changed, so that the file I/O happens outside the lock.
func (p *Pool) acquire(identity string, groups []string) (Lease, *snapshot, error) {
	p.mu.Lock()
	defer p.mu.Unlock()

	e := p.byIdent[identity]
	if e != nil && len(e.holders) > 0 {
		return p.hold(e), nil, nil
	}

	var chosen [2]netip.Addr
	for fi := range p.cfg.fams {
		if !p.cfg.fams[fi].valid() {
			continue
		}
		a, ok := p.choose(fi, identity, groups, e)
		if !ok {
			return Lease{}, nil, fmt.Errorf("ipam: %w: no %s address free for %q", ErrPoolExhausted, famName[fi], identity)
		}
		chosen[fi] = a
	}

	if e == nil {
		e = &entry{identity: identity}
		p.byIdent[identity] = e
	}
	changed := false
	for fi, a := range chosen {
		if e.addrs[fi] == a {
			continue
		}
		changed = true
		if old := e.addrs[fi]; old.IsValid() {
			delete(p.owner, old)
		}
		if prev := p.owner[a]; prev != nil {
			// Reclaiming an offline identity's address.
			prev.addrs[fi] = netip.Addr{}
			if !prev.addrs[0].IsValid() && !prev.addrs[1].IsValid() {
				delete(p.byIdent, prev.identity)
			}
			p.logger.Info("reclaimed address of offline identity",
				"addr", a, "from", prev.identity, "to", identity)
		}
		e.addrs[fi] = a
		p.owner[a] = e
	}
	l := p.hold(e)
	if !changed {
		return l, nil, nil
	}
	return l, p.snapshot(), nil
}

// hold registers a new holder of e and returns its lease.
func (p *Pool) hold(e *entry) Lease {
	p.token++
	if e.holders == nil {
		e.holders = make(map[uint64]struct{})
	}
	e.holders[p.token] = struct{}{}
	l := Lease{Identity: e.identity, token: p.token}
	if a := e.addrs[0]; a.IsValid() {
		l.IPv4 = netip.PrefixFrom(a, p.cfg.fams[0].prefix.Bits())
	}
	if a := e.addrs[1]; a.IsValid() {
		l.IPv6 = netip.PrefixFrom(a, p.cfg.fams[1].prefix.Bits())
	}
	return l
}

// Release gives back one hold on l's addresses. When the identity's last
// session released, the addresses stay remembered for it (sticky) but may be
// reclaimed for others under pressure. Releasing a lease twice, or the zero
// Lease, does nothing.
//
// Release does not write the state file: the release order it records only
// ranks offline identities for reclaiming, and is saved with the next
// assignment change. That keeps a mass disconnect from queueing a file sync
// per session.
func (p *Pool) Release(l Lease) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.byIdent[l.Identity]
	if e == nil {
		return
	}
	if _, ok := e.holders[l.token]; !ok {
		return
	}
	delete(e.holders, l.token)
	if len(e.holders) == 0 {
		p.seq++
		e.released = p.seq
	}
}

// Assignments returns every identity's addresses, sorted by identity.
func (p *Pool) Assignments() []Assignment {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Assignment, 0, len(p.byIdent))
	for _, e := range p.byIdent {
		out = append(out, Assignment{Identity: e.identity, IPv4: e.addrs[0], IPv6: e.addrs[1], Sessions: len(e.holders)})
	}
	slices.SortFunc(out, func(a, b Assignment) int { return cmp.Compare(a.Identity, b.Identity) })
	return out
}

// choose picks the address of family fi for identity (whose current entry,
// if any, is e). It does not modify anything.
func (p *Pool) choose(fi int, identity string, groups []string, e *entry) (netip.Addr, bool) {
	if s := p.cfg.static[identity][fi]; s.IsValid() {
		return s, true
	}
	ranges := p.groupRanges(fi, groups)
	if e != nil && p.eligible(fi, e.addrs[fi], identity, ranges) {
		return e.addrs[fi], true
	}
	if a, ok := p.lowestFree(fi, identity, ranges); ok {
		return a, true
	}
	// Everything is held or remembered: reclaim the address released
	// longest ago by an identity that is offline.
	var victim *entry
	for _, o := range p.byIdent {
		if len(o.holders) > 0 || o == e || !p.eligible(fi, o.addrs[fi], identity, ranges) {
			continue
		}
		if victim == nil || o.released < victim.released {
			victim = o
		}
	}
	if victim == nil {
		return netip.Addr{}, false
	}
	return victim.addrs[fi], true
}

// groupRanges returns the ranges of family fi that bind a member of groups:
// those of the first configured group it belongs to that has any, or nil.
func (p *Pool) groupRanges(fi int, groups []string) []netip.Prefix {
	for _, g := range p.cfg.groups {
		if len(g.prefixes[fi]) > 0 && slices.Contains(groups, g.group) {
			return g.prefixes[fi]
		}
	}
	return nil
}

// eligible reports whether identity, bound to ranges (nil: the general
// pool), may use a, ignoring whether someone else holds it.
func (p *Pool) eligible(fi int, a netip.Addr, identity string, ranges []netip.Prefix) bool {
	if !a.IsValid() || !p.cfg.fams[fi].usable(a) {
		return false
	}
	if owner, static := p.cfg.staticOwner[a]; static && owner != identity {
		return false
	}
	if ranges != nil {
		return slices.ContainsFunc(ranges, func(r netip.Prefix) bool { return r.Contains(a) })
	}
	return p.inGroupRange(fi, a) == nil
}

// inGroupRange returns the group range of family fi holding a, or nil.
func (p *Pool) inGroupRange(fi int, a netip.Addr) *netip.Prefix {
	for i := range p.cfg.groups {
		for j, r := range p.cfg.groups[i].prefixes[fi] {
			if r.Contains(a) {
				return &p.cfg.groups[i].prefixes[fi][j]
			}
		}
	}
	return nil
}

// lowestFree returns the lowest address of family fi that identity may use
// and that nobody holds or remembers. The scan skips taken addresses one by
// one and foreign group ranges as a whole, so it costs O(taken + ranges)
// steps even in a /64.
func (p *Pool) lowestFree(fi int, identity string, ranges []netip.Prefix) (netip.Addr, bool) {
	f := &p.cfg.fams[fi]
	spans := ranges
	if spans == nil {
		spans = []netip.Prefix{f.prefix}
	}
	for _, r := range spans {
		a, end := r.Addr(), lastAddr(r)
		if a.Compare(f.first) < 0 {
			a = f.first
		}
		if end.Compare(f.last) > 0 {
			end = f.last
		}
		for a.IsValid() && a.Compare(end) <= 0 {
			if ranges == nil {
				if g := p.inGroupRange(fi, a); g != nil {
					a = lastAddr(*g).Next()
					continue
				}
			}
			if _, taken := p.owner[a]; !taken && p.eligible(fi, a, identity, ranges) {
				return a, true
			}
			a = a.Next()
		}
	}
	return netip.Addr{}, false
}
