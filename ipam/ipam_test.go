package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

var (
	pool4 = netip.MustParsePrefix("198.18.100.0/24")
	pool6 = netip.MustParsePrefix("2001:db8:100::/64")
)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func newPool(t *testing.T, cfg Config) *Pool {
	t.Helper()
	p, err := New(cfg, nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

func acquire(t *testing.T, p *Pool, id string, groups ...string) Lease {
	t.Helper()
	l, err := p.Acquire(id, groups)
	if err != nil {
		t.Fatalf("Acquire(%q): %v", id, err)
	}
	return l
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // substring of the error; "" means valid
	}{
		{"both pools", Config{IPv4: pool4, IPv6: pool6}, ""},
		{"v4 only", Config{IPv4: pool4}, ""},
		{"v6 only", Config{IPv6: pool6}, ""},
		{"smallest v4", Config{IPv4: netip.MustParsePrefix("198.18.0.0/30")}, ""},
		{"no pool", Config{}, "no pool configured"},
		{"v6 in ipv4", Config{IPv4: pool6}, "not an IPv4 prefix"},
		{"v4 in ipv6", Config{IPv6: pool4}, "not an IPv6 prefix"},
		{"mapped v6", Config{IPv6: netip.MustParsePrefix("::ffff:198.18.0.0/120")}, "not an IPv6 prefix"},
		{"host bits", Config{IPv4: netip.MustParsePrefix("198.18.100.1/24")}, "host bits"},
		{"v4 too small", Config{IPv4: netip.MustParsePrefix("198.18.0.0/31")}, "too small"},
		{"v6 too small", Config{IPv6: netip.MustParsePrefix("2001:db8::/127")}, "too small"},
		{"gateway outside", Config{IPv4: pool4, Gateway: []netip.Addr{addr("198.18.101.1")}}, "gateway[0]: 198.18.101.1 is outside"},
		{"gateway network", Config{IPv4: pool4, Gateway: []netip.Addr{addr("198.18.100.0")}}, "network or broadcast"},
		{"gateway broadcast", Config{IPv4: pool4, Gateway: []netip.Addr{addr("198.18.100.255")}}, "network or broadcast"},
		{"gateway no v6 pool", Config{IPv4: pool4, Gateway: []netip.Addr{addr("2001:db8::1")}}, "no IPv6 pool"},
		{"two v4 gateways", Config{IPv4: pool4, Gateway: []netip.Addr{addr("198.18.100.1"), addr("198.18.100.2")}}, "second IPv4 gateway"},
		{"static outside", Config{IPv4: pool4, Static: map[string][]netip.Addr{"alice": {addr("10.0.0.1")}}}, `static["alice"]: 10.0.0.1 is outside`},
		{"static gateway", Config{IPv4: pool4, Static: map[string][]netip.Addr{"alice": {addr("198.18.100.1")}}}, "gateway's address"},
		{"static dup", Config{IPv4: pool4, Static: map[string][]netip.Addr{"alice": {addr("198.18.100.9")}, "bob": {addr("198.18.100.9")}}}, `also the static address of "alice"`},
		{"static two v4", Config{IPv4: pool4, Static: map[string][]netip.Addr{"alice": {addr("198.18.100.9"), addr("198.18.100.10")}}}, "two IPv4 addresses"},
		{"static empty name", Config{IPv4: pool4, Static: map[string][]netip.Addr{"": {addr("198.18.100.9")}}}, "empty identity name"},
		{"static zone", Config{IPv6: pool6, Static: map[string][]netip.Addr{"a": {addr("2001:db8:100::9%eth0")}}}, "zones"},
		{"group outside", Config{IPv4: pool4, Groups: []GroupRange{{Group: "ops", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/28")}}}}, "group[0].prefixes[0]: 10.0.0.0 is outside"},
		{"group larger", Config{IPv4: netip.MustParsePrefix("198.18.100.0/25"), Groups: []GroupRange{{Group: "ops", Prefixes: []netip.Prefix{netip.MustParsePrefix("198.18.100.0/24")}}}}, "larger than the pool"},
		{"group overlap", Config{IPv4: pool4, Groups: []GroupRange{
			{Group: "ops", Prefixes: []netip.Prefix{netip.MustParsePrefix("198.18.100.16/28")}},
			{Group: "dev", Prefixes: []netip.Prefix{netip.MustParsePrefix("198.18.100.24/29")}},
		}}, `overlaps 198.18.100.16/28 of group "ops"`},
		{"group twice", Config{IPv4: pool4, Groups: []GroupRange{
			{Group: "ops", Prefixes: []netip.Prefix{netip.MustParsePrefix("198.18.100.16/28")}},
			{Group: "ops", Prefixes: []netip.Prefix{netip.MustParsePrefix("198.18.100.32/28")}},
		}}, "listed twice"},
		{"group host bits", Config{IPv4: pool4, Groups: []GroupRange{{Group: "ops", Prefixes: []netip.Prefix{netip.MustParsePrefix("198.18.100.17/28")}}}}, "host bits"},
		{"group empty", Config{IPv4: pool4, Groups: []GroupRange{{Group: "ops"}}}, "no prefixes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
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
				t.Errorf("error %v does not wrap ErrInvalidConfig", err)
			}
			if _, err := New(tc.cfg, nil); err == nil {
				t.Errorf("New accepted what Validate refused")
			}
		})
	}
}

func TestAcquireLowestFreeAndGateway(t *testing.T) {
	p := newPool(t, Config{IPv4: pool4, IPv6: pool6})
	gw := p.Gateway()
	if len(gw) != 2 || gw[0] != netip.MustParsePrefix("198.18.100.1/24") || gw[1] != netip.MustParsePrefix("2001:db8:100::1/64") {
		t.Fatalf("Gateway() = %v", gw)
	}
	a := acquire(t, p, "alice")
	if a.IPv4 != netip.MustParsePrefix("198.18.100.2/24") || a.IPv6 != netip.MustParsePrefix("2001:db8:100::2/64") {
		t.Fatalf("alice got %v %v", a.IPv4, a.IPv6)
	}
	if got := a.Addrs(); len(got) != 2 || got[0] != addr("198.18.100.2") || got[1] != addr("2001:db8:100::2") {
		t.Fatalf("Addrs() = %v", got)
	}
	b := acquire(t, p, "bob")
	if b.IPv4.Addr() != addr("198.18.100.3") || b.IPv6.Addr() != addr("2001:db8:100::3") {
		t.Fatalf("bob got %v %v", b.IPv4, b.IPv6)
	}
}

func TestExplicitGatewayIsSkipped(t *testing.T) {
	p := newPool(t, Config{IPv4: pool4, Gateway: []netip.Addr{addr("198.18.100.3")}})
	var got []netip.Addr
	for i := range 3 {
		got = append(got, acquire(t, p, fmt.Sprint("user", i)).IPv4.Addr())
	}
	want := []netip.Addr{addr("198.18.100.1"), addr("198.18.100.2"), addr("198.18.100.4")}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if l := acquire(t, p, "v4only"); l.IPv6.IsValid() {
		t.Fatalf("IPv6 lease %v without an IPv6 pool", l.IPv6)
	}
}

func TestStaticAddresses(t *testing.T) {
	p := newPool(t, Config{
		IPv4: pool4, IPv6: pool6,
		Static: map[string][]netip.Addr{
			"alice":  {addr("198.18.100.2")},
			"server": {addr("198.18.100.50"), addr("2001:db8:100::50")},
		},
	})
	// alice's static address is reserved even while she is offline.
	b := acquire(t, p, "bob")
	if b.IPv4.Addr() != addr("198.18.100.3") {
		t.Fatalf("bob got %v, want .3 (.2 is alice's)", b.IPv4)
	}
	a := acquire(t, p, "alice")
	if a.IPv4.Addr() != addr("198.18.100.2") {
		t.Fatalf("alice got %v", a.IPv4)
	}
	// Without an IPv6 static, alice gets a dynamic IPv6 address.
	if a.IPv6.Addr() != addr("2001:db8:100::3") {
		t.Fatalf("alice IPv6 %v, want ::3 (::2 is bob's)", a.IPv6)
	}
	s := acquire(t, p, "server")
	if s.IPv4.Addr() != addr("198.18.100.50") || s.IPv6.Addr() != addr("2001:db8:100::50") {
		t.Fatalf("server got %v %v", s.IPv4, s.IPv6)
	}
}

func TestGroupRanges(t *testing.T) {
	ops := netip.MustParsePrefix("198.18.100.16/30")
	p := newPool(t, Config{
		IPv4: pool4, IPv6: pool6,
		Groups: []GroupRange{
			{Group: "ops", Prefixes: []netip.Prefix{ops}},
			{Group: "low", Prefixes: []netip.Prefix{netip.MustParsePrefix("198.18.100.0/29")}},
		},
	})
	// Members of ops get .16-.19; the range excludes nothing else.
	var got []netip.Addr
	for i := range 4 {
		got = append(got, acquire(t, p, fmt.Sprint("op", i), "staff", "ops").IPv4.Addr())
	}
	if fmt.Sprint(got) != "[198.18.100.16 198.18.100.17 198.18.100.18 198.18.100.19]" {
		t.Fatalf("ops members got %v", got)
	}
	if _, err := p.Acquire("op4", []string{"ops"}); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("fifth ops member: err = %v, want ErrPoolExhausted", err)
	}
	// Non-members skip both group ranges: "low" holds .0-.7, so the first
	// general address is .8.
	if a := acquire(t, p, "alice", "staff").IPv4.Addr(); a != addr("198.18.100.8") {
		t.Fatalf("non-member got %v, want 198.18.100.8", a)
	}
	// The "low" range starts at the network address; its members get .2
	// (.1 is the gateway).
	if a := acquire(t, p, "lowuser", "low").IPv4.Addr(); a != addr("198.18.100.2") {
		t.Fatalf("low member got %v", a)
	}
	// A member of both gets the first configured group's range.
	p2 := newPool(t, Config{IPv4: pool4, Groups: []GroupRange{
		{Group: "ops", Prefixes: []netip.Prefix{ops}},
		{Group: "low", Prefixes: []netip.Prefix{netip.MustParsePrefix("198.18.100.0/29")}},
	}})
	if a := acquire(t, p2, "both", "low", "ops").IPv4.Addr(); !ops.Contains(a) {
		t.Fatalf("member of both got %v, want from %v", a, ops)
	}
	// The ops range has no IPv6 part, so ops members' IPv6 addresses come
	// from the general pool, in order after the earlier leases.
	p.Release(acquire(t, p, "op0", "ops")) // op0 still holds its first lease
	if as := p.Assignments(); as[0].Identity != "alice" || as[1].Identity != "lowuser" {
		t.Fatalf("assignments %+v", as)
	}
	for _, as := range p.Assignments() {
		if !as.IPv6.IsValid() || !pool6.Contains(as.IPv6) {
			t.Fatalf("%s has IPv6 %v", as.Identity, as.IPv6)
		}
	}
}

func TestSharedLeaseIsRefcounted(t *testing.T) {
	p := newPool(t, Config{IPv4: netip.MustParsePrefix("198.18.0.0/30")})
	first := acquire(t, p, "alice")
	// A reconnect while the old session is still open gets the same lease.
	second := acquire(t, p, "alice")
	if first.IPv4 != second.IPv4 {
		t.Fatalf("reconnect got %v, first session has %v", second.IPv4, first.IPv4)
	}
	if as := p.Assignments(); len(as) != 1 || as[0].Sessions != 2 {
		t.Fatalf("Assignments = %+v", as)
	}
	p.Release(first)
	p.Release(first) // idempotent: must not drop the second session's hold
	if _, err := p.Acquire("bob", nil); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("bob while alice still holds the only address: err = %v", err)
	}
	p.Release(second)
	if as := p.Assignments(); as[0].Sessions != 0 {
		t.Fatalf("after both releases: %+v", as)
	}
	// Now offline, alice's address is reclaimed for bob.
	b := acquire(t, p, "bob")
	if b.IPv4 != first.IPv4 {
		t.Fatalf("bob got %v, want the reclaimed %v", b.IPv4, first.IPv4)
	}
	if _, err := p.Acquire("alice", nil); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("alice while bob holds the only address: err = %v", err)
	}
	p.Release(Lease{}) // zero lease: no-op
}

