package router

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/policy"
	"github.com/twoway/twoway/tun"
	"github.com/twoway/twoway/tun/tuntest"
)

func TestFromPeerRules(t *testing.T) {
	for _, tc := range []struct {
		name string
		bob  bool // send as bob (no groups) instead of alice (eng)
		pkt  []byte
		want Verdict
	}{
		{"web tcp 443", false, tcp(aliceV4, web, 443), ToLAN},
		{"web tcp 80", false, tcp(aliceV4, web, 80), ToLAN},
		{"web tcp 22 not listed", false, tcp(aliceV4, web, 22), DropPolicy},
		{"web for non-member", true, tcp(bobV4, web, 443), DropPolicy},
		{"web udp 443: rule is tcp only", false, udp(aliceV4, 5000, web, 443), DropPolicy},
		{"web v6 443", false, tcp(aliceV6, web6, 443), ToLAN},
		{"web v6 80 not listed", false, tcp(aliceV6, web6, 80), DropPolicy},
		{"dns udp", true, udp(bobV4, 5000, dns, 53), ToLAN},
		{"dns udp v6", true, udp(bobV6, 5000, dns6, 53), ToLAN},
		{"dns tcp: rule is udp only", true, tcp(bobV4, dns, 53), DropPolicy},
		{"dns wrong port", true, udp(bobV4, 5000, dns, 54), DropPolicy},
		{"ping v4", true, tuntest.ICMPEcho(bobV4, web, 1, 1, nil), ToLAN},
		{"ping v6", true, tuntest.ICMPEcho(bobV6, web6, 1, 1, nil), ToLAN},
		{"ping outside", true, tuntest.ICMPEcho(bobV4, other, 1, 1, nil), DropPolicy},
		{"deny rule first", false, tuntest.ICMPEcho(aliceV4, secret, 1, 1, nil), DropPolicy},
		{"deny rule beats web", false, tcp(aliceV4, secret, 443), DropPolicy},
		{"default deny", false, udp(aliceV4, 5000, other, 53), DropPolicy},
		{"bulk any udp port", false, udp(aliceV4, 5000, bulk, 31337), ToLAN},
		{"other proto to any-proto rule", false, withProto(udp(aliceV4, 1, netip.MustParseAddr("198.19.2.1"), 2), 47), ToLAN},
		{"other proto to udp rule", false, withProto(udp(aliceV4, 1, bulk, 2), 47), DropPolicy},
		{"icmp protocol number in v6 is not icmp", true, withProto(tuntest.ICMPEcho(bobV6, web6, 1, 1, nil), 1), DropPolicy},
		{"link-local v6 dst", false, udp(aliceV6, 5353, netip.MustParseAddr("fe80::1"), 5353), DropLinkLocal},
		{"mld to ff02::16", false, tuntest.ICMPEcho(netip.MustParseAddr("fe80::2"), netip.MustParseAddr("ff02::16"), 1, 1, nil), DropLinkLocal},
		{"limited broadcast", false, udp(aliceV4, 68, netip.MustParseAddr("255.255.255.255"), 67), DropLinkLocal},
		{"v4 link-local", false, udp(aliceV4, 1, netip.MustParseAddr("169.254.1.1"), 2), DropLinkLocal},
		{"mdns v4", false, udp(aliceV4, 5353, netip.MustParseAddr("224.0.0.251"), 5353), DropLinkLocal},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Config{})
			p := e.alice
			if tc.bob {
				p = e.bob
			}
			if got := fromPeer(t, e.r, p, tc.pkt); got != tc.want {
				t.Fatalf("verdict %v, want %v", got, tc.want)
			}
			out := e.lan.take()
			if tc.want == ToLAN {
				if len(out) != 1 || !bytes.Equal(out[0], tc.pkt) {
					t.Fatalf("LAN got %d packets, want the packet unchanged", len(out))
				}
			} else if len(out) != 0 {
				t.Fatalf("dropped packet reached the LAN")
			}
			s := e.r.Stats()
			if s.ToLAN+s.Dropped() != 1 {
				t.Fatalf("stats %+v do not count exactly one packet", s)
			}
		})
	}
}

