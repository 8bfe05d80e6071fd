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
// A Pool keeps its leases in a Store: by default in memory and a small
// state file, for one gateway (New); or shared by a fleet of gateways, so
// that an identity keeps its addresses whichever gateway it lands on
// (NewWithStore with package fleet's store). The choice of addresses is the
// same either way.
//
// A Pool's configuration is fixed; it is safe for concurrent use.
package ipam

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
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

// Pool assigns client addresses. Create it with New or NewWithStore.
type Pool struct {
	cfg    *compiled
	store  Store
	logger *slog.Logger

	// commitMu serialises what goes to the store: decisions (so that this
	// gateway's own decisions never race each other) and releases (so
	// that a release cannot overtake a new hold on the same identity).
	// Taken before mu, never after.
	commitMu sync.Mutex

	mu      sync.Mutex // guards the view below
	byIdent map[string]*entry
	owner   map[netip.Addr]*entry // every address held or remembered
	token   uint64                // last Lease.token handed out
}

// entry is one identity's addresses, held or remembered: the Pool's view
// of its Record plus this gateway's sessions.
type entry struct {
	identity string
	addrs    [2]netip.Addr       // famIndex; invalid when none
	holders  map[uint64]struct{} // this gateway's sessions, by Lease.token
	held     bool                // Record.Held: some gateway, maybe this one, holds it
	released uint64              // Record.Released
	version  uint64              // Record.Version
}

// offline reports whether no session holds e, here or on another gateway:
// only then may its addresses be changed or reclaimed.
func (e *entry) offline() bool { return len(e.holders) == 0 && !e.held }

// record returns e as a store record.
func (e *entry) record() Record {
	r := Record{Identity: e.identity, Held: e.held, Released: e.released, Version: e.version}
	r.setAddrs(e.addrs)
	return r
}

// maxCommitAttempts bounds how often Acquire decides again after a
// conflict. Each conflict means another gateway's decision went through
// first, so the fleet as a whole makes progress; the bound only keeps a
// store that conflicts forever (a bug) from hanging a session.
const maxCommitAttempts = 100

// New validates cfg and loads the state file, if any: the single-gateway
// store. A missing state file means no leases; an unreadable or corrupt one
// is an error wrapping ErrCorruptState or the I/O error, naming the file.
// New writes the state file back at once, so a state directory that is not
// writable fails here rather than at the first connection.
func New(cfg Config, logger *slog.Logger) (*Pool, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return NewWithStore(cfg, newFileStore(cfg.StateFile, logger), logger)
}

// NewWithStore validates cfg and opens st, which keeps the assignments
// instead of cfg.StateFile (ignored). Stored leases that cfg no longer
// allows (an address outside the pools, another identity's static address)
// are forgotten unless some gateway holds them.
func NewWithStore(cfg Config, st Store, logger *slog.Logger) (*Pool, error) {
	c, err := compile(&cfg)
	if err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	p := &Pool{
		cfg:     c,
		store:   st,
		logger:  logger,
		byIdent: make(map[string]*entry),
		owner:   make(map[netip.Addr]*entry),
	}
	if err := st.Open(p.apply); err != nil {
		return nil, err
	}
	if ch := p.unassignable(); len(ch.Victims) > 0 {
		// A conflict means another gateway changed those records
		// meanwhile; they are its business then.
		if err := st.Commit(ch); err != nil && !errors.Is(err, ErrConflict) {
			return nil, fmt.Errorf("ipam: forget unassignable leases: %w", err)
		}
	}
	return p, nil
}

// unassignable returns the change that forgets the stored addresses the
// configuration no longer allows to their offline identities: the pool may
// have been reconfigured since they were stored.
func (p *Pool) unassignable() Change {
	p.mu.Lock()
	defer p.mu.Unlock()
	var ch Change
	for _, e := range p.byIdent {
		if !e.offline() {
			continue
		}
		v, lost := e.record(), false
		addrs := v.addrs()
		for fi, a := range addrs {
			if !a.IsValid() {
				continue
			}
			if owner, static := p.cfg.staticOwner[a]; !p.cfg.fams[fi].usable(a) || (static && owner != e.identity) {
				p.logger.Info("forgetting stored lease: address no longer assignable to it",
					"identity", e.identity, "addr", a)
				addrs[fi] = netip.Addr{}
				ch.Drop = append(ch.Drop, a)
				lost = true
			}
		}
		if lost {
			v.setAddrs(addrs)
			ch.Victims = append(ch.Victims, v)
		}
	}
	return ch
}

