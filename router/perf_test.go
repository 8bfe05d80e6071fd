package router

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/policy"
	"github.com/twoway/twoway/tun"
	"github.com/twoway/twoway/tun/tuntest"
)

// TestFlowCacheMatchesUncached sends random packets through a router with a
// tiny flow cache (so entries collide and get evicted) and one without, while
// swapping policies, and compares both with the reference: tuntest.Parse
// (an independent parser) and a direct policy.Dial.
func TestFlowCacheMatchesUncached(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0))

	strict := testPolicy(t)
	loose, err := policy.New(policy.Config{Rules: []policy.Rule{
		{Name: "loose", Identities: []string{"*"}, Targets: []string{"198.19.0.0/16:53,80,443", "[2001:db8:200::]/64:22,443"}},
		{Name: "deny-web", Identities: []string{"bob"}, Action: "deny", Targets: []string{"198.19.0.10"}},
		{Name: "icmp", Groups: []string{"eng"}, Protocols: []string{"icmp"}, Targets: []string{"any"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	policies := []*policy.Policy{strict, loose}

	cached := newEnv(t, Config{Policy: strict, FlowCacheSize: 8})
	uncached := newEnv(t, Config{Policy: strict, FlowCacheSize: -1})
	current := strict

	dsts4 := []netip.Addr{web, dns, secret, bulk, other, netip.MustParseAddr("198.19.2.1"), netip.MustParseAddr("198.19.0.11")}
	dsts6 := []netip.Addr{web6, dns6, netip.MustParseAddr("2001:db8:200::99"), netip.MustParseAddr("2001:db8:300::1")}
	ports := []uint16{22, 53, 80, 443, 9999}

	for i := range 20000 {
		if i%97 == 0 {
			current = policies[rng.IntN(len(policies))]
			cached.r.SetPolicy(current)
			uncached.r.SetPolicy(current)
		}
		useBob := rng.IntN(2) == 0
		id, src := alice, aliceV4
		pc, pu := cached.alice, uncached.alice
		v6 := rng.IntN(3) == 0
		if v6 {
			src = aliceV6
		}
		if useBob {
			id, pc, pu = bob, cached.bob, uncached.bob
			src = bobV4
			if v6 {
				src = bobV6
			}
		}
		dst := dsts4[rng.IntN(len(dsts4))]
		if v6 {
			dst = dsts6[rng.IntN(len(dsts6))]
		}
		port := ports[rng.IntN(len(ports))]
		var pkt []byte
		switch rng.IntN(3) {
		case 0:
			pkt = tuntest.TCP(ap(src, 40000), ap(dst, port), tuntest.TCPSegment{Flags: tuntest.SYN})
		case 1:
			pkt = tuntest.UDP(ap(src, 40000), ap(dst, port), nil)
		default:
			pkt = tuntest.ICMPEcho(src, dst, 1, uint16(i), nil)
		}

		ref, err := tuntest.Parse(pkt)
		if err != nil {
			t.Fatal(err)
		}
		proto := map[uint8]string{tuntest.ProtoTCP: "tcp", tuntest.ProtoUDP: "udp", tuntest.ProtoICMP: "icmp", tuntest.ProtoICMPv6: "icmp"}[ref.Proto]
		want := DropPolicy
		if current.Dial(id, policy.Target{Addr: ref.Dst.Addr(), Port: ref.Dst.Port(), Proto: proto}).Allow {
			want = ToLAN
		}
		gotC := fromPeer(t, cached.r, pc, pkt)
		gotU := fromPeer(t, uncached.r, pu, pkt)
		if gotC != want || gotU != want {
			t.Fatalf("packet %d (%s %s %v -> %v): cached %v, uncached %v, reference %v",
				i, id.Name(), proto, ref.Src, ref.Dst, gotC, gotU, want)
		}
	}
	if c, u := cached.r.Stats(), uncached.r.Stats(); c != u {
		t.Fatalf("stats differ: cached %+v, uncached %+v", c, u)
	}
}

// steadyRouter returns a router, peers and batches in the steady state the
// allocation test and the benchmarks measure: a batch of 128 packets from
// alice over 16 flows (IPv4 and IPv6) that policy allows, and a batch of 128
// from the LAN to four peers.
func steadyRouter(tb testing.TB, cfg Config) (r *Router, from *Peer, peers []*Peer, fromBatch, lanBatch [][]byte) {
	cfg.LAN = &discardLAN{}
	if cfg.Policy == nil {
		cfg.Policy = testPolicy(tb)
	}
	r, err := New(cfg, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(r.Close)
	for i := range 4 {
		v4 := netip.AddrFrom4([4]byte{198, 18, 100, byte(2 + i)})
		v6 := netip.MustParseAddr(fmt.Sprintf("2001:db8:100::%d", 2+i))
		id := alice
		if i > 0 {
			id = &pki.Identity{CommonName: fmt.Sprint("user", i), Groups: []string{"eng"}}
		}
		peers = append(peers, mustAddPeer(tb, r, id, v4, v6))
	}
	from = peers[0]
	var out, in [][]byte
	payload := make([]byte, 1200)
	for i := range 128 {
		flow := i % 16
		sport := uint16(40000 + flow)
		switch {
		case flow < 8:
			out = append(out, tuntest.TCP(ap(aliceV4, sport), ap(web, 443), tuntest.TCPSegment{Flags: tuntest.ACK, Payload: payload}))
		case flow < 12:
			out = append(out, tuntest.UDP(ap(aliceV6, sport), ap(dns6, 53), payload[:200]))
		default:
			out = append(out, tuntest.UDP(ap(aliceV4, sport), ap(netip.AddrFrom4([4]byte{198, 19, 1, byte(flow)}), 9000), payload))
		}
		p := peers[i%4]
		in = append(in, tuntest.TCP(ap(web, 443), ap(p.addrs[0], sport), tuntest.TCPSegment{Flags: tuntest.ACK, Payload: payload}))
	}
	return r, from, peers, bufs(out...), bufs(in...)
}

// drain empties every peer's queue the way a session writer would.
func drain(peers []*Peer, pkts [][]byte) [][]byte {
	for _, p := range peers {
		for p.Queued() > 0 {
			pkts, _ = p.Dequeue(pkts)
		}
	}
	return pkts
}

func TestNoAllocationsInSteadyState(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	r, from, peers, fromBatch, lanBatch := steadyRouter(t, Config{ClientToClient: true})
	verdicts := make([]Verdict, 128)
	pkts := make([][]byte, 0, 128)

	// Allowed, denied (logging discarded), spoofed and client-to-client
	// packets all in one batch.
	mixed := bufs(udp(aliceV4, 1, dns, 53), tcp(aliceV4, secret, 22), udp(bobV4, 1, dns, 53),
		udp(aliceV4, 1, peers[1].addrs[0], 9), fragment4(udp(aliceV4, 5000, bulk, 9), 1, true, 8))
	run := func() {
		if err := r.FromPeer(from, fromBatch, tun.Offset, verdicts); err != nil {
			t.Fatal(err)
		}
		if err := r.FromPeer(from, mixed, tun.Offset, verdicts); err != nil {
			t.Fatal(err)
		}
		r.FromLAN(lanBatch, tun.Offset, verdicts)
		pkts = drain(peers, pkts)
	}
	run() // warm up: flow caches, scratch slices, buffer pools
	if n := testing.AllocsPerRun(200, run); n != 0 {
		t.Fatalf("%v allocations per round, want 0", n)
	}
	s := r.Stats()
	if s.ToLAN == 0 || s.ToPeer == 0 || s.Policy == 0 || s.Spoof == 0 || s.Queue != 0 {
		t.Fatalf("the round did not exercise every path: %+v", s)
	}
}

// BenchmarkFromPeer measures the client-to-LAN path per batch of 128
// packets that policy allows, written to the LAN in one batch: 16
// interleaved flows (every packet a flow cache lookup), the same without
// the cache (every packet a policy evaluation), and one flow (a TCP burst).
func BenchmarkFromPeer(b *testing.B) {
	for _, bc := range []struct {
		name    string
		cache   int
		oneFlow bool
	}{{"16-flows", 0, false}, {"16-flows-uncached", -1, false}, {"1-flow", 0, true}} {
		b.Run(bc.name, func(b *testing.B) {
			r, from, _, batch, _ := steadyRouter(b, Config{FlowCacheSize: bc.cache})
			if bc.oneFlow {
				// A TCP burst: a whole batch of one flow.
				for i := range batch {
					batch[i] = batch[0]
				}
			}
			b.ReportAllocs()
			for b.Loop() {
				r.FromPeer(from, batch, tun.Offset, nil)
			}
			reportPackets(b, len(batch))
		})
	}
}

// BenchmarkFromLAN measures the LAN-to-client path per batch of 128 packets
// to four peers, including copying into their queues and draining them.
func BenchmarkFromLAN(b *testing.B) {
	r, _, peers, _, batch := steadyRouter(b, Config{})
	pkts := make([][]byte, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		r.FromLAN(batch, tun.Offset, nil)
		pkts = drain(peers, pkts)
	}
	reportPackets(b, len(batch))
}

func reportPackets(b *testing.B, perOp int) {
	ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N*perOp)
	b.ReportMetric(ns, "ns/pkt")
	b.ReportMetric(1e9/ns, "pkts/s")
}

// FuzzFromPeer feeds arbitrary bytes to both directions. Nothing may panic,
// and whatever reaches the LAN must come from the peer's address and be
// something the policy allows.
func FuzzFromPeer(f *testing.F) {
	for _, seed := range [][]byte{
		udp(aliceV4, 5000, dns, 53),
		udp(aliceV6, 5000, dns6, 53),
		tcp(aliceV4, web, 443),
		tuntest.ICMPEcho(aliceV6, web6, 1, 1, nil),
		fragment4(udp(aliceV4, 5000, dns, 53), 1, false, 8),
		ext6(udp(aliceV6, 5000, dns6, 53), hopByHop(), destOpts(), fragHdr(0, true)),
		ext6(udp(aliceV6, 5000, dns6, 53), routing(1)),
		{0x45},
		{0x60, 0, 0, 0, 0, 8, 0, 64},
	} {
		f.Add(seed)
	}
	allowed := func(t policy.Target) bool {
		return (t.Addr == dns || t.Addr == dns6) && t.Port == 53 && t.Proto == "udp" ||
			(t.Addr == web || t.Addr == web6) && t.Proto == "icmp"
	}
	pol := funcPolicy(func(_ *pki.Identity, t policy.Target) policy.Decision {
		return policy.Decision{Allow: allowed(t), Rule: "fuzz"}
	})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		lan := &recLAN{}
		r, err := New(Config{LAN: lan, Policy: pol, ClientToClient: true, QueueLen: 4}, nil)
		if err != nil {
			t.Fatal(err)
		}
		p := mustAddPeer(t, r, alice, aliceV4, aliceV6)
		vs := make([]Verdict, 1)
		if err := r.FromPeer(p, bufs(pkt), tun.Offset, vs); err != nil {
			t.Fatal(err)
		}
		out := lan.take()
		if (vs[0] == ToLAN) != (len(out) == 1) {
			t.Fatalf("verdict %v but %d packets on the LAN", vs[0], len(out))
		}
		if vs[0] == ToLAN {
			if !bytes.Equal(out[0], pkt) {
				t.Fatal("packet changed on its way to the LAN")
			}
			var src, dst netip.Addr
			if pkt[0]>>4 == 4 {
				src, dst = netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20]))
			} else {
				src, dst = netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40]))
			}
			if src != aliceV4 && src != aliceV6 {
				t.Fatalf("packet from %v reached the LAN", src)
			}
			if dst != dns && dst != dns6 && dst != web && dst != web6 {
				t.Fatalf("packet to %v reached the LAN", dst)
			}
		}
		r.FromLAN(bufs(pkt), tun.Offset, vs)
		if vs[0] == ToPeer {
			got, err := p.Dequeue(nil)
			if err != nil || len(got) != 1 || !bytes.HasPrefix(pkt, got[0]) {
				t.Fatalf("LAN packet queued as %d packets, %v", len(got), err)
			}
		}
		r.Close()
	})
}