func TestAntiSpoofing(t *testing.T) {
	e := newEnv(t, Config{})
	for _, tc := range []struct {
		name string
		pkt  []byte
	}{
		{"v4 other client's source", udp(bobV4, 5000, dns, 53)},
		{"v4 foreign source", udp(netip.MustParseAddr("198.19.0.99"), 5000, dns, 53)},
		{"v4 unassigned pool source", udp(netip.MustParseAddr("198.18.100.77"), 5000, dns, 53)},
		{"v6 other client's source", udp(bobV6, 5000, dns6, 53)},
		{"v6 link-local source", udp(netip.MustParseAddr("fe80::2"), 5000, dns6, 53)},
		{"v6 same /64, other host", udp(netip.MustParseAddr("2001:db8:100::99"), 5000, dns6, 53)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := fromPeer(t, e.r, e.alice, tc.pkt); got != DropSpoof {
				t.Fatalf("verdict %v, want spoof", got)
			}
		})
	}
	if s := e.r.Stats(); s.Spoof != 6 || s.ToLAN != 0 {
		t.Fatalf("stats %+v", s)
	}
	if len(e.lan.take()) != 0 {
		t.Fatal("spoofed packet reached the LAN")
	}
	// The same packets from their real owners pass.
	if v := fromPeer(t, e.r, e.alice, udp(aliceV6, 5000, dns6, 53)); v != ToLAN {
		t.Fatalf("alice's own IPv6 source: %v", v)
	}
}

func TestClientToClient(t *testing.T) {
	for _, enabled := range []bool{false, true} {
		t.Run(fmt.Sprint("enabled=", enabled), func(t *testing.T) {
			// A policy that allows everything: peer-to-peer traffic
			// must still follow only the client-to-client switch.
			allowAll := funcPolicy(func(*pki.Identity, policy.Target) policy.Decision { return policy.Decision{Allow: true, Rule: "all"} })
			e := newEnv(t, Config{ClientToClient: enabled, Policy: allowAll})
			pkts := [][]byte{
				tuntest.ICMPEcho(aliceV4, bobV4, 7, 1, []byte("hi bob")),
				udp(aliceV6, 1000, bobV6, 2000),
			}
			want := DropClientToClient
			if enabled {
				want = ToPeer
			}
			for _, pkt := range pkts {
				if v := fromPeer(t, e.r, e.alice, pkt); v != want {
					t.Fatalf("verdict %v, want %v", v, want)
				}
			}
			if len(e.lan.take()) != 0 {
				t.Fatal("peer-to-peer packet went to the LAN")
			}
			if !enabled {
				if n := e.bob.Queued(); n != 0 {
					t.Fatalf("bob has %d queued", n)
				}
				return
			}
			got, err := e.bob.Dequeue(make([][]byte, 0, 8))
			if err != nil || len(got) != 2 || !bytes.Equal(got[0], pkts[0]) || !bytes.Equal(got[1], pkts[1]) {
				t.Fatalf("bob dequeued %d packets (err %v), want both unchanged", len(got), err)
			}
			if n := e.alice.Queued(); n != 0 {
				t.Fatalf("alice has %d queued", n)
			}
		})
	}
}

