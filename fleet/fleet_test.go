package fleet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twoway/twoway/fleet/fleettest"
	"github.com/twoway/twoway/ipam"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
)

// shared is the three-member etcd cluster every test but the TLS one
// uses, each under its own key prefix.
var shared *fleettest.Cluster

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "twoway-fleet-etcd-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	start := time.Now()
	shared, err = fleettest.StartCluster(dir, 3, nil)
	if err != nil {
		os.RemoveAll(dir)
		fmt.Fprintln(os.Stderr, "start etcd:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "3-member etcd cluster up in %v\n", time.Since(start).Round(time.Millisecond))
	code := m.Run()
	closing := time.Now()
	shared.Close()
	os.RemoveAll(dir)
	if code == 0 {
		if err := shared.PortsFree(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	if code == 0 {
		// goleak.Find, not VerifyTestMain: the cluster is closed by now,
		// so anything left is a leak, of this package or of etcd. Patient:
		// a member's peer connection that a probe left idle at Close
		// lingers until the peer listener's 5 s read timeout.
		err := goleak.Find()
		for deadline := time.Now().Add(10 * time.Second); err != nil && time.Now().Before(deadline); {
			err = goleak.Find() // itself retries for a while
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "goroutines leaked:", err)
			code = 1
		}
	}
	fmt.Fprintf(os.Stderr, "etcd closed and goroutines checked in %v\n", time.Since(closing).Round(time.Millisecond))
	os.Exit(code)
}

var (
	pool4 = netip.MustParsePrefix("198.18.0.0/22")
	pool6 = netip.MustParsePrefix("2001:db8:1::/64")
)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// gateway is one gateway of a test fleet: its membership and its pool.
type gateway struct {
	fleet *Fleet
	pool  *ipam.Pool
}

// testPrefix is the key prefix of t's fleet in the shared cluster.
func testPrefix(t *testing.T) string { return "/test/" + t.Name() + "/" }

// startGateway joins a gateway named name to t's fleet, with pool cfg.
func startGateway(t *testing.T, name string, cfg ipam.Config) *gateway {
	t.Helper()
	return startGatewayWith(t, Config{Endpoints: shared.Endpoints, Name: name, Prefix: testPrefix(t), LeaseTTL: 2 * time.Second}, cfg)
}

// startGatewayWith joins a gateway configured by fc, with pool cfg.
func startGatewayWith(t *testing.T, fc Config, cfg ipam.Config) *gateway {
	t.Helper()
	name := fc.Name
	f, err := New(fc, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.Stop)
	p, err := ipam.NewWithStore(cfg, f.Addresses(), testLogger(t).With("gateway", name))
	if err != nil {
		t.Fatal(err)
	}
	return &gateway{fleet: f, pool: p}
}

// etcdClient returns a plain client of the shared cluster, for checks.
func etcdClient(t *testing.T) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: shared.Endpoints, DialTimeout: 5 * time.Second, Logger: zapLogger(testLogger(t))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// sync waits until the Pool's view includes everything committed to etcd
// so far: what a test needs before it asks a Pool about another gateway's
// changes.
func (s *addressStore) sync(ctx context.Context) error {
	resp, err := s.f.cli.Get(ctx, s.prefix+"sync", clientv3.WithCountOnly())
	if err != nil {
		return err
	}
	return s.waitApplied(ctx, resp.Header.Revision)
}

func (g *gateway) sync(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := g.fleet.addrs.sync(ctx); err != nil {
		t.Fatal(err)
	}
}

func (g *gateway) acquire(t *testing.T, id string, groups ...string) ipam.Lease {
	t.Helper()
	l, err := g.pool.Acquire(id, groups)
	if err != nil {
		t.Fatalf("%s: Acquire(%q): %v", g.fleet.Name(), id, err)
	}
	return l
}

// keys returns the keys under t's prefix + sub, with their values.
func keys(t *testing.T, cli *clientv3.Client, sub string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, testPrefix(t)+sub, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]string, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out[strings.TrimPrefix(string(kv.Key), testPrefix(t)+sub)] = string(kv.Value)
	}
	return out
}

