package fleet

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/twoway/twoway/fleet/fleettest"
	"github.com/twoway/twoway/ipam"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestEtcdUnreachable: etcd goes away, as one member that stops or as a
// three-member cluster that loses its quorum (two members stop: the third
// has no leader, and answers nothing). Live sessions go on; a
// serve-cached gateway gives identities it knows the addresses they had
// and refuses new ones, a refuse gateway refuses everyone; no request
// waits beyond dial_timeout, and after the first failure none waits for
// etcd at all. An identity whose last session ends meanwhile owes etcd a
// release. When etcd is back, the cached grants' holds appear in it and
// the owed release is written: its hold vanishes.
func TestEtcdUnreachable(t *testing.T) {
	t.Run("member stopped", func(t *testing.T) {
		c, err := fleettest.StartCluster(t.TempDir(), 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close) // after the gateways stop: cleanups run last first
		testEtcdUnreachable(t, c, func() { c.StopMember(0) }, func() error { return c.RestartMember(0) })
	})
	t.Run("quorum lost", func(t *testing.T) {
		c, err := fleettest.StartCluster(t.TempDir(), 3, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		testEtcdUnreachable(t, c, func() {
			c.StopMember(1)
			c.StopMember(2)
		}, func() error {
			// One member back makes a quorum of two; the third joins it.
			if err := c.RestartMember(1); err != nil {
				return err
			}
			return c.RestartMember(2)
		})
	})
}

func testEtcdUnreachable(t *testing.T, c *fleettest.Cluster, stop func(), restart func() error) {
	const dial = 2 * time.Second
	fc := func(name, mode string) Config {
		return Config{Endpoints: c.Endpoints, Name: name, Prefix: testPrefix(t), LeaseTTL: 2 * time.Second,
			DialTimeout: dial, StoreUnreachable: mode}
	}
	cfg := ipam.Config{IPv4: pool4}
	cached := startGatewayWith(t, fc("cached", StoreServeCached), cfg)
	refuse := startGatewayWith(t, fc("refuse", StoreRefuse), cfg)

	// alice and dave are online on refuse, bob was online on cached.
	alice := refuse.acquire(t, "alice")
	dave := refuse.acquire(t, "dave")
	bob := cached.acquire(t, "bob")
	cached.pool.Release(bob)
	cached.sync(t)
	refuse.sync(t)

	stop()

	// A live session's identity shares its lease without etcd.
	if l := refuse.acquire(t, "alice"); l.IPv4 != alice.IPv4 {
		t.Fatalf("alice's second session on refuse: %v, want %v", l.IPv4, alice.IPv4)
	}

	try := func(g *gateway, id string, fast bool) (ipam.Lease, error) {
		t.Helper()
		start := time.Now()
		l, err := g.pool.Acquire(id, nil)
		took := time.Since(start)
		if fast && took > 500*time.Millisecond {
			t.Errorf("%s: Acquire(%q) took %v while etcd was known unreachable", g.fleet.Name(), id, took)
		}
		// The first request finds etcd away: it may wait for it, but
		// no longer than dial_timeout (and some scheduling).
		if took > dial+time.Second {
			t.Errorf("%s: Acquire(%q) took %v, dial_timeout is %v", g.fleet.Name(), id, took, dial)
		}
		return l, err
	}
	refused := func(g *gateway, id string, fast bool) {
		t.Helper()
		if l, err := try(g, id, fast); !errors.Is(err, ErrStoreUnreachable) {
			t.Errorf("%s: Acquire(%q) = %v, %v; want ErrStoreUnreachable", g.fleet.Name(), id, l, err)
		}
	}
	granted := func(g *gateway, id string, want netip.Prefix, fast bool) {
		t.Helper()
		l, err := try(g, id, fast)
		if err != nil || l.IPv4 != want {
			t.Errorf("%s: Acquire(%q) = %v, %v; want %v", g.fleet.Name(), id, l.IPv4, err, want)
		}
	}

	// alice fails over to cached; bob comes back; carol is new.
	granted(cached, "alice", alice.IPv4, false) // the first request finds etcd away
	granted(cached, "bob", bob.IPv4, true)
	refused(cached, "carol", true)

	refused(refuse, "bob", false)
	refused(refuse, "bob", true)
	refused(refuse, "carol", true)

	// dave's last session ends on refuse while etcd is away: the release
	// is owed, not lost.
	start := time.Now()
	refuse.pool.Release(dave)
	if took := time.Since(start); took > 500*time.Millisecond {
		t.Errorf("refuse: Release(dave) took %v while etcd was known unreachable", took)
	}

	if got, want := cached.fleet.StoreStats(), (StoreStats{Unreachable: true, Refused: 1, ServedCached: 2, Pending: 2}); got.Since.IsZero() || withoutSince(got) != want {
		t.Errorf("cached: StoreStats = %+v, want %+v", got, want)
	}
	if got, want := refuse.fleet.StoreStats(), (StoreStats{Unreachable: true, Refused: 3, PendingReleases: 1}); withoutSince(got) != want {
		t.Errorf("refuse: StoreStats = %+v, want %+v", got, want)
	}

	down := time.Now()
	if err := restart(); err != nil {
		t.Fatal(err)
	}
	t.Logf("etcd serves again after %v", time.Since(down).Round(time.Millisecond))
	// alice's hold on refuse comes back too: a keepalive that broke in
	// the outage makes the gateway take a new lease and put its holds
	// under it (reassert), after etcd answers again, not before.
	waitHolds(t, c, "alice/cached", "bob/cached", "alice/refuse")
	for _, g := range []*gateway{cached, refuse} {
		deadline := time.Now().Add(20 * time.Second)
		for st := g.fleet.StoreStats(); st.Unreachable || st.Pending > 0 || st.PendingReleases > 0; st = g.fleet.StoreStats() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: StoreStats = %+v 20 s after etcd came back", g.fleet.Name(), st)
			}
			time.Sleep(50 * time.Millisecond) // the prober's next round; nothing to wait on
		}
	}
	// Every hold etcd has is a live one: dave's owed release was written
	// (a watch would not do: a lease lost in the outage deletes holds
	// that reassert puts back).
	holds := holdKeys(t, c)
	for _, h := range []string{"alice/refuse", "alice/cached", "bob/cached"} {
		if !holds[h] {
			t.Errorf("hold %s missing from etcd after the outage; holds: %v", h, holds)
		}
	}
	if holds["dave/refuse"] {
		t.Errorf("dave's hold on refuse is still in etcd: his release during the outage was lost")
	}
	cached.acquire(t, "carol")
}