func TestFromLANRoutesByDestination(t *testing.T) {
	e := newEnv(t, Config{})
	toAlice := udp(dns, 53, aliceV4, 5000)
	toAlice6 := tuntest.ICMPEchoReply(web6, aliceV6, 1, 1, nil)
	toBob := tcp(web, bobV4, 40000)
	padded := append(udp(dns6, 53, bobV6, 1), 0, 0, 0) // trailing bytes past the IP length
	vs := make([]Verdict, 7)
	e.r.FromLAN(bufs(toAlice, toBob, toAlice6, udp(dns, 53, netip.MustParseAddr("198.18.100.99"), 1), padded, []byte{0x45, 0}, nil), tun.Offset, vs)
	want := []Verdict{ToPeer, ToPeer, ToPeer, DropNoRoute, ToPeer, DropMalformed, DropMalformed}
	if fmt.Sprint(vs) != fmt.Sprint(want) {
		t.Fatalf("verdicts %v, want %v", vs, want)
	}
	got, err := e.alice.Dequeue(make([][]byte, 0, 8))
	if err != nil || len(got) != 2 || !bytes.Equal(got[0], toAlice) || !bytes.Equal(got[1], toAlice6) {
		t.Fatalf("alice got %d packets, err %v", len(got), err)
	}
	got, err = e.bob.Dequeue(make([][]byte, 0, 8))
	if err != nil || len(got) != 2 || !bytes.Equal(got[0], toBob) || !bytes.Equal(got[1], padded[:len(padded)-3]) {
		t.Fatalf("bob got %d packets, err %v", len(got), err)
	}
	if s := e.r.Stats(); s.ToPeer != 4 || s.NoRoute != 1 || s.Malformed != 2 {
		t.Fatalf("stats %+v", s)
	}
}

// A peer that never drains its queue must not hold up anybody: FromLAN
// returns at once, the other peer gets its packets, and the overflow is
// counted.
func TestSlowPeerDoesNotBlockOthers(t *testing.T) {
	const qlen = 16
	e := newEnv(t, Config{QueueLen: qlen})
	var batch [][]byte
	for i := range 100 {
		batch = append(batch, udp(dns, 53, aliceV4, uint16(1000+i))) // alice never reads
		if i%10 == 0 {
			batch = append(batch, udp(dns, 53, bobV4, uint16(1000+i)))
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 3 {
			e.r.FromLAN(bufs(batch...), tun.Offset, nil)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("FromLAN blocked on a full queue")
	}
	got, err := e.bob.Dequeue(make([][]byte, 0, 64))
	if err != nil || len(got) != qlen {
		t.Fatalf("bob got %d packets (err %v), want his queue's %d", len(got), err, qlen)
	}
	s := e.r.Stats()
	// 300 for alice + 30 for bob; alice and bob each had qlen slots.
	if s.ToPeer != 2*qlen || s.Queue != 330-2*qlen {
		t.Fatalf("stats %+v, want %d delivered and %d queue drops", s, 2*qlen, 330-2*qlen)
	}
	if e.alice.Queued() != qlen {
		t.Fatalf("alice queue %d", e.alice.Queued())
	}
}

func TestSetPolicyTakesEffect(t *testing.T) {
	allow := true
	var mu sync.Mutex
	calls := 0
	mk := func(ok bool) Policy {
		return funcPolicy(func(*pki.Identity, policy.Target) policy.Decision {
			mu.Lock()
			calls++
			mu.Unlock()
			return policy.Decision{Allow: ok, Rule: fmt.Sprint("allow=", ok)}
		})
	}
	e := newEnv(t, Config{Policy: mk(allow)})
	pkt := udp(aliceV4, 5000, dns, 53)
	for range 5 {
		if v := fromPeer(t, e.r, e.alice, pkt); v != ToLAN {
			t.Fatalf("verdict %v under allowing policy", v)
		}
	}
	if calls != 1 {
		t.Fatalf("policy evaluated %d times for one flow, want 1 (cached)", calls)
	}
	e.r.SetPolicy(mk(false))
	for range 5 {
		if v := fromPeer(t, e.r, e.alice, pkt); v != DropPolicy {
			t.Fatalf("verdict %v after SetPolicy to deny", v)
		}
	}
	if calls != 2 {
		t.Fatalf("policy evaluated %d times, want 2", calls)
	}
	// And with the real policy: removing alice's group rule takes effect.
	e2 := newEnv(t, Config{})
	web443 := tcp(aliceV4, web, 443)
	if v := fromPeer(t, e2.r, e2.alice, web443); v != ToLAN {
		t.Fatalf("before: %v", v)
	}
	cfg := testPolicyConfig
	cfg.Rules = append([]policy.Rule(nil), cfg.Rules...)
	cfg.Rules[1].Groups = []string{"nobody"}
	p2, err := policy.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e2.r.SetPolicy(p2)
	if v := fromPeer(t, e2.r, e2.alice, web443); v != DropPolicy {
		t.Fatalf("after removing the rule: %v", v)
	}
}

func TestFragments(t *testing.T) {
	e := newEnv(t, Config{})
	// dns allows udp to port 53 only; bulk allows udp to every port.
	big := udp(aliceV4, 5000, dns, 53)
	for _, tc := range []struct {
		name string
		pkt  []byte
		want Verdict
	}{
		{"v4 first fragment has ports", fragment4(big, 0, true, 8), ToLAN},
		{"v4 first fragment to wrong port", fragment4(udp(aliceV4, 5000, dns, 54), 0, true, 8), DropPolicy},
		{"v4 later fragment: port 0 fails a port rule", fragment4(big, 1, false, 8), DropPolicy},
		{"v4 later fragment passes an any-port rule", fragment4(udp(aliceV4, 5000, bulk, 9), 1, true, 8), ToLAN},
		{"v4 later fragment with no data", fragment4(udp(aliceV4, 5000, bulk, 9), 100, false, 0), ToLAN},
		{"v4 first fragment without ports", fragment4(big, 0, true, 2), DropMalformed},
		{"v6 first fragment", ext6(udp(aliceV6, 5000, dns6, 53), fragHdr(0, true)), ToLAN},
		{"v6 atomic fragment", ext6(udp(aliceV6, 5000, dns6, 53), fragHdr(0, false)), ToLAN},
		{"v6 later fragment: port 0", ext6(udp(aliceV6, 5000, dns6, 53), fragHdr(3, false)), DropPolicy},
		{"v6 later fragment, icmp rule any port", ext6(tuntest.ICMPEcho(aliceV6, web6, 1, 1, nil), fragHdr(3, false)), ToLAN},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := fromPeer(t, e.r, e.alice, tc.pkt); got != tc.want {
				t.Fatalf("verdict %v, want %v", got, tc.want)
			}
		})
	}
}