// TestFiveHundredIdentitiesThreeGateways: 500 identities connect at once,
// spread over three gateways, every fifth on two gateways at once; every
// identity gets one address per family, no address goes to two, and etcd
// agrees with what the gateways handed out.
func TestFiveHundredIdentitiesThreeGateways(t *testing.T) {
	cfg := ipam.Config{IPv4: pool4, IPv6: pool6}
	gws := []*gateway{startGateway(t, "gw0", cfg), startGateway(t, "gw1", cfg), startGateway(t, "gw2", cfg)}
	const n = 500
	type session struct {
		gw int
		l  ipam.Lease
	}
	var (
		mu       sync.Mutex
		sessions = make(map[string][]session)
		errs     []error
		wg       sync.WaitGroup
	)
	start := time.Now()
	for i := range n {
		id := fmt.Sprintf("user%03d", i)
		on := []int{i % 3}
		if i%5 == 0 {
			on = append(on, (i+1)%3)
		}
		for _, gw := range on {
			wg.Go(func() {
				l, err := gws[gw].pool.Acquire(id, nil)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, fmt.Errorf("gw%d: %s: %w", gw, id, err))
					return
				}
				sessions[id] = append(sessions[id], session{gw, l})
			})
		}
	}
	wg.Wait()
	t.Logf("%d identities, %d sessions over 3 gateways in %v", n, n+n/5, time.Since(start).Round(time.Millisecond))
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}

	owner := make(map[netip.Addr]string) // from the leases handed out
	for id, ss := range sessions {
		l := ss[0].l
		if !pool4.Contains(l.IPv4.Addr()) || !pool6.Contains(l.IPv6.Addr()) {
			t.Fatalf("%s got %v %v", id, l.IPv4, l.IPv6)
		}
		for _, s := range ss[1:] {
			if s.l.IPv4 != l.IPv4 || s.l.IPv6 != l.IPv6 {
				t.Errorf("%s has %v %v on gw%d but %v %v on gw%d", id, s.l.IPv4, s.l.IPv6, s.gw, l.IPv4, l.IPv6, ss[0].gw)
			}
		}
		for _, a := range l.Addrs() {
			if other, dup := owner[a]; dup {
				t.Errorf("%v handed to %s and %s", a, other, id)
			}
			owner[a] = id
		}
	}
	if len(sessions) != n || len(owner) != 2*n {
		t.Fatalf("%d identities with leases and %d addresses, want %d and %d", len(sessions), len(owner), n, 2*n)
	}

	// etcd says the same: one addr/ key per address handed out, naming
	// its identity, one record per identity, and one hold per gateway
	// that holds it.
	cli := etcdClient(t)
	addrKeys := keys(t, cli, "ipam/addr/")
	if len(addrKeys) != 2*n {
		t.Errorf("%d addr/ keys in etcd, want %d", len(addrKeys), 2*n)
	}
	for a, id := range owner {
		if got := addrKeys[a.String()]; got != id {
			t.Errorf("etcd has %v for %q, handed to %s", a, got, id)
		}
	}
	if got := len(keys(t, cli, "ipam/ident/")); got != n {
		t.Errorf("%d ident/ keys, want %d", got, n)
	}
	holds := keys(t, cli, "ipam/hold/")
	for id, ss := range sessions {
		for _, s := range ss {
			if holds[id+"/"+fmt.Sprint("gw", s.gw)] == "" {
				t.Errorf("no hold of gw%d on %s in etcd", s.gw, id)
			}
		}
	}
	if len(holds) != n+n/5 {
		t.Errorf("%d holds in etcd, want %d", len(holds), n+n/5)
	}

	// Every gateway's view agrees with etcd; each counts its own
	// sessions only.
	for gi, g := range gws {
		g.sync(t)
		as := g.pool.Assignments()
		if len(as) != n {
			t.Fatalf("gw%d sees %d assignments", gi, len(as))
		}
		for _, a := range as {
			if owner[a.IPv4] != a.Identity || owner[a.IPv6] != a.Identity {
				t.Fatalf("gw%d sees %+v", gi, a)
			}
			mine := 0
			for _, s := range sessions[a.Identity] {
				if s.gw == gi {
					mine++
				}
			}
			if a.Sessions != mine {
				t.Fatalf("gw%d counts %d sessions of %s, has %d", gi, a.Sessions, a.Identity, mine)
			}
		}
	}

	// Everyone disconnects: the holds go, the records stay (sticky).
	for _, ss := range sessions {
		for _, s := range ss {
			wg.Go(func() { gws[s.gw].pool.Release(s.l) })
		}
	}
	wg.Wait()
	if got := len(keys(t, cli, "ipam/hold/")); got != 0 {
		t.Errorf("%d holds left after every session ended", got)
	}
	if got := len(keys(t, cli, "ipam/addr/")); got != 2*n {
		t.Errorf("%d addr/ keys after every session ended, want %d (sticky)", got, 2*n)
	}
}

