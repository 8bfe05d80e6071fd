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

// TestEtcdUnreachable: etcd (one member) goes away. Live sessions go on;
// a serve-cached gateway gives identities it knows the addresses they had
// and refuses new ones, a refuse gateway refuses everyone; after the first
// failure neither waits for etcd. When etcd is back, the cached grants'
// holds appear in it.
func TestEtcdUnreachable(t *testing.T) {
	c, err := fleettest.StartCluster(t.TempDir(), 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close) // after the gateways stop: cleanups run last first
	const dial = 2 * time.Second
	fc := func(name, mode string) Config {
		return Config{Endpoints: c.Endpoints, Name: name, Prefix: testPrefix(t), LeaseTTL: 2 * time.Second,
			DialTimeout: dial, StoreUnreachable: mode}
	}
	cfg := ipam.Config{IPv4: pool4}
	cached := startGatewayWith(t, fc("cached", StoreServeCached), cfg)
	refuse := startGatewayWith(t, fc("refuse", StoreRefuse), cfg)

	// alice is online on refuse, bob was online on cached.
	alice := refuse.acquire(t, "alice")
	bob := cached.acquire(t, "bob")
	cached.pool.Release(bob)
	cached.sync(t)
	refuse.sync(t)

	c.StopMember(0)

	// A live session's identity shares its lease without etcd.
	if l := refuse.acquire(t, "alice"); l.IPv4 != alice.IPv4 {
		t.Fatalf("alice's second session on refuse: %v, want %v", l.IPv4, alice.IPv4)
	}

	try := func(g *gateway, id string, fast bool) (ipam.Lease, error) {
		t.Helper()
		start := time.Now()
		l, err := g.pool.Acquire(id, nil)
		if took := time.Since(start); fast && took > 500*time.Millisecond {
			t.Errorf("%s: Acquire(%q) took %v while etcd was known unreachable", g.fleet.Name(), id, took)
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

	if got, want := cached.fleet.StoreStats(), (StoreStats{Unreachable: true, Refused: 1, ServedCached: 2, Pending: 2}); got.Since.IsZero() || withoutSince(got) != want {
		t.Errorf("cached: StoreStats = %+v, want %+v", got, want)
	}
	if got, want := refuse.fleet.StoreStats(), (StoreStats{Unreachable: true, Refused: 3}); withoutSince(got) != want {
		t.Errorf("refuse: StoreStats = %+v, want %+v", got, want)
	}

	if err := c.RestartMember(0); err != nil {
		t.Fatal(err)
	}
	waitHolds(t, c, "alice/cached", "bob/cached")
	deadline := time.Now().Add(20 * time.Second)
	for st := cached.fleet.StoreStats(); st.Unreachable || st.Pending > 0; st = cached.fleet.StoreStats() {
		if time.Now().After(deadline) {
			t.Fatalf("cached: StoreStats = %+v 20 s after etcd came back", st)
		}
		time.Sleep(50 * time.Millisecond) // the prober's next round; nothing to wait on
	}
	cached.acquire(t, "carol")
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