// apply brings the view up to date with what the store reports.
func (p *Pool) apply(u Update) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if u.All {
		keep := make(map[string]bool, len(u.Records))
		for _, r := range u.Records {
			keep[r.Identity] = true
		}
		for id := range p.byIdent {
			if !keep[id] {
				p.set(Record{Identity: id})
			}
		}
	}
	for _, r := range u.Records {
		p.set(r)
	}
}

// set replaces an identity's entry with r. Callers hold p.mu.
func (p *Pool) set(r Record) {
	e := p.byIdent[r.Identity]
	if e == nil {
		if r.empty() && !r.Held {
			return
		}
		e = &entry{identity: r.Identity}
		p.byIdent[r.Identity] = e
	}
	for _, a := range e.addrs {
		if a.IsValid() && p.owner[a] == e {
			delete(p.owner, a)
		}
	}
	e.addrs = r.addrs()
	for fi, a := range e.addrs {
		if !a.IsValid() {
			continue
		}
		if o := p.owner[a]; o != nil && o != e {
			// The store moved a to e; o's own record, in the same
			// update, says so too.
			o.addrs[fi] = netip.Addr{}
		}
		p.owner[a] = e
	}
	e.held, e.released, e.version = r.Held, r.Released, r.Version
	// An entry this gateway holds stays, even if the store lost it:
	// its sessions use the addresses.
	if r.empty() && !r.Held && len(e.holders) == 0 {
		delete(p.byIdent, r.Identity)
	}
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
// address left that identity may have; then nothing is assigned. With a
// shared store it may also fail when the store cannot be reached.
func (p *Pool) Acquire(identity string, groups []string) (Lease, error) {
	if identity == "" {
		return Lease{}, fmt.Errorf("ipam: acquire: empty identity name")
	}
	if l, ok := p.holdAgain(identity); ok {
		return l, nil
	}
	for attempt := range maxCommitAttempts {
		p.commitMu.Lock()
		// Another session of identity may have got in while this one
		// waited for commitMu.
		if l, ok := p.holdAgain(identity); ok {
			p.commitMu.Unlock()
			return l, nil
		}
		// After a conflict, a new identity takes a free address a random
		// few above the lowest: gateways assigning new identities at
		// once all want the lowest free one, and otherwise only one of
		// them wins each round.
		skip := 0
		if attempt > 0 {
			skip = rand.IntN(min(4<<attempt, 256))
		}
		ch, reclaimed, err := p.decide(identity, groups, skip)
		if err != nil {
			p.commitMu.Unlock()
			return Lease{}, err
		}
		if ch.KeepsAddresses() {
			// Nothing changes hands, so no other decision of this Pool
			// can collide with it: let the next one be made while the
			// store commits (a shared store batches such commits; after
			// a gateway fails, every user it had arrives at once).
			p.commitMu.Unlock()
			err = p.store.Commit(ch)
		} else {
			err = p.store.Commit(ch)
			p.commitMu.Unlock()
		}
		if errors.Is(err, ErrConflict) {
			continue
		}
		if err != nil {
			return Lease{}, fmt.Errorf("ipam: acquire for %q: %w", identity, err)
		}
		for _, r := range reclaimed {
			p.logger.Info("reclaimed address of offline identity",
				"addr", r.addr, "from", r.from, "to", identity)
		}
		return p.holdNew(identity)
	}
	return Lease{}, fmt.Errorf("ipam: acquire for %q: %w %d times in a row", identity, ErrConflict, maxCommitAttempts)
}

// holdAgain adds a hold on identity if this gateway already holds it: a
// reconnect, or one certificate on two devices, shares the lease without
// asking the store.
func (p *Pool) holdAgain(identity string) (Lease, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.byIdent[identity]
	if e == nil || len(e.holders) == 0 {
		return Lease{}, false
	}
	return p.hold(e), true
}

// holdNew adds this gateway's first hold on identity after the store took
// it.
func (p *Pool) holdNew(identity string) (Lease, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.byIdent[identity]
	if e == nil {
		return Lease{}, fmt.Errorf("ipam: acquire for %q: the store committed but did not report the lease", identity)
	}
	return p.hold(e), nil
}

// reclaim is an address taken from an offline identity, for the log.
type reclaim struct {
	addr netip.Addr
	from string
}

// decide chooses identity's addresses from the view and returns the change
// that assigns them; a new address is the skip-th free one above the
// lowest, where there are that many.
func (p *Pool) decide(identity string, groups []string, skip int) (Change, []reclaim, error) {
	p.mu.Lock()
	defer p.mu.Unlock()

	e := p.byIdent[identity]
	if e != nil && e.held {
		// Another gateway holds it: its addresses are fixed while
		// any session uses them.
		return Change{Record: e.record()}, nil, nil
	}

	var chosen [2]netip.Addr
	for fi := range p.cfg.fams {
		if !p.cfg.fams[fi].valid() {
			continue
		}
		a, ok := p.choose(fi, identity, groups, e, skip)
		if !ok {
			return Change{}, nil, fmt.Errorf("ipam: %w: no %s address free for %q", ErrPoolExhausted, famName[fi], identity)
		}
		chosen[fi] = a
	}

	ch := Change{Record: Record{Identity: identity}}
	ch.Record.setAddrs(chosen)
	var old [2]netip.Addr
	if e != nil {
		old = e.addrs
		ch.Record.Version = e.version
	}
	var reclaimed []reclaim
	victims := make(map[*entry]int) // index in ch.Victims
	for fi, a := range chosen {
		if old[fi] == a {
			continue
		}
		if old[fi].IsValid() {
			ch.Drop = append(ch.Drop, old[fi])
		}
		if !a.IsValid() {
			continue
		}
		prev := p.owner[a]
		if prev == nil {
			ch.Free = append(ch.Free, a)
			continue
		}
		i, ok := victims[prev]
		if !ok {
			i = len(ch.Victims)
			victims[prev] = i
			ch.Victims = append(ch.Victims, prev.record())
		}
		v := &ch.Victims[i]
		addrs := v.addrs()
		addrs[fi] = netip.Addr{}
		v.setAddrs(addrs)
		reclaimed = append(reclaimed, reclaim{addr: a, from: prev.identity})
	}
	return ch, reclaimed, nil
}

// hold registers a new holder of e and returns its lease. Callers hold p.mu.
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
// reclaimed for others under pressure, once no other gateway holds it
// either. Releasing a lease twice, or the zero Lease, does nothing.
func (p *Pool) Release(l Lease) {
	if l.token == 0 || p.unhold(l, false) {
		return
	}
	// The last hold: the store must hear of it, in order with the
	// decisions that may take a new first hold.
	p.commitMu.Lock()
	defer p.commitMu.Unlock()
	if p.unhold(l, true) {
		return
	}
	if err := p.store.Release(l.Identity); err != nil {
		p.logger.Warn("lease release not stored; the addresses stay held", "identity", l.Identity, "err", err)
	}
}

// unhold drops l's hold unless it is the identity's last one and !last.
// It reports whether it is done: l was not held, or it was not the last
// hold. Otherwise (last) it has dropped the last hold.
func (p *Pool) unhold(l Lease, last bool) (done bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	e := p.byIdent[l.Identity]
	if e == nil {
		return true
	}
	if _, ok := e.holders[l.token]; !ok {
		return true
	}
	if len(e.holders) == 1 && !last {
		return false
	}
	delete(e.holders, l.token)
	return len(e.holders) > 0
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
func (p *Pool) choose(fi int, identity string, groups []string, e *entry, skip int) (netip.Addr, bool) {
	if s := p.cfg.static[identity][fi]; s.IsValid() {
		// A static address is its identity's, but a session that still
		// uses it under a stored lease from an older configuration is
		// not cut off.
		if o := p.owner[s]; o != nil && o != e && !o.offline() {
			return netip.Addr{}, false
		}
		return s, true
	}
	ranges := p.groupRanges(fi, groups)
	if e != nil && p.eligible(fi, e.addrs[fi], identity, ranges) {
		return e.addrs[fi], true
	}
	if a, ok := p.lowestFree(fi, identity, ranges, skip); ok {
		return a, true
	}
	// Everything is held or remembered: reclaim the address released
	// longest ago by an identity that is offline.
	var victim *entry
	for _, o := range p.byIdent {
		if !o.offline() || o == e || !p.eligible(fi, o.addrs[fi], identity, ranges) {
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
// and that nobody holds or remembers, or the skip-th free one above it
// (the highest found, when there are fewer). The scan skips taken
// addresses one by one and foreign group ranges as a whole, so it costs
// O(taken + ranges + skip) steps even in a /64.
func (p *Pool) lowestFree(fi int, identity string, ranges []netip.Prefix, skip int) (netip.Addr, bool) {
	var found netip.Addr
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
				found = a
				if skip == 0 {
					return a, true
				}
				skip--
			}
			a = a.Next()
		}
	}
	return found, found.IsValid()
}
