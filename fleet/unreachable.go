package fleet

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/twoway/twoway/ipam"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrStoreUnreachable is wrapped by the errors of address requests refused
// because etcd cannot be reached (see Config.StoreUnreachable).
var ErrStoreUnreachable = errors.New("etcd unreachable")

// StoreStats is what the address store did while etcd was unreachable,
// for status and metrics.
type StoreStats struct {
	// Unreachable is whether etcd is unreachable now: new address
	// requests are answered without it (Config.StoreUnreachable) until a
	// probe reaches it again. Since is when that began.
	Unreachable bool
	Since       time.Time
	// Refused counts address requests refused because etcd was
	// unreachable; ServedCached those granted from this gateway's view.
	Refused, ServedCached uint64
	// Pending is how many cached grants are not yet written to etcd.
	Pending int
	// PendingReleases is how many releases etcd has not heard of yet:
	// the last session of an identity ended here while etcd was away.
	// They are written when it is back.
	PendingReleases int
}

// StoreStats returns the address store's outage counters.
func (f *Fleet) StoreStats() StoreStats {
	s := f.addrs
	s.mu.Lock()
	defer s.mu.Unlock()
	return StoreStats{Unreachable: !s.downSince.IsZero(), Since: s.downSince,
		Refused: s.refused, ServedCached: s.servedCached, Pending: len(s.pending), PendingReleases: len(s.releases)}
}

// Probe intervals while etcd is unreachable.
const (
	minProbe = 250 * time.Millisecond
	maxProbe = 2 * time.Second
)

// unreachable reports whether err, from a request to etcd, means etcd
// could not answer (no connection, no leader, timeout) rather than that it
// refused the request.
func unreachable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	code := status.Code(err)
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		code = ee.Code()
	}
	return code == codes.Unavailable || code == codes.DeadlineExceeded
}

// down reports whether etcd is known to be unreachable. Callers hold
// s.opMu, so the answer holds until they release it... or a probe
// succeeds, which only makes a request fail fast that could have waited.
func (s *addressStore) down() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.downSince.IsZero()
}