func TestStickyAndReclaimOrder(t *testing.T) {
	// /29: .1 gateway, .2-.6 for five clients.
	p := newPool(t, Config{IPv4: netip.MustParsePrefix("198.18.0.0/29")})
	leases := map[string]Lease{}
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		leases[id] = acquire(t, p, id)
	}
	// Release in the order c, a, e: c is reclaimed first, then a.
	for _, id := range []string{"c", "a", "e"} {
		p.Release(leases[id])
	}
	// e comes back: sticky, same address although it was free for others.
	if got := acquire(t, p, "e"); got.IPv4 != leases["e"].IPv4 {
		t.Fatalf("e got %v, had %v", got.IPv4, leases["e"].IPv4)
	}
	if got := acquire(t, p, "x"); got.IPv4 != leases["c"].IPv4 {
		t.Fatalf("x got %v, want c's %v (released first)", got.IPv4, leases["c"].IPv4)
	}
	if got := acquire(t, p, "y"); got.IPv4 != leases["a"].IPv4 {
		t.Fatalf("y got %v, want a's %v", got.IPv4, leases["a"].IPv4)
	}
	if _, err := p.Acquire("z", nil); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("z: err = %v, want ErrPoolExhausted", err)
	}
	// a lost its address: c and a's entries are gone, the rest remain.
	var ids []string
	for _, as := range p.Assignments() {
		ids = append(ids, as.Identity)
	}
	if fmt.Sprint(ids) != "[b d e x y]" {
		t.Fatalf("assignments %v", ids)
	}
}

