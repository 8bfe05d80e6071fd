package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/twoway/twoway/ipam"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Addresses returns the fleet's address store, for ipam.NewWithStore: one
// allocator for every gateway of the fleet. Call it after Start, for one
// Pool.
func (f *Fleet) Addresses() ipam.Store { return f.addrs }

// addressStore is the fleet's ipam.Store. Each gateway's Pool decides from
// its own view of the records, which an etcd watch keeps in sync, and
// commits each decision in one transaction that compares the versions it
// decided from; when another gateway got in first, the transaction changes
// nothing and the Pool decides again from the fresher view. No lock spans
// gateways, so a gateway that dies mid-decision blocks nobody.
//
// The keys, under Config.Prefix + "ipam/", identities path-escaped:
//
//	ident/<identity>           {"ipv4":"198.18.100.7","ipv6":"2001:db8:100::7"}
//	addr/<address>             <identity>
//	hold/<identity>/<gateway>  <gateway>, attached to the gateway's lease
//
// ident/ is the record; its mod revision is the record's Version, which
// every transaction about the identity compares, and its Released, since
// each new hold and each release rewrites it. addr/ keys are created only
// where absent (or taken from an offline identity whose Version is
// unchanged), so two gateways can never hand out one address, even if one
// of them decided from a stale view. hold/ keys make holds fleet-wide: an
// identity is offline, and its addresses reclaimable, only while it has
// none, and a dead gateway's vanish with its lease.
type addressStore struct {
	f      *Fleet
	prefix string
	logger *slog.Logger

	// opMu keeps this gateway's holds in etcd and mine in step: Commit
	// and Release against each other and against reassert.
	opMu sync.Mutex

	// Commits of changes that keep addresses wait here to go to etcd
	// together (groupCommit).
	groupMu  sync.Mutex
	group    []*groupedCommit
	grouping bool // a caller is sending groups; guarded by groupMu

	mu       sync.Mutex // guards the fields below
	update   func(ipam.Update)
	idents   map[string]*identity // etcd's state as of applied
	applied  int64                // the etcd revision the Pool's view includes
	advanced chan struct{}        // closed and replaced when applied grows
	mine     map[string]string    // identities this gateway holds -> the ident/ value it took them with

	// While etcd is unreachable (see unreachable.go).
	downSince           time.Time       // zero: reachable
	pending             map[string]bool // in mine, granted from the view: no hold/ key yet
	releases            map[string]bool // not in mine, released while etcd was away: hold/ key still there
	refused             uint64
	servedCached        uint64
	grantLog, refuseLog rateLog
	releaseLog          rateLog
	wake                chan struct{} // wakes probe after downSince was set; buffered
}

// identity is the store's copy of one identity's keys.
type identity struct {
	addrs [2]netip.Addr
	rev   int64           // mod revision of ident/; 0: no such key
	holds map[string]bool // gateways with a hold/ key
}

func (id *identity) record(name string) ipam.Record {
	return ipam.Record{
		Identity: name, IPv4: id.addrs[0], IPv6: id.addrs[1], Held: len(id.holds) > 0,
		Released: uint64(id.rev), Version: uint64(id.rev),
	}
}

// identValue is the JSON of an ident/ key.
type identValue struct {
	IPv4 netip.Addr `json:"ipv4,omitzero"`
	IPv6 netip.Addr `json:"ipv6,omitzero"`
}

func newAddressStore(f *Fleet) *addressStore {
	return &addressStore{
		f: f, prefix: f.cfg.Prefix + "ipam/", logger: f.logger,
		idents: make(map[string]*identity), advanced: make(chan struct{}), mine: make(map[string]string),
		pending: make(map[string]bool), releases: make(map[string]bool), wake: make(chan struct{}, 1),
	}
}

func (s *addressStore) identKey(id string) string { return s.prefix + "ident/" + url.PathEscape(id) }

func (s *addressStore) holdKey(id string) string {
	return s.prefix + "hold/" + url.PathEscape(id) + "/" + s.f.cfg.Name
}