// TestIdentityMovesGatewaysKeepsAddress: a user whose session ends on one
// gateway and comes back on another keeps the address, also when the new
// session starts before the old one ended.
func TestIdentityMovesGatewaysKeepsAddress(t *testing.T) {
	cfg := ipam.Config{IPv4: pool4, IPv6: pool6}
	a, b := startGateway(t, "a", cfg), startGateway(t, "b", cfg)
	acquire := func(g *gateway, id string) ipam.Lease { return g.acquire(t, id) }
	alice := acquire(a, "alice")
	bob := acquire(b, "bob")
	if alice.IPv4 == bob.IPv4 || alice.IPv6 == bob.IPv6 {
		t.Fatalf("alice %v and bob %v", alice.Addrs(), bob.Addrs())
	}
	a.pool.Release(alice)
	moved := acquire(b, "alice")
	if moved.IPv4 != alice.IPv4 || moved.IPv6 != alice.IPv6 {
		t.Fatalf("alice on b got %v, had %v on a", moved.Addrs(), alice.Addrs())
	}
	// Back to a while the session on b is still open.
	back := acquire(a, "alice")
	if back.IPv4 != alice.IPv4 || back.IPv6 != alice.IPv6 {
		t.Fatalf("alice back on a got %v, holds %v on b", back.Addrs(), alice.Addrs())
	}
	// New users never get alice's or bob's addresses, even while both
	// are offline: never-used ones come first.
	b.pool.Release(moved)
	a.pool.Release(back)
	b.pool.Release(bob)
	for i := range 5 {
		l := acquire(a, fmt.Sprint("new", i))
		if l.IPv4 == alice.IPv4 || l.IPv4 == bob.IPv4 {
			t.Fatalf("new%d got %v, remembered for alice or bob", i, l.IPv4)
		}
	}
	if l := acquire(b, "bob"); l.IPv4 != bob.IPv4 {
		t.Fatalf("bob came back with %v, had %v", l.IPv4, bob.IPv4)
	}
}