func TestPrefersNeverUsedOverRemembered(t *testing.T) {
	p := newPool(t, Config{IPv4: pool4})
	a := acquire(t, p, "alice")
	p.Release(a)
	// .2 is free but remembered for alice; bob gets a never-used address.
	if b := acquire(t, p, "bob"); b.IPv4.Addr() != addr("198.18.100.3") {
		t.Fatalf("bob got %v", b.IPv4)
	}
	if again := acquire(t, p, "alice"); again.IPv4 != a.IPv4 {
		t.Fatalf("alice got %v, had %v", again.IPv4, a.IPv4)
	}
}

func TestGroupChangeMovesAddress(t *testing.T) {
	ops := netip.MustParsePrefix("198.18.100.16/28")
	p := newPool(t, Config{IPv4: pool4, Groups: []GroupRange{{Group: "ops", Prefixes: []netip.Prefix{ops}}}})
	l := acquire(t, p, "alice")
	p.Release(l)
	// alice's certificate now says she is in ops: her remembered general
	// address no longer fits, she must get one from the ops range.
	l2 := acquire(t, p, "alice", "ops")
	if !ops.Contains(l2.IPv4.Addr()) {
		t.Fatalf("alice in ops got %v", l2.IPv4)
	}
	if as := p.Assignments(); len(as) != 1 || as[0].IPv4 != l2.IPv4.Addr() {
		t.Fatalf("old address still assigned: %+v", as)
	}
}