// holdKeys returns the hold/ keys (identity/gateway) under t's prefix.
func holdKeys(t *testing.T, c *fleettest.Cluster) map[string]bool {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints, DialTimeout: 5 * time.Second, Logger: zapLogger(testLogger(t))})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	prefix := testPrefix(t) + "ipam/hold/"
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]bool)
	for _, kv := range resp.Kvs {
		out[strings.TrimPrefix(string(kv.Key), prefix)] = true
	}
	return out
}

func withoutSince(st StoreStats) StoreStats {
	st.Since = time.Time{}
	return st
}

// waitHolds waits until etcd has the hold/ keys named (identity/gateway)
// under t's prefix.
func waitHolds(t *testing.T, c *fleettest.Cluster, names ...string) {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints, DialTimeout: 5 * time.Second, Logger: zapLogger(testLogger(t))})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	prefix := testPrefix(t) + "ipam/hold/"
	missing := make(map[string]bool)
	for _, n := range names {
		missing[n] = true
	}
	resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		delete(missing, strings.TrimPrefix(string(kv.Key), prefix))
	}
	changes := cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision+1))
	for len(missing) > 0 {
		resp, ok := <-changes
		if !ok {
			t.Fatalf("holds %v not in etcd: %v", missing, ctx.Err())
		}
		for _, ev := range resp.Events {
			if ev.Type == mvccpb.PUT {
				delete(missing, strings.TrimPrefix(string(ev.Kv.Key), prefix))
			}
		}
	}
}