func TestIPv6ExtensionHeaders(t *testing.T) {
	e := newEnv(t, Config{})
	ok := udp(aliceV6, 5000, dns6, 53)
	bad := udp(aliceV6, 5000, dns6, 54)
	long := make([][]byte, maxExtHeaders+1)
	for i := range long {
		long[i] = destOpts()
	}
	for _, tc := range []struct {
		name string
		pkt  []byte
		want Verdict
	}{
		{"hop-by-hop", ext6(ok, hopByHop()), ToLAN},
		{"hop-by-hop hides a denied port", ext6(bad, hopByHop()), DropPolicy},
		{"hbh + dest opts + fragment", ext6(ok, hopByHop(), destOpts(), fragHdr(0, true)), ToLAN},
		{"routing header, no segments left", ext6(ok, routing(0)), ToLAN},
		{"routing header with segments left", ext6(ok, routing(1)), DropMalformed},
		{"hop-by-hop not first", ext6(ok, destOpts(), hopByHop()), DropMalformed},
		{"too many headers", ext6(ok, long...), DropMalformed},
		{"max headers", ext6(ok, long[:maxExtHeaders]...), ToLAN},
		{"ext header past the end", func() []byte {
			p := ext6(ok, destOpts())
			p[41] = 200 // claims 1608 bytes
			return p
		}(), DropMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := fromPeer(t, e.r, e.alice, tc.pkt); got != tc.want {
				t.Fatalf("verdict %v, want %v", got, tc.want)
			}
		})
	}
}