func TestLargeIPv6PoolScan(t *testing.T) {
	// A group range covering most of the low end of a /64: the general
	// scan must jump over it, not walk it.
	big := netip.MustParsePrefix("2001:db8:100::/80")
	p := newPool(t, Config{IPv6: pool6, Groups: []GroupRange{{Group: "g", Prefixes: []netip.Prefix{big}}}})
	got := acquire(t, p, "alice").IPv6.Addr()
	if got != addr("2001:db8:100:0:1::") {
		t.Fatalf("got %v, want the first address after %v", got, big)
	}
}

func TestPersistence(t *testing.T) {
	state := filepath.Join(t.TempDir(), "leases.json")
	cfg := Config{IPv4: pool4, IPv6: pool6, StateFile: state}
	p := newPool(t, cfg)
	a := acquire(t, p, "alice")
	b := acquire(t, p, "bob")
	c := acquire(t, p, "carol")
	p.Release(a)
	p.Release(c)
	if runtime.GOOS != "windows" {
		fi, err := os.Stat(state)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("state file mode %v, want 0600", fi.Mode().Perm())
		}
	}
	before := p.Assignments()

	// "Restart": bob's session died with the old process.
	p2 := newPool(t, cfg)
	after := p2.Assignments()
	if len(after) != len(before) {
		t.Fatalf("after restart %+v, before %+v", after, before)
	}
	for i := range before {
		if before[i].Identity != after[i].Identity || before[i].IPv4 != after[i].IPv4 || before[i].IPv6 != after[i].IPv6 || after[i].Sessions != 0 {
			t.Fatalf("after restart %+v, before %+v", after[i], before[i])
		}
	}
	// Everyone gets their address back, whatever order they return in.
	for _, old := range []Lease{c, b, a} {
		if got := acquire(t, p2, old.Identity); got.IPv4 != old.IPv4 || got.IPv6 != old.IPv6 {
			t.Fatalf("%s got %v %v after restart, had %v %v", old.Identity, got.IPv4, got.IPv6, old.IPv4, old.IPv6)
		}
	}
	// The release order survives too, and identities online at the last
	// save count as released after everyone else.
	tiny := Config{IPv4: netip.MustParsePrefix("198.18.0.0/29"), StateFile: filepath.Join(t.TempDir(), "s.json")}
	q := newPool(t, tiny)
	held := map[string]Lease{}
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		held[id] = acquire(t, q, id)
	}
	q.Release(held["c"])
	q.Release(held["a"])
	x := acquire(t, q, "x") // reclaims c's address and saves
	if x.IPv4 != held["c"].IPv4 {
		t.Fatalf("x got %v, want c's %v", x.IPv4, held["c"].IPv4)
	}
	q2 := newPool(t, tiny)
	if y := acquire(t, q2, "y"); y.IPv4 != held["a"].IPv4 {
		t.Fatalf("after restart y got %v, want a's %v (released before the others went offline)", y.IPv4, held["a"].IPv4)
	}
}