// TestDeadGatewaysHoldsVanish: a gateway dies without saying goodbye. Its
// users stay held until its lease expires, then are offline: sticky,
// reclaimed under pressure, oldest first.
func TestDeadGatewaysHoldsVanish(t *testing.T) {
	// .1 is the gateway, .2 to .6 for five clients.
	cfg := ipam.Config{IPv4: netip.MustParsePrefix("198.18.0.0/29")}
	a, b := startGateway(t, "a", cfg), startGateway(t, "b", cfg)
	a1 := a.acquire(t, "a1")
	a2 := a.acquire(t, "a2")
	for _, id := range []string{"b1", "x1", "x2"} {
		b.acquire(t, id)
	}
	if _, err := b.pool.Acquire("x3", nil); !errors.Is(err, ipam.ErrPoolExhausted) {
		t.Fatalf("x3 while a holds a1 and a2: %v, want ErrPoolExhausted", err)
	}

	cli := etcdClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	now, err := cli.Get(ctx, "/", clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	deleted := cli.Watch(ctx, testPrefix(t)+"ipam/hold/", clientv3.WithPrefix(), clientv3.WithRev(now.Header.Revision+1))

	died := time.Now()
	a.fleet.noGoodbye = true
	a.fleet.Stop()
	// Until the lease expires, a's users are still online.
	b.sync(t)
	if _, err := b.pool.Acquire("x3", nil); !errors.Is(err, ipam.ErrPoolExhausted) {
		t.Fatalf("x3 before a's lease expired: %v, want ErrPoolExhausted", err)
	}
	gone := map[string]bool{}
	for len(gone) < 2 {
		resp, ok := <-deleted
		if !ok {
			t.Fatalf("watch ended before a's holds vanished: %v", ctx.Err())
		}
		for _, ev := range resp.Events {
			if ev.Type != mvccpb.DELETE || !strings.HasSuffix(string(ev.Kv.Key), "/a") {
				t.Fatalf("unexpected %v %s", ev.Type, ev.Kv.Key)
			}
			gone[string(ev.Kv.Key)] = true
		}
	}
	t.Logf("a's holds vanished %v after it died (lease TTL 2 s)", time.Since(died).Round(time.Millisecond))

	b.sync(t)
	// Under pressure, the address released first (a1's: a took it
	// before a2's) goes to the newcomer.
	if x3 := b.acquire(t, "x3"); x3.IPv4 != a1.IPv4 {
		t.Fatalf("x3 got %v, want a1's %v", x3.IPv4, a1.IPv4)
	}
	// a2 fails over to b and keeps its address.
	if l := b.acquire(t, "a2"); l.IPv4 != a2.IPv4 {
		t.Fatalf("a2 on b got %v, had %v on a", l.IPv4, a2.IPv4)
	}
	if _, err := b.pool.Acquire("a1", nil); !errors.Is(err, ipam.ErrPoolExhausted) {
		t.Fatalf("a1 with every address held: %v, want ErrPoolExhausted", err)
	}
}

// TestLostLeaseIsTakenAgain: a live gateway whose lease is revoked (or ran
// out during a partition) takes a new one and holds its users again, so
// another gateway cannot reclaim their addresses.
func TestLostLeaseIsTakenAgain(t *testing.T) {
	cfg := ipam.Config{IPv4: netip.MustParsePrefix("198.18.0.0/30")} // one client address
	a, b := startGateway(t, "a", cfg), startGateway(t, "b", cfg)
	a.acquire(t, "alice")
	cli := etcdClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	holdKey := testPrefix(t) + "ipam/hold/alice/a"
	before, err := cli.Get(ctx, holdKey)
	if err != nil || len(before.Kvs) != 1 {
		t.Fatalf("hold of a on alice: %v %v", before, err)
	}
	old := clientv3.LeaseID(before.Kvs[0].Lease)
	changes := cli.Watch(ctx, holdKey, clientv3.WithRev(before.Header.Revision+1))
	if _, err := cli.Revoke(ctx, old); err != nil {
		t.Fatal(err)
	}
	var seen []string
	for len(seen) < 2 {
		resp, ok := <-changes
		if !ok {
			t.Fatalf("watch ended after %v: %v", seen, ctx.Err())
		}
		for _, ev := range resp.Events {
			seen = append(seen, ev.Type.String())
			if ev.Type == mvccpb.PUT && clientv3.LeaseID(ev.Kv.Lease) == old {
				t.Fatalf("held again under the revoked lease")
			}
		}
	}
	if fmt.Sprint(seen) != "[DELETE PUT]" {
		t.Fatalf("hold key changes %v, want [DELETE PUT]", seen)
	}
	if got := a.fleet.leaseID(); got == old {
		t.Fatalf("a still uses lease %x", got)
	}
	b.sync(t)
	if _, err := b.pool.Acquire("bob", nil); !errors.Is(err, ipam.ErrPoolExhausted) {
		t.Fatalf("bob while a holds alice again: %v, want ErrPoolExhausted", err)
	}
}

// TestStopSaysGoodbye: a gateway that stops cleanly drops its holds at
// once, not after the lease TTL.
func TestStopSaysGoodbye(t *testing.T) {
	cfg := ipam.Config{IPv4: pool4}
	a := startGateway(t, "a", cfg)
	a.acquire(t, "alice")
	a.acquire(t, "bob")
	cli := etcdClient(t)
	if got := len(keys(t, cli, "ipam/hold/")); got != 2 {
		t.Fatalf("%d holds, want 2", got)
	}
	a.fleet.Stop()
	a.fleet.Stop() // idempotent
	if err := a.fleet.Wait(); err != nil {
		t.Fatal(err)
	}
	if got := keys(t, cli, "ipam/hold/"); len(got) != 0 {
		t.Fatalf("holds left after Stop: %v", got)
	}
	if got := len(keys(t, cli, "ipam/ident/")); got != 2 {
		t.Fatalf("%d records after Stop, want 2 (sticky)", got)
	}
	if _, err := a.pool.Acquire("carol", nil); err == nil {
		t.Fatal("Acquire through a stopped fleet succeeded")
	}
}

// TestStaticAndGroupRangesFleetWide: static addresses and group ranges
// hold across gateways deciding at the same time.
func TestStaticAndGroupRangesFleetWide(t *testing.T) {
	ops := netip.MustParsePrefix("198.18.0.16/30")
	cfg := ipam.Config{
		IPv4:   netip.MustParsePrefix("198.18.0.0/24"),
		Static: map[string][]netip.Addr{"boss": {addr("198.18.0.5")}, "lead": {addr("198.18.0.17")}},
		Groups: []ipam.GroupRange{{Group: "ops", Prefixes: []netip.Prefix{ops}}},
	}
	gws := []*gateway{startGateway(t, "g0", cfg), startGateway(t, "g1", cfg), startGateway(t, "g2", cfg)}
	var (
		mu  sync.Mutex
		got = map[string]netip.Addr{}
		wg  sync.WaitGroup
	)
	acquire := func(gw int, id string, groups ...string) {
		wg.Go(func() {
			l, err := gws[gw].pool.Acquire(id, groups)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				got[id] = netip.Addr{}
				if !errors.Is(err, ipam.ErrPoolExhausted) {
					t.Errorf("%s: %v", id, err)
				}
				return
			}
			got[id] = l.IPv4.Addr()
		})
	}
	for i := range 30 {
		acquire(i%3, fmt.Sprint("user", i))
	}
	// ops has .16-.19, .17 is lead's: three for four members.
	for i := range 4 {
		acquire(i%3, fmt.Sprint("op", i), "ops")
	}
	acquire(1, "boss")
	acquire(2, "lead", "ops")
	wg.Wait()

	if got["boss"] != addr("198.18.0.5") || got["lead"] != addr("198.18.0.17") {
		t.Fatalf("boss got %v, lead %v", got["boss"], got["lead"])
	}
	taken := map[netip.Addr]string{}
	exhausted := 0
	for id, a := range got {
		if !a.IsValid() {
			exhausted++
			if !strings.HasPrefix(id, "op") {
				t.Errorf("%s got no address", id)
			}
			continue
		}
		if other, dup := taken[a]; dup {
			t.Errorf("%v to %s and %s", a, other, id)
		}
		taken[a] = id
		switch {
		case strings.HasPrefix(id, "op") && (!ops.Contains(a) || a == addr("198.18.0.17")):
			t.Errorf("%s got %v, want from %v but not lead's", id, a, ops)
		case strings.HasPrefix(id, "user") && (ops.Contains(a) || a == addr("198.18.0.5")):
			t.Errorf("%s got %v, in the ops range or boss's", id, a)
		}
	}
	if exhausted != 1 {
		t.Errorf("%d ops members without an address, want 1: %v", exhausted, got)
	}
}