func (s *addressStore) addrKey(a netip.Addr) string { return s.prefix + "addr/" + a.String() }

// errNotStarted is returned by Open before Start.
var errNotStarted = errors.New("fleet: not started")

// Open reads every record and starts the watch that keeps the Pool's view
// in sync, which runs until Stop.
func (s *addressStore) Open(update func(ipam.Update)) error {
	if s.f.cli == nil {
		return errNotStarted
	}
	s.mu.Lock()
	if s.update != nil {
		s.mu.Unlock()
		return errors.New("fleet: the address store serves one pool")
	}
	s.update = update
	s.mu.Unlock()
	rev, err := s.reload(s.f.ctx)
	if err != nil {
		return err
	}
	s.f.wg.Add(2)
	go s.watch(rev)
	go s.probe()
	return nil
}

// reload reads every key and delivers all records; it returns the
// revision read.
func (s *addressStore) reload(ctx context.Context) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, s.f.cfg.DialTimeout)
	defer cancel()
	resp, err := s.f.cli.Get(ctx, s.prefix, clientv3.WithPrefix())
	if err != nil {
		return 0, fmt.Errorf("fleet: read address leases: %w", err)
	}
	idents := make(map[string]*identity)
	for _, kv := range resp.Kvs {
		s.event(idents, mvccpb.PUT, kv)
	}
	u := ipam.Update{All: true, Records: make([]ipam.Record, 0, len(idents))}
	for name, id := range idents {
		u.Records = append(u.Records, id.record(name))
	}
	s.mu.Lock()
	s.idents = idents
	update := s.update
	s.mu.Unlock()
	update(u)
	s.advance(resp.Header.Revision)
	return resp.Header.Revision, nil
}

// watch follows every change after revision rev and delivers it, until
// Stop. A watch that ends (the history compacted, the member lost its
// leader) is replaced after reading everything afresh.
func (s *addressStore) watch(rev int64) {
	defer s.f.wg.Done()
	backoff := 100 * time.Millisecond
	for {
		// Without a leader the member's view may be stale: the watch
		// ends, and another member serves the next one.
		ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(s.f.ctx))
		for resp := range s.f.cli.Watch(ctx, s.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1)) {
			if err := resp.Err(); err != nil {
				if s.f.ctx.Err() == nil {
					s.logger.Warn("address lease watch ended; reading them afresh", "err", err)
				}
				break
			}
			if resp.IsProgressNotify() {
				s.advance(resp.Header.Revision)
				continue
			}
			rev = s.apply(resp.Events)
			backoff = 100 * time.Millisecond
		}
		cancel() // the client's side of a watch that ended with an error
		for {
			if s.f.ctx.Err() != nil {
				return
			}
			var err error
			if rev, err = s.reload(s.f.ctx); err == nil {
				break
			}
			s.logger.Warn("cannot read address leases; retrying", "err", err, "in", backoff)
			select {
			case <-s.f.ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	}
}

// apply delivers the changes of one watch response, which holds whole
// transactions, so a reclaim reaches the Pool at once with its victim. It
// returns the last revision applied.
func (s *addressStore) apply(evs []*clientv3.Event) int64 {
	s.mu.Lock()
	changed := make(map[string]bool)
	var rev int64
	for _, ev := range evs {
		if name, ok := s.event(s.idents, ev.Type, ev.Kv); ok {
			changed[name] = true
		}
		rev = max(rev, ev.Kv.ModRevision)
	}
	var u ipam.Update
	for name := range changed {
		id := s.idents[name]
		if id == nil {
			u.Records = append(u.Records, ipam.Record{Identity: name})
			continue
		}
		u.Records = append(u.Records, id.record(name))
	}
	update := s.update
	s.mu.Unlock()
	update(u)
	s.advance(rev)
	return rev
}