func TestMalformed(t *testing.T) {
	e := newEnv(t, Config{})
	good4 := udp(aliceV4, 5000, dns, 53)
	good6 := udp(aliceV6, 5000, dns6, 53)
	mod := func(p []byte, f func(p []byte)) []byte {
		p = bytes.Clone(p)
		f(p)
		return p
	}
	lsrr := func() []byte {
		// IHL 7: 8 bytes of options, a loose source route.
		p := append(bytes.Clone(good4[:20]), 131, 7, 4, 0, 0, 0, 0, 1)
		p = append(p, good4[20:]...)
		p[0] = 0x47
		p[3] = byte(len(p))
		return p
	}()
	for name, pkt := range map[string][]byte{
		"empty":                {},
		"version 5":            mod(good4, func(p []byte) { p[0] = 0x55 }),
		"version 0":            mod(good4, func(p []byte) { p[0] = 0x05 }),
		"v4 short":             good4[:19],
		"v4 ihl 4":             mod(good4, func(p []byte) { p[0] = 0x44 }),
		"v4 ihl past end":      mod(good4, func(p []byte) { p[0] = 0x4f }),
		"v4 total > len":       mod(good4, func(p []byte) { p[3] += 1 }),
		"v4 total < ihl":       mod(good4, func(p []byte) { p[2], p[3] = 0, 19 }),
		"v4 truncated udp":     fragment4(good4, 0, false, 7),
		"v4 truncated tcp":     fragment4(tcp(aliceV4, web, 443), 0, false, 19),
		"v4 tcp data offset":   mod(tcp(aliceV4, web, 443), func(p []byte) { p[32] = 0xf0 }),
		"v4 reserved flag":     mod(good4, func(p []byte) { p[6] |= 0x80 }),
		"v4 source route":      lsrr,
		"v4 bad option length": mod(lsrr, func(p []byte) { p[21] = 1 }),
		"v4 loopback dst":      udp(aliceV4, 1, netip.MustParseAddr("127.0.0.1"), 53),
		"v4 unspecified dst":   udp(aliceV4, 1, netip.MustParseAddr("0.0.0.0"), 53),
		"v4 icmp truncated":    fragment4(tuntest.ICMPEcho(aliceV4, web, 1, 1, nil), 0, false, 3),
		"v6 short":             good6[:39],
		"v6 payload > len":     mod(good6, func(p []byte) { p[5] += 1 }),
		"v6 jumbo":             mod(good6, func(p []byte) { p[4], p[5] = 0, 0 }),
		"v6 truncated udp":     mod(good6[:47], func(p []byte) { p[4], p[5] = 0, 7 }),
		"v6 mapped dst": mod(good6, func(p []byte) {
			m := netip.MustParseAddr("::ffff:198.19.0.53").As16()
			copy(p[24:40], m[:])
		}),
		"v6 loopback dst":  udp(aliceV6, 1, netip.IPv6Loopback(), 53),
		"v6 multicast src": udp(netip.MustParseAddr("ff0e::1"), 1, dns6, 53),
	} {
		t.Run(name, func(t *testing.T) {
			if got := fromPeer(t, e.r, e.alice, pkt); got != DropMalformed {
				t.Fatalf("verdict %v, want malformed", got)
			}
		})
	}
	// Too short for the offset: malformed, not a panic.
	vs := make([]Verdict, 1)
	if err := e.r.FromPeer(e.alice, [][]byte{make([]byte, 3)}, tun.Offset, vs); err != nil || vs[0] != DropMalformed {
		t.Fatalf("short buffer: %v %v", vs[0], err)
	}
	e.r.FromLAN([][]byte{make([]byte, 3)}, tun.Offset, vs)
	if vs[0] != DropMalformed {
		t.Fatalf("short LAN buffer: %v", vs[0])
	}
	if len(e.lan.take()) != 0 {
		t.Fatal("malformed packet reached the LAN")
	}
}