func TestConfigValidate(t *testing.T) {
	good := Config{Endpoints: []string{"127.0.0.1:2379"}, Name: "gw1"}
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string // substring of the error; "" means valid
	}{
		{"minimal", func(*Config) {}, ""},
		{"urls", func(c *Config) { c.Endpoints = []string{"http://etcd1:2379", "http://[::1]:2379"} }, ""},
		{"no endpoints", func(c *Config) { c.Endpoints = nil }, "endpoints: no etcd endpoint"},
		{"no port", func(c *Config) { c.Endpoints = []string{"etcd1"} }, "endpoints[0]"},
		{"bad port", func(c *Config) { c.Endpoints = []string{"a:1", "etcd1:99999"} }, "endpoints[1]"},
		{"https without ca", func(c *Config) { c.Endpoints = []string{"https://etcd1:2379"} }, "https without ca_file"},
		{"scheme", func(c *Config) { c.Endpoints = []string{"unix://etcd1:2379"} }, "scheme"},
		{"no name", func(c *Config) { c.Name = "" }, "name: required"},
		{"slash in name", func(c *Config) { c.Name = "a/b" }, "name:"},
		{"space in name", func(c *Config) { c.Name = "a b" }, "name:"},
		{"prefix", func(c *Config) { c.Prefix = "/twoway" }, "prefix:"},
		{"ttl unitless", func(c *Config) { c.LeaseTTL = 10 }, "lease_ttl"},
		{"ttl fraction", func(c *Config) { c.LeaseTTL = 2500 * time.Millisecond }, "lease_ttl: 2.5s is not whole seconds"},
		{"ttl long", func(c *Config) { c.LeaseTTL = time.Hour }, "lease_ttl"},
		{"dial unitless", func(c *Config) { c.DialTimeout = 5 }, "dial_timeout: 5ns is too short: write durations with a unit"},
		{"serve cached", func(c *Config) { c.StoreUnreachable = StoreServeCached }, ""},
		{"store unreachable", func(c *Config) { c.StoreUnreachable = "wait" }, `store_unreachable: "wait": want "refuse" or "serve-cached"`},
		{"cert without key", func(c *Config) { c.CertFile = "c.pem" }, "cert_file/key_file: set both"},
		{"cert without ca", func(c *Config) { c.CertFile, c.KeyFile = "c.pem", "k.pem" }, "ca_file: required with cert_file"},
		{"ca missing", func(c *Config) { c.CAFile = "/nonexistent/ca.pem" }, "ca_file:"},
		{"http with ca", func(c *Config) { c.CAFile = "/nonexistent/ca.pem"; c.Endpoints = []string{"http://etcd1:2379"} }, "use https"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			tc.mod(&cfg)
			err := cfg.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want error containing %q", err, tc.want)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("%v does not wrap ErrInvalidConfig", err)
			}
			if _, err := New(cfg, nil); err == nil {
				t.Error("New accepted what Validate refused")
			}
		})
	}
}