// event applies one key's change to idents and returns the identity it
// concerns, if any.
func (s *addressStore) event(idents map[string]*identity, typ mvccpb.Event_EventType, kv *mvccpb.KeyValue) (string, bool) {
	kind, rest, _ := strings.Cut(strings.TrimPrefix(string(kv.Key), s.prefix), "/")
	var esc, gw string
	switch kind {
	case "ident":
		esc = rest
	case "hold":
		esc, gw, _ = strings.Cut(rest, "/")
	default:
		return "", false // addr/ keys only guard; the records say it all
	}
	name, err := url.PathUnescape(esc)
	if err != nil || name == "" {
		s.logger.Warn("ignoring a malformed key", "key", string(kv.Key))
		return "", false
	}
	id := idents[name]
	if id == nil {
		id = &identity{holds: make(map[string]bool)}
		idents[name] = id
	}
	switch {
	case kind == "hold" && typ == mvccpb.PUT:
		id.holds[gw] = true
	case kind == "hold":
		delete(id.holds, gw)
	case typ == mvccpb.PUT:
		id.rev = kv.ModRevision
		var v identValue
		if err := json.Unmarshal(kv.Value, &v); err != nil || (v.IPv4.IsValid() && !v.IPv4.Is4()) || (v.IPv6.IsValid() && (!v.IPv6.Is6() || v.IPv6.Is4In6())) {
			s.logger.Warn("ignoring the addresses of a malformed record", "key", string(kv.Key), "value", string(kv.Value))
			v = identValue{}
		}
		id.addrs = [2]netip.Addr{v.IPv4, v.IPv6}
	default:
		id.rev, id.addrs = 0, [2]netip.Addr{}
	}
	if id.rev == 0 && len(id.holds) == 0 {
		delete(idents, name)
	}
	return name, true
}

// advance records that the Pool's view includes revision rev.
func (s *addressStore) advance(rev int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rev > s.applied {
		s.applied = rev
		close(s.advanced)
		s.advanced = make(chan struct{})
	}
}

// waitApplied waits until the Pool's view includes revision rev. The
// last change at rev may lie outside the prefix (etcd's revisions count
// every key), so after a short wait it asks the watch to report its
// progress.
func (s *addressStore) waitApplied(ctx context.Context, rev int64) error {
	wait := 20 * time.Millisecond
	for {
		s.mu.Lock()
		applied, advanced := s.applied, s.advanced
		s.mu.Unlock()
		if applied >= rev {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-advanced:
		case <-t.C:
			// The same metadata as the watch's context, or the client
			// would open another stream.
			if err := s.f.cli.RequestProgress(clientv3.WithRequireLeader(ctx)); err != nil && ctx.Err() == nil {
				s.logger.Debug("request watch progress", "err", err)
			}
			wait = 100 * time.Millisecond
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("fleet: wait for etcd revision %d: %w", rev, ctx.Err())
		}
		t.Stop()
	}
}

// Commit applies ch in one etcd transaction, if every record it was
// decided from still has the Version it saw and every address it takes
// anew is still free. A change that keeps addresses may share its
// transaction with others (groupCommit).
func (s *addressStore) Commit(ch ipam.Change) error {
	if ch.KeepsAddresses() {
		return s.groupCommit(ch)
	}
	return s.commitOne(ch)
}

// commitOne is Commit in a transaction of its own.
func (s *addressStore) commitOne(ch ipam.Change) error {
	cmps, ops, taken := s.txnOf(ch)
	s.opMu.Lock()
	defer s.opMu.Unlock()
	if s.down() {
		// No new session waits DialTimeout while etcd is known away.
		return s.whileDown(ch, nil)
	}
	ctx, cancel := s.f.opContext()
	defer cancel()
	resp, err := s.f.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil && unreachable(err) && s.f.ctx.Err() == nil {
		s.markDown(err)
		return s.whileDown(ch, err)
	}
	if err != nil {
		return fmt.Errorf("fleet: commit address lease: %w", err)
	}
	if err := s.waitApplied(ctx, resp.Header.Revision); err != nil {
		return err
	}
	if !resp.Succeeded {
		return fmt.Errorf("fleet: %w", ipam.ErrConflict)
	}
	s.took(ch, taken)
	return nil
}