func TestDenialLogsAreRateLimited(t *testing.T) {
	rec := &logRecorder{}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r, err := New(Config{LAN: &recLAN{}, Policy: testPolicy(t), LogPerSecond: 3, Now: func() time.Time { return now }}, slog.New(rec))
	if err != nil {
		t.Fatal(err)
	}
	p := mustAddPeer(t, r, bob, bobV4)
	denied := tcp(bobV4, web, 443)
	var batch [][]byte
	for range 10 {
		batch = append(batch, denied)
	}
	if err := r.FromPeer(p, bufs(batch...), tun.Offset, nil); err != nil {
		t.Fatal(err)
	}
	logs := rec.attrs()
	if len(logs) != 3 {
		t.Fatalf("%d log lines for 10 denials, want 3", len(logs))
	}
	l := logs[0]
	if l["peer"] != "bob" || l["reason"] != "policy" || l["proto"] != "tcp" || l["src"] != "198.18.100.3:40000" ||
		l["dst"] != "198.19.0.10:443" || l["rule"] != policy.DefaultDeny {
		t.Fatalf("log line %v", l)
	}
	// A second later the next line reports what was suppressed.
	now = now.Add(time.Second)
	spoof := udp(aliceV4, 1, dns, 53)
	if err := r.FromPeer(p, bufs(spoof), tun.Offset, nil); err != nil {
		t.Fatal(err)
	}
	logs = rec.attrs()
	if len(logs) != 4 || logs[3]["reason"] != "spoof" || logs[3]["suppressed"] != "7" || logs[3]["level"] != "WARN" {
		t.Fatalf("log lines %v", logs)
	}
	// Suppressed drops are reported when the peer goes away.
	for range 5 {
		r.FromPeer(p, bufs(denied), tun.Offset, nil)
	}
	r.RemovePeer(p)
	logs = rec.attrs()
	if last := logs[len(logs)-1]; last["suppressed"] != "3" || last["peer"] != "bob" {
		t.Fatalf("last log line %v, want 3 suppressed", last)
	}
	// A rule that denies explicitly is named.
	p2 := mustAddPeer(t, r, alice, aliceV4)
	now = now.Add(time.Hour)
	r.FromPeer(p2, bufs(udp(aliceV4, 1, secret, 53)), tun.Offset, nil)
	logs = rec.attrs()
	if last := logs[len(logs)-1]; !strings.Contains(last["rule"], "no-secret") {
		t.Fatalf("log line %v, want the deny rule named", last)
	}
}