func TestStateFileForgetsUnassignableLeases(t *testing.T) {
	state := filepath.Join(t.TempDir(), "leases.json")
	p := newPool(t, Config{IPv4: pool4, StateFile: state})
	acquire(t, p, "alice") // .2
	acquire(t, p, "bob")   // .3
	// Reconfigured: .3 is now carol's static address, and the pool moved
	// for IPv6 (none before).
	p2 := newPool(t, Config{IPv4: pool4, IPv6: pool6, StateFile: state,
		Static: map[string][]netip.Addr{"carol": {addr("198.18.100.3")}}})
	as := p2.Assignments()
	if len(as) != 1 || as[0].Identity != "alice" {
		t.Fatalf("assignments %+v, want alice only", as)
	}
	if got := acquire(t, p2, "bob"); got.IPv4.Addr() == addr("198.18.100.3") {
		t.Fatalf("bob got carol's static address")
	}
}

func TestCorruptStateFile(t *testing.T) {
	for name, content := range map[string]string{
		"garbage":       "not json",
		"truncated":     `{"version":1,"leases":[{"identity":"a"`,
		"version":       `{"version":2,"leases":[]}`,
		"unknown field": `{"version":1,"leases":[],"extra":true}`,
		"bad address":   `{"version":1,"leases":[{"identity":"a","ipv4":"300.1.1.1"}]}`,
		"wrong family":  `{"version":1,"leases":[{"identity":"a","ipv4":"2001:db8::1"}]}`,
		"no identity":   `{"version":1,"leases":[{"ipv4":"198.18.100.2"}]}`,
		"dup identity":  `{"version":1,"leases":[{"identity":"a","ipv4":"198.18.100.2"},{"identity":"a","ipv4":"198.18.100.3"}]}`,
		"dup address":   `{"version":1,"leases":[{"identity":"a","ipv4":"198.18.100.2"},{"identity":"b","ipv4":"198.18.100.2"}]}`,
		"trailing":      `{"version":1,"leases":[]} {}`,
		"future seq":    `{"version":1,"seq":1,"leases":[{"identity":"a","ipv4":"198.18.100.2","released":5}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			state := filepath.Join(t.TempDir(), "leases.json")
			if err := os.WriteFile(state, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := New(Config{IPv4: pool4, StateFile: state}, nil)
			if !errors.Is(err, ErrCorruptState) || !strings.Contains(err.Error(), state) {
				t.Fatalf("New = %v, want ErrCorruptState naming %s", err, state)
			}
			// Not silently reset: the file is untouched.
			if got, _ := os.ReadFile(state); string(got) != content {
				t.Fatalf("state file rewritten to %q", got)
			}
		})
	}
}

func TestUnwritableStateDir(t *testing.T) {
	state := filepath.Join(t.TempDir(), "missing-dir", "leases.json")
	_, err := New(Config{IPv4: pool4, StateFile: state}, nil)
	if err == nil || !strings.Contains(err.Error(), "missing-dir") {
		t.Fatalf("New = %v, want an error naming the directory", err)
	}
}

func TestEmptyIdentity(t *testing.T) {
	p := newPool(t, Config{IPv4: pool4})
	if _, err := p.Acquire("", nil); err == nil {
		t.Fatal("Acquire accepted an empty identity")
	}
}

// TestConcurrentAcquireRelease hammers one pool from many goroutines and
// checks the invariant that matters: no address is ever held by two
// identities at once, and every session of one identity sees one address.
func TestConcurrentAcquireRelease(t *testing.T) {
	state := filepath.Join(t.TempDir(), "leases.json")
	// /27: 29 client addresses for 40 identities, so reclaiming and
	// exhaustion both happen.
	p := newPool(t, Config{IPv4: netip.MustParsePrefix("198.18.0.0/27"), IPv6: pool6, StateFile: state})

	var mu sync.Mutex
	holder := map[netip.Addr]string{} // address -> identity holding it
	sessions := map[string]int{}      // identity -> open sessions
	var failures []string

	check := func(l Lease) {
		mu.Lock()
		defer mu.Unlock()
		sessions[l.Identity]++
		for _, a := range l.Addrs() {
			if h, ok := holder[a]; ok && h != l.Identity {
				failures = append(failures, fmt.Sprintf("%v held by %s and %s", a, h, l.Identity))
			}
			holder[a] = l.Identity
		}
	}
	// drop must be called before Release so the pool cannot hand the
	// address out before the test forgets it.
	drop := func(l Lease) {
		mu.Lock()
		defer mu.Unlock()
		sessions[l.Identity]--
		if sessions[l.Identity] == 0 {
			for _, a := range l.Addrs() {
				delete(holder, a)
			}
		}
	}

	const workers, rounds = 8, 300
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			var held []Lease
			for i := range rounds {
				id := fmt.Sprint("user", (w*7+i*13)%40)
				l, err := p.Acquire(id, nil)
				switch {
				case errors.Is(err, ErrPoolExhausted):
				case err != nil:
					mu.Lock()
					failures = append(failures, err.Error())
					mu.Unlock()
				default:
					check(l)
					held = append(held, l)
				}
				if len(held) > 3 || (i%5 == 0 && len(held) > 0) {
					drop(held[0])
					p.Release(held[0])
					held = held[1:]
				}
			}
			for _, l := range held {
				drop(l)
				p.Release(l)
			}
		})
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatalf("%d failures, first: %s", len(failures), failures[0])
	}
	for _, as := range p.Assignments() {
		if as.Sessions != 0 {
			t.Errorf("%s still has %d sessions", as.Identity, as.Sessions)
		}
	}
	// And the state written last is loadable and agrees.
	p2 := newPool(t, Config{IPv4: netip.MustParsePrefix("198.18.0.0/27"), IPv6: pool6, StateFile: state})
	if fmt.Sprint(p2.Assignments()) != fmt.Sprint(p.Assignments()) {
		t.Fatalf("reloaded %v\nwant %v", p2.Assignments(), p.Assignments())
	}
}

func TestStaticInsideGroupRange(t *testing.T) {
	ops := netip.MustParsePrefix("198.18.100.16/30")
	p := newPool(t, Config{IPv4: pool4,
		Static: map[string][]netip.Addr{"lead": {addr("198.18.100.16")}},
		Groups: []GroupRange{{Group: "ops", Prefixes: []netip.Prefix{ops}}}})
	// The static address is reserved: ops members start at .17.
	if a := acquire(t, p, "op1", "ops").IPv4.Addr(); a != addr("198.18.100.17") {
		t.Fatalf("op1 got %v", a)
	}
	// The static holder gets it whatever its groups.
	if a := acquire(t, p, "lead", "ops").IPv4.Addr(); a != addr("198.18.100.16") {
		t.Fatalf("lead got %v", a)
	}
}

// racingStore is the file store with another gateway in front of it: it
// lets the other gateway's decisions land just before the Pool's next
// Commit, as etcd would order them, and reports the conflict as a shared
// store must.
type racingStore struct {
	*fileStore
	commits int
	other   []Change // the other gateway's decisions, one per Commit
}

func (s *racingStore) Commit(ch Change) error {
	s.commits++
	if len(s.other) > 0 {
		o := s.other[0]
		s.other = s.other[1:]
		if err := s.fileStore.Commit(o); err != nil {
			return err
		}
		return fmt.Errorf("test: %w", ErrConflict)
	}
	return s.fileStore.Commit(ch)
}

func TestAcquireDecidesAgainAfterConflict(t *testing.T) {
	st := &racingStore{fileStore: newFileStore("", nil), other: []Change{
		// Another gateway takes the lowest address for bob...
		{Record: Record{Identity: "bob", IPv4: addr("198.18.100.2")}, Free: []netip.Addr{addr("198.18.100.2")}},
		// ...and then releases nothing but holds carol on .3.
		{Record: Record{Identity: "carol", IPv4: addr("198.18.100.3")}, Free: []netip.Addr{addr("198.18.100.3")}},
	}}
	p, err := NewWithStore(Config{IPv4: pool4, Groups: []GroupRange{
		{Group: "ops", Prefixes: []netip.Prefix{netip.MustParsePrefix("198.18.100.16/30")}},
	}}, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := acquire(t, p, "alice")
	// After the conflicts alice takes a free address a random few above
	// the lowest (.4), never a taken one or one of ops' range.
	got := a.IPv4.Addr()
	if st.commits != 3 || got == addr("198.18.100.2") || got == addr("198.18.100.3") || got.Less(addr("198.18.100.4")) ||
		netip.MustParsePrefix("198.18.100.16/30").Contains(got) || !pool4.Contains(got) {
		t.Fatalf("alice got %v after %d commits, want a free general address from .4 on after 3", a.IPv4, st.commits)
	}
	// bob is held by the other gateway: acquiring him here shares his
	// address, never moves it, although his certificate here says ops.
	if b := acquire(t, p, "bob", "ops"); b.IPv4.Addr() != addr("198.18.100.2") {
		t.Fatalf("bob got %v, holds .2 elsewhere", b.IPv4)
	}
	as := p.Assignments()
	if len(as) != 3 || as[1].Identity != "bob" || as[1].Sessions != 1 || as[2].Sessions != 0 {
		t.Fatalf("assignments %+v", as)
	}
}

func TestHeldElsewhereIsNeverReclaimed(t *testing.T) {
	st := newFileStore("", nil)
	p, err := NewWithStore(Config{IPv4: netip.MustParsePrefix("198.18.0.0/30"),
		Static: map[string][]netip.Addr{"boss": {addr("198.18.0.2")}}}, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Another gateway, configured before boss got a static address,
	// holds the only client address for alice.
	if err := st.Commit(Change{Record: Record{Identity: "alice", IPv4: addr("198.18.0.2")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Acquire("bob", nil); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("bob: err = %v, want ErrPoolExhausted", err)
	}
	if _, err := p.Acquire("boss", nil); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("boss while alice holds his static address: err = %v", err)
	}
	// Once alice is offline, the static address goes to its owner.
	if err := st.Release("alice"); err != nil {
		t.Fatal(err)
	}
	if l := acquire(t, p, "boss"); l.IPv4.Addr() != addr("198.18.0.2") {
		t.Fatalf("boss got %v", l.IPv4)
	}
}

// TestLowestFreeSkip: the skip-th free address above the lowest, jumping
// taken addresses and foreign group ranges, or the highest free one when
// there are fewer; skip 0 is the lowest.
func TestLowestFreeSkip(t *testing.T) {
	p, err := New(Config{IPv4: netip.MustParsePrefix("198.18.100.0/28"), Groups: []GroupRange{
		{Group: "ops", Prefixes: []netip.Prefix{netip.MustParsePrefix("198.18.100.4/30")}},
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	acquire(t, p, "bob") // .2
	for skip, want := range map[int]string{0: "198.18.100.3", 1: "198.18.100.8", 2: "198.18.100.9", 7: "198.18.100.14", 50: "198.18.100.14"} {
		p.mu.Lock()
		a, ok := p.lowestFree(0, "alice", nil, skip)
		p.mu.Unlock()
		if !ok || a != addr(want) {
			t.Errorf("skip %d: %v, want %s", skip, a, want)
		}
	}
}