// took records that this gateway holds ch.Record with the ident/ value
// taken.
func (s *addressStore) took(ch ipam.Change, taken string) {
	if taken == "" {
		return
	}
	s.mu.Lock()
	s.mine[ch.Record.Identity] = taken
	// Held again: a release still owed from an outage is void.
	delete(s.releases, ch.Record.Identity)
	s.mu.Unlock()
}

// groupedCommit is one Commit waiting in a group.
type groupedCommit struct {
	ch   ipam.Change
	done chan error
}

// maxGroup bounds the changes in one transaction: each is up to four
// puts, and etcd refuses more than 128 operations (--max-txn-ops).
const maxGroup = 24

// groupCommit commits ch together with the other changes that keep
// addresses waiting at the same time: after a gateway fails, every user
// it had arrives at the others at once, and one transaction per user,
// each waiting for the last, made them wait longer than their handshake
// allows (bench: the reconnect storm). The first caller sends groups
// until none is waiting; a group that fails as a whole (one of its
// records changed meanwhile) is retried one change at a time, so each
// caller gets the answer its own change would have got.
func (s *addressStore) groupCommit(ch ipam.Change) error {
	me := &groupedCommit{ch: ch, done: make(chan error, 1)}
	s.groupMu.Lock()
	s.group = append(s.group, me)
	if s.grouping {
		s.groupMu.Unlock()
		return <-me.done
	}
	s.grouping = true
	for {
		g := s.group[:min(len(s.group), maxGroup)]
		s.group = s.group[len(g):]
		if len(g) == 0 {
			s.grouping = false
			s.group = nil
			s.groupMu.Unlock()
			return <-me.done
		}
		s.groupMu.Unlock()
		s.commitGroup(g)
		s.groupMu.Lock()
	}
}

// commitGroup commits g's changes in one transaction if it can, else one
// by one, and answers each.
func (s *addressStore) commitGroup(g []*groupedCommit) {
	if len(g) > 1 && s.tryGroup(g) {
		for _, c := range g {
			c.done <- nil
		}
		return
	}
	for _, c := range g {
		c.done <- s.commitOne(c.ch)
	}
}

// tryGroup commits every change of g in one transaction and reports
// whether it did; false leaves etcd as it was (or etcd unreachable, which
// commitOne then finds).
func (s *addressStore) tryGroup(g []*groupedCommit) bool {
	var cmps []clientv3.Cmp
	var ops []clientv3.Op
	taken := make([]string, len(g))
	for i, c := range g {
		c1, o1, t := s.txnOf(c.ch)
		cmps, ops, taken[i] = append(cmps, c1...), append(ops, o1...), t
	}
	s.opMu.Lock()
	defer s.opMu.Unlock()
	if s.down() {
		return false
	}
	ctx, cancel := s.f.opContext()
	defer cancel()
	resp, err := s.f.cli.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil || !resp.Succeeded {
		// Unreachable, a record that changed, or two changes of one
		// identity (etcd refuses a key twice in a transaction).
		return false
	}
	if err := s.waitApplied(ctx, resp.Header.Revision); err != nil {
		return false // committed: commitOne conflicts, decides again and holds
	}
	for i, c := range g {
		s.took(c.ch, taken[i])
	}
	return true
}

// txnOf is the transaction that applies ch: its conditions, its
// operations, and the ident/ value this gateway holds ch.Record with.
func (s *addressStore) txnOf(ch ipam.Change) (cmps []clientv3.Cmp, ops []clientv3.Op, taken string) {
	if r := ch.Record; r.Identity != "" {
		taken = encodeIdent(r)
		k := s.identKey(r.Identity)
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", int64(r.Version)))
		ops = append(ops,
			clientv3.OpPut(k, taken),
			clientv3.OpPut(s.holdKey(r.Identity), s.f.cfg.Name, clientv3.WithLease(s.f.leaseID())))
		for _, a := range []netip.Addr{r.IPv4, r.IPv6} {
			if a.IsValid() {
				ops = append(ops, clientv3.OpPut(s.addrKey(a), r.Identity))
			}
		}
	}
	for _, a := range ch.Free {
		cmps = append(cmps, clientv3.Compare(clientv3.CreateRevision(s.addrKey(a)), "=", 0))
	}
	for _, v := range ch.Victims {
		k := s.identKey(v.Identity)
		cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(k), "=", int64(v.Version)))
		if !v.IPv4.IsValid() && !v.IPv6.IsValid() {
			ops = append(ops, clientv3.OpDelete(k))
		} else {
			ops = append(ops, clientv3.OpPut(k, encodeIdent(v)))
		}
	}
	for _, a := range ch.Drop {
		ops = append(ops, clientv3.OpDelete(s.addrKey(a)))
	}
	return cmps, ops, taken
}