func TestSharedAddressLastPeerWins(t *testing.T) {
	r, err := New(Config{LAN: &recLAN{}, Policy: testPolicy(t)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	old := mustAddPeer(t, r, alice, aliceV4)
	reconnect := mustAddPeer(t, r, alice, aliceV4)
	pkt := udp(dns, 53, aliceV4, 5000)
	fromLAN(r, pkt)
	if old.Queued() != 0 || reconnect.Queued() != 1 {
		t.Fatalf("queued old=%d new=%d, want the newest peer to get it", old.Queued(), reconnect.Queued())
	}
	// The new session ends first: the old one gets the traffic back.
	r.RemovePeer(reconnect)
	fromLAN(r, pkt)
	if old.Queued() != 1 {
		t.Fatalf("old peer queued %d", old.Queued())
	}
	r.RemovePeer(old)
	if v := fromLAN(r, pkt); v != DropNoRoute {
		t.Fatalf("after both left: %v", v)
	}
	if r.Peers() != 0 {
		t.Fatalf("%d peers left", r.Peers())
	}
}

func TestRemovePeer(t *testing.T) {
	e := newEnv(t, Config{})
	fromLAN(e.r, udp(dns, 53, aliceV4, 5000))
	pkts, err := e.alice.Dequeue(nil)
	if err != nil || len(pkts) != 1 {
		t.Fatalf("first Dequeue: %d packets, %v", len(pkts), err)
	}
	errc := make(chan error, 1)
	go func() {
		// Blocks on the empty queue until the removal (or sees it).
		_, err := e.alice.Dequeue(pkts)
		errc <- err
	}()
	e.r.RemovePeer(e.alice)
	e.r.RemovePeer(e.alice) // idempotent
	if err := <-errc; !errors.Is(err, ErrPeerClosed) {
		t.Fatalf("Dequeue after RemovePeer: %v", err)
	}
	if err := e.r.FromPeer(e.alice, bufs(udp(aliceV4, 1, dns, 53)), tun.Offset, nil); !errors.Is(err, ErrPeerClosed) {
		t.Fatalf("FromPeer after RemovePeer: %v", err)
	}
	if v := fromLAN(e.r, udp(dns, 53, aliceV4, 5000)); v != DropNoRoute {
		t.Fatalf("FromLAN after RemovePeer: %v", v)
	}
	e.r.Close()
	if _, err := e.bob.Dequeue(nil); !errors.Is(err, ErrPeerClosed) {
		t.Fatalf("Dequeue after Close: %v", err)
	}
	if _, err := e.r.AddPeer(alice, []netip.Addr{aliceV4}); !errors.Is(err, ErrPeerClosed) {
		t.Fatalf("AddPeer after Close: %v", err)
	}
}

func TestConfigAndAddPeerErrors(t *testing.T) {
	pol := testPolicy(t)
	for name, cfg := range map[string]Config{
		"no LAN":     {Policy: pol},
		"no policy":  {LAN: &recLAN{}},
		"queue":      {LAN: &recLAN{}, Policy: pol, QueueLen: -1},
		"huge cache": {LAN: &recLAN{}, Policy: pol, FlowCacheSize: 1 << 21},
	} {
		if _, err := New(cfg, nil); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: New = %v, want ErrInvalidConfig", name, err)
		}
	}
	r, err := New(Config{LAN: &recLAN{}, Policy: pol}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, addrs := range map[string][]netip.Addr{
		"none":        nil,
		"invalid":     {{}},
		"zone":        {netip.MustParseAddr("fe80::1%eth0")},
		"mapped":      {netip.MustParseAddr("::ffff:198.18.0.1")},
		"multicast":   {netip.MustParseAddr("224.1.1.1")},
		"unspecified": {netip.IPv4Unspecified()},
	} {
		if _, err := r.AddPeer(alice, addrs); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("AddPeer %s: %v", name, err)
		}
	}
	if _, err := r.AddPeer(nil, []netip.Addr{aliceV4}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("AddPeer nil identity: %v", err)
	}
}

// TestThroughTUNDevice runs both directions against the in-memory TUN
// device, with the buffer layout the tunnel uses.
func TestThroughTUNDevice(t *testing.T) {
	dev := tuntest.New(tuntest.Options{})
	defer dev.Close()
	e := newEnv(t, Config{LAN: dev})
	out := udp(aliceV4, 5000, dns, 53)
	if err := e.r.FromPeer(e.alice, bufs(out, tcp(aliceV4, secret, 22)), tun.Offset, nil); err != nil {
		t.Fatal(err)
	}
	got := <-dev.Outbound
	p, err := tuntest.Parse(got)
	if err != nil || p.Dst != ap(dns, 53) || p.Src != ap(aliceV4, 5000) {
		t.Fatalf("LAN got %+v, %v", p, err)
	}
	if len(dev.Outbound) != 0 {
		t.Fatal("denied packet reached the device")
	}

	// LAN side: read the device the way the gateway does.
	reply := udp(dns, 53, aliceV4, 5000)
	dev.Inject(reply)
	rb := make([][]byte, dev.BatchSize())
	for i := range rb {
		rb[i] = make([]byte, tun.BufferSize)
	}
	sizes := make([]int, len(rb))
	n, err := dev.Read(rb, sizes, tun.Offset)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		rb[i] = rb[i][:tun.Offset+sizes[i]]
	}
	e.r.FromLAN(rb[:n], tun.Offset, nil)
	pkts, err := e.alice.Dequeue(make([][]byte, 0, 4))
	if err != nil || len(pkts) != 1 || !bytes.Equal(pkts[0], reply) {
		t.Fatalf("alice got %d packets, %v", len(pkts), err)
	}
}