// markDown records that a request to etcd failed with err, which
// unreachable accepted, and wakes the prober.
func (s *addressStore) markDown(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.downSince.IsZero() {
		return
	}
	s.downSince = time.Now()
	s.logger.Warn("etcd unreachable: new sessions' address requests are answered without it until it is back",
		"store_unreachable", s.f.cfg.StoreUnreachable, "err", err)
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// whileDown answers ch, a Commit, while etcd is unreachable: cause is the
// request's error, nil when none was made. Callers hold s.opMu.
func (s *addressStore) whileDown(ch ipam.Change, cause error) error {
	r := ch.Record
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f.cfg.StoreUnreachable == StoreServeCached && s.cached(ch) {
		s.mine[r.Identity] = encodeIdent(r)
		s.pending[r.Identity] = true
		delete(s.releases, r.Identity) // held here again: no release owed
		s.servedCached++
		if s.grantLog.allow() {
			s.logger.Info("etcd unreachable: identity gets the addresses it had; its hold is written when etcd is back",
				"identity", r.Identity, "ipv4", r.IPv4, "ipv6", r.IPv6, "served_cached", s.servedCached)
		}
		// Nothing to deliver: ch.Record is the Pool's view already.
		return nil
	}
	s.refused++
	if s.refuseLog.allow() {
		s.logger.Info("etcd unreachable: address request refused", "identity", r.Identity,
			"store_unreachable", s.f.cfg.StoreUnreachable, "refused", s.refused)
	}
	if cause == nil {
		return fmt.Errorf("fleet: %w since %v: address request of %q refused", ErrStoreUnreachable, s.downSince.Format(time.RFC3339), r.Identity)
	}
	return fmt.Errorf("fleet: %w: address request of %q refused: %w", ErrStoreUnreachable, r.Identity, cause)
}

// cached reports whether ch only takes a hold on addresses its identity
// has in etcd as this gateway last saw it: a record with a version, the
// same addresses, no address taken from or given to anyone. Callers hold
// s.mu.
func (s *addressStore) cached(ch ipam.Change) bool {
	r := ch.Record
	if r.Identity == "" || r.Version == 0 || len(ch.Victims) > 0 || len(ch.Free) > 0 || len(ch.Drop) > 0 {
		return false
	}
	id := s.idents[r.Identity]
	return id != nil && uint64(id.rev) == r.Version && id.addrs == [2]netip.Addr{r.IPv4, r.IPv6} && id.addrs != [2]netip.Addr{}
}

// probe runs until Stop: while etcd is unreachable it asks etcd, with
// backoff, until it answers; then it writes the holds granted meanwhile.
func (s *addressStore) probe() {
	defer s.f.wg.Done()
	for {
		select {
		case <-s.f.ctx.Done():
			return
		case <-s.wake:
		}
		for backoff := minProbe; ; backoff = min(2*backoff, maxProbe) {
			select {
			case <-s.f.ctx.Done():
				return
			case <-time.After(backoff):
			}
			if s.reachable() {
				break
			}
		}
	}
}

// reachable asks etcd for one key, which takes a leader, and when it
// answers marks it reachable and writes the pending holds. It reports
// whether etcd answered every request.
func (s *addressStore) reachable() bool {
	ctx, cancel := s.f.opContext()
	_, err := s.f.cli.Get(ctx, s.prefix+"probe", clientv3.WithCountOnly())
	cancel()
	if err != nil {
		return false
	}
	s.mu.Lock()
	since := s.downSince
	s.downSince = time.Time{}
	names := make([]string, 0, len(s.pending))
	for name := range s.pending {
		names = append(names, name)
	}
	releases := make([]string, 0, len(s.releases))
	for name := range s.releases {
		releases = append(releases, name)
	}
	refused, served := s.refused, s.servedCached
	s.mu.Unlock()
	s.logger.Info("etcd reachable again", "after", time.Since(since).Round(time.Millisecond),
		"refused", refused, "served_cached", served, "pending_holds", len(names), "pending_releases", len(releases))
	for _, name := range names {
		if err := s.reassertOne(s.f.ctx, name); err != nil && unreachable(err) {
			s.markDown(err)
			return false
		}
		// Any other error is logged and the hold stays pending: a
		// lost lease ("lease not found") is taken anew by keepAlive,
		// whose reassert writes it; otherwise the next outage's end.
	}
	for _, name := range releases {
		if err := s.releaseOwed(name); err != nil && unreachable(err) {
			s.markDown(err)
			return false
		}
	}
	return true
}

// releaseOwed writes a release that failed while etcd was away, unless
// this gateway has held the identity again since. It returns the error of
// the request to etcd, which it logged; the release stays owed then.
func (s *addressStore) releaseOwed(name string) error {
	s.opMu.Lock()
	defer s.opMu.Unlock()
	s.mu.Lock()
	owed := s.releases[name]
	s.mu.Unlock()
	if !owed {
		return nil
	}
	ctx, cancel := s.f.opContext()
	defer cancel()
	if _, err := s.releaseTxn(ctx, name); err != nil {
		s.logger.Warn("cannot write a release owed since etcd was unreachable; retrying when it is back", "identity", name, "err", err)
		return err
	}
	s.mu.Lock()
	delete(s.releases, name)
	s.mu.Unlock()
	return nil
}

// rateLog allows one log line per interval.
type rateLog struct {
	last time.Time
}

const logInterval = 10 * time.Second

func (l *rateLog) allow() bool {
	if now := time.Now(); now.Sub(l.last) >= logInterval {
		l.last = now
		return true
	}
	return false
}

// releaseWhileDown answers Release(name) while etcd is unreachable. A hold
// granted from the view and never written is simply forgotten. Any other
// is owed: its hold/ key stays in etcd until the prober, once etcd
// answers again, deletes it (releaseOwed). Leaving it to expire with the
// lease would be wrong: the lease is this live gateway's, kept alive as
// long as it runs, so the identity would stay "online" and its addresses
// unreclaimable for good, and a lost lease's reassert would hold it anew.
// Callers hold s.opMu.
func (s *addressStore) releaseWhileDown(name string, cause error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending[name] {
		delete(s.pending, name)
		delete(s.mine, name)
		return nil
	}
	if _, ok := s.mine[name]; !ok {
		// Not held by this gateway as far as it knows: nothing to owe.
		return fmt.Errorf("fleet: release address lease of %q: %w", name, cause)
	}
	delete(s.mine, name)
	s.releases[name] = true
	if s.releaseLog.allow() {
		s.logger.Info("etcd unreachable: the release of an identity's addresses is written when etcd is back",
			"identity", name, "pending_releases", len(s.releases), "err", cause)
	}
	return nil
}