// Release deletes this gateway's hold on name and rewrites its record, so
// that its Released ranks it after every identity released before.
func (s *addressStore) Release(name string) error {
	s.opMu.Lock()
	defer s.opMu.Unlock()
	if s.down() {
		return s.releaseWhileDown(name, ErrStoreUnreachable)
	}
	ctx, cancel := s.f.opContext()
	defer cancel()
	resp, err := s.releaseTxn(ctx, name)
	if err != nil && unreachable(err) && s.f.ctx.Err() == nil {
		s.markDown(err)
		return s.releaseWhileDown(name, err)
	}
	if err != nil {
		return fmt.Errorf("fleet: release address lease of %q: %w", name, err)
	}
	s.mu.Lock()
	delete(s.mine, name)
	delete(s.pending, name)
	delete(s.releases, name)
	s.mu.Unlock()
	return s.waitApplied(ctx, resp.Header.Revision)
}

// releaseTxn deletes this gateway's hold on name and rewrites its record
// (see Release).
func (s *addressStore) releaseTxn(ctx context.Context, name string) (*clientv3.TxnResponse, error) {
	k := s.identKey(name)
	return s.f.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(k), ">", 0)).
		Then(clientv3.OpDelete(s.holdKey(name)), clientv3.OpPut(k, "", clientv3.WithIgnoreValue())).
		Else(clientv3.OpDelete(s.holdKey(name))).
		Commit()
}

// reassert puts this gateway's holds under its new lease after the old
// one was lost. An identity whose record changed meanwhile (another
// gateway reclaimed its addresses while this one's holds were gone) is
// not held again: its sessions here use addresses that may be another's
// now, which is logged.
func (s *addressStore) reassert(ctx context.Context) {
	s.mu.Lock()
	names := make([]string, 0, len(s.mine))
	for name := range s.mine {
		names = append(names, name)
	}
	s.mu.Unlock()
	for _, name := range names {
		s.reassertOne(ctx, name)
	}
}

// reassertOne holds name again under the current lease if this gateway
// still holds it and its record is the one it took; it is no longer
// pending then. It returns the error of the request to etcd, which it
// logged.
func (s *addressStore) reassertOne(ctx context.Context, name string) error {
	s.opMu.Lock()
	defer s.opMu.Unlock()
	s.mu.Lock()
	v, ok := s.mine[name]
	s.mu.Unlock()
	if !ok {
		return nil // released meanwhile
	}
	k := s.identKey(name)
	ctx, cancel := context.WithTimeout(ctx, s.f.cfg.DialTimeout)
	defer cancel()
	resp, err := s.f.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.Value(k), "=", v)).
		Then(clientv3.OpPut(s.holdKey(name), s.f.cfg.Name, clientv3.WithLease(s.f.leaseID())), clientv3.OpPut(k, "", clientv3.WithIgnoreValue())).
		Commit()
	if err != nil {
		s.logger.Warn("cannot hold an identity's addresses again after losing the fleet lease or etcd", "identity", name, "err", err)
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.pending, name)
	if !resp.Succeeded {
		s.logger.Error("an identity's addresses were reclaimed while this gateway could not hold them in etcd; its sessions here may clash",
			"identity", name)
		delete(s.mine, name)
	}
	return nil
}

func encodeIdent(r ipam.Record) string {
	// Marshalling two addresses cannot fail.
	b, _ := json.Marshal(identValue{IPv4: r.IPv4, IPv6: r.IPv6})
	return string(b)
}