// TestConcurrentTraffic runs peers, the LAN reader, policy swaps and peer
// churn at once, for the race detector, and checks the books balance.
func TestConcurrentTraffic(t *testing.T) {
	e := newEnv(t, Config{QueueLen: 64})
	const rounds = 200
	var readers sync.WaitGroup
	for _, p := range []*Peer{e.alice, e.bob} {
		readers.Go(func() {
			pkts := make([][]byte, 0, 16)
			for {
				var err error
				if pkts, err = p.Dequeue(pkts); err != nil {
					return
				}
			}
		})
	}
	var senders sync.WaitGroup
	for _, tc := range []struct {
		p   *Peer
		src netip.Addr
	}{{e.alice, aliceV4}, {e.bob, bobV4}} {
		senders.Go(func() {
			b := bufs(udp(tc.src, 1, dns, 53), tcp(tc.src, web, 443), udp(tc.src, 1, aliceV4, 2))
			for range rounds {
				if err := e.r.FromPeer(tc.p, b, tun.Offset, nil); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	senders.Go(func() {
		b := bufs(udp(dns, 53, aliceV4, 1), udp(dns, 53, bobV4, 1), udp(dns, 53, netip.MustParseAddr("198.18.100.50"), 1))
		for range rounds {
			e.r.FromLAN(b, tun.Offset, nil)
		}
	})
	senders.Go(func() {
		for i := range rounds / 10 {
			e.r.SetPolicy(testPolicy(t))
			c := mustAddPeer(t, e.r, &pki.Identity{CommonName: fmt.Sprint("c", i)}, netip.MustParseAddr("198.18.100.50"))
			e.r.RemovePeer(c)
		}
	})
	senders.Wait()
	e.r.RemovePeer(e.alice)
	e.r.RemovePeer(e.bob)
	readers.Wait()
	s := e.r.Stats()
	total := uint64(rounds * 3 * 3)
	if s.ToLAN+s.ToPeer+s.Dropped() != total {
		t.Fatalf("stats %+v count %d packets, sent %d", s, s.ToLAN+s.ToPeer+s.Dropped(), total)
	}
	// alice (eng) may reach web; bob may not; both may reach dns.
	if s.ToLAN != 3*rounds {
		t.Fatalf("ToLAN %d, want %d", s.ToLAN, 3*rounds)
	}
	if n := len(e.lan.take()); uint64(n) != s.ToLAN {
		t.Fatalf("LAN got %d packets, stats say %d", n, s.ToLAN)
	}
}

// failLAN takes the first n packets of a batch, then fails.
type failLAN struct{ n int }

var errLANDown = errors.New("lan down")

func (l failLAN) Write(bufs [][]byte, offset int) (int, error) {
	return min(l.n, len(bufs)), errLANDown
}

func TestLANWriteErrorIsReturnedAndCounted(t *testing.T) {
	e := newEnv(t, Config{LAN: failLAN{n: 1}})
	err := e.r.FromPeer(e.alice, bufs(udp(aliceV4, 1, dns, 53), udp(aliceV4, 2, dns, 53), udp(aliceV4, 3, dns, 53)), tun.Offset, nil)
	if !errors.Is(err, errLANDown) {
		t.Fatalf("FromPeer = %v, want the LAN's error", err)
	}
	if s := e.r.Stats(); s.ToLAN != 1 || s.LANError != 2 {
		t.Fatalf("stats %+v, want 1 delivered and 2 LAN errors", s)
	}
}
