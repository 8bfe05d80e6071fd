package tunnel

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/twoway/twoway/tun/tuntest"
)

// TestPathMeter: the queueing delay is a probe's one-way delay (plus the
// clocks' offset) above the smallest of the last clockBaseWindow; answers
// that do not parse or answer no recent probe are ignored.
func TestPathMeter(t *testing.T) {
	const offset = int64(5 * time.Hour) // the peer's clock is far from ours: only differences count
	ms := int64(time.Millisecond)
	var m pathMeter
	now := int64(time.Minute)
	answer := func(sent, oneWay int64) (time.Duration, bool) {
		p := clockPayload(sent)
		r, ok := clockReply(p, sent+oneWay+offset)
		if !ok {
			t.Fatal("clockReply refused a probe payload")
		}
		return m.answer(r, now)
	}
	for i, c := range []struct {
		oneWay int64
		want   time.Duration
	}{{20 * ms, 0}, {25 * ms, 5 * time.Millisecond}, {18 * ms, 0}, {60 * ms, 42 * time.Millisecond}} {
		now += 10 * ms
		d, ok := answer(now-40*ms, c.oneWay)
		if !ok || d != c.want {
			t.Errorf("sample %d (one way %d ms): %v %v, want %v", i, c.oneWay/ms, d, ok, c.want)
		}
	}
	// The base is remembered for one to two half-windows, then follows a
	// path that got longer.
	now += int64(clockBaseWindow / 2)
	if d, _ := answer(now-40*ms, 30*ms); d != 12*time.Millisecond {
		t.Errorf("next half-window: %v, want 12ms (base 18 ms kept)", d)
	}
	now += int64(clockBaseWindow/2) + 10*ms
	if d, _ := answer(now-40*ms, 30*ms); d != 0 {
		t.Errorf("a whole window later: %v, want 0 (base now 30 ms)", d)
	}
	// Bad answers.
	for name, p := range map[string][]byte{
		"short":     make([]byte, 8),
		"long":      make([]byte, 24),
		"future":    append(clockPayload(now+ms), make([]byte, 8)...),
		"too old":   append(clockPayload(now-int64(clockMaxAge)-ms), make([]byte, 8)...),
		"not probe": nil,
	} {
		if _, ok := m.answer(p, now); ok {
			t.Errorf("%s answer accepted", name)
		}
	}
	if _, ok := clockReply(make([]byte, 9), now); ok {
		t.Error("clockReply answered a 9-byte probe")
	}
	// One probe per clockEvery, whoever asks.
	var d pathMeter
	if !d.due(now) || d.due(now+int64(clockEvery)-1) || !d.due(now+int64(clockEvery)) {
		t.Error("due does not pace probes at clockEvery")
	}
}

// pump sends a packet of one UDP flow from the LAN to the client every gap
// until stop is closed, and drains what reaches the client until the test
// ends. It returns the count of packets reaching the client for UDP port
// 40000 (the sparse flow of TestUDPPathQueueDropsBulkFlow).
func (p *udpPair) pump(t *testing.T, gap time.Duration, size int, stop chan struct{}) *atomic.Int64 {
	t.Helper()
	var sparse atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() { close(done); wg.Wait() })
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			select {
			case pkt := <-p.vc.dev.Outbound:
				if len(pkt) >= 28 && pkt[9] == 17 && binary.BigEndian.Uint16(pkt[22:]) == 40000 {
					sparse.Add(1)
				}
			case <-done:
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		tk := time.NewTicker(gap)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				return
			case <-done:
				return
			case <-tk.C:
			}
			pkt := tuntest.UDP(netip.AddrPortFrom(lanHost, 443), netip.AddrPortFrom(p.me4, 50000), bytes.Repeat([]byte("d"), size))
			select {
			case p.gw.lan.Inbound <- pkt:
			case <-stop:
				return
			case <-done:
				return
			}
		}
	}()
	return &sparse
}

// TestUDPClockMeasuresPathQueue: while the gateway sends over UDP, its
// clock probes measure the delay its datagrams meet on the way (40 ms
// added to that direction only) and nothing of the other direction's;
// once the delay goes, so does the measurement.
func TestUDPClockMeasuresPathQueue(t *testing.T) {
	p := startUDPPair(t)
	p.waitPath(t, pathUDP)
	stop := make(chan struct{})
	defer close(stop)
	p.pump(t, 2*time.Millisecond, 200, stop)
	gwQueue := func() time.Duration {
		if ss := p.gw.srv.Sessions(); len(ss) == 1 {
			return ss[0].Stats.PathQueue
		}
		return -1
	}
	time.Sleep(300 * time.Millisecond) // the base: no delay yet
	if q := gwQueue(); q > 10*time.Millisecond {
		t.Fatalf("path queue %v with nothing added", q)
	}
	gw := netip.MustParseAddr("127.0.0.1")
	client := netip.MustParseAddr("127.0.0.2")
	p.net.setDelay(gw, client, 40*time.Millisecond)
	waitCond(t, "the gateway measuring the 40 ms", func() bool {
		q := gwQueue()
		return q >= 35*time.Millisecond && q < 60*time.Millisecond
	})
	// The other direction queues nothing: the client's measure (its
	// upstream) stays low while it sends.
	for i := range 20 {
		ping := tuntest.ICMPEcho(p.me4, lanHost, 9, uint16(i), []byte("up"))
		p.vc.dev.Inbound <- ping
		time.Sleep(5 * time.Millisecond)
	}
	if cs, ok := p.vc.c.Stats(); !ok || cs.PathQueue > 10*time.Millisecond {
		t.Errorf("client's path queue %v (ok %v); its direction has no added delay", cs.PathQueue, ok)
	}
	p.net.setDelay(gw, client, 0)
	waitCond(t, "the measurement to fall back", func() bool { q := gwQueue(); return q >= 0 && q < 10*time.Millisecond })
}

// TestUDPPathQueueDropsBulkFlow: with 40 ms queued on the path towards the
// client, the gateway drops from the bulk flow that builds it (CoDel's
// rate) and delivers every packet of a sparse flow beside it; with
// LocalQueueOnly it drops nothing.
func TestUDPPathQueueDropsBulkFlow(t *testing.T) {
	for _, local := range []bool{false, true} {
		f := newFixture(t)
		p := &udpPair{net: newFakeUDP()}
		p.gw = startVPNGatewayWith(t, f, func(v *ServerVPN) {
			v.UDP = &ServerUDP{Bind: p.net.bind("127.0.0.1"), LocalQueueOnly: local}
		})
		p.vc = startVPNClientWith(t, f, f.clientCreds, p.gw.srv.Addr().String(), func(v *ClientVPN) {
			v.UDPBind = func() conn.Bind { return p.net.bind("127.0.0.2") }
		})
		p.me4 = addrOf(waitFor(t, p.vc.up, "VPN up"), false)
		p.waitPath(t, pathUDP)
		stop := make(chan struct{})
		got := p.pump(t, 200*time.Microsecond, 1200, stop) // one flow, as fast as the ticker goes (1 ms here: 10 Mbit/s)
		time.Sleep(300 * time.Millisecond)                 // the path's base delay
		if d := p.gw.srv.VPNStats().Dropped(); d != 0 {
			t.Fatalf("%d dropped before the path's queue grew", d)
		}
		// The path's queue grows to 40 ms.
		p.net.setDelay(netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2"), 40*time.Millisecond)
		sparse := 0
		for range 40 {
			// A sparse flow of its own.
			p.gw.lan.Inbound <- tuntest.UDP(netip.AddrPortFrom(lanHost, 53), netip.AddrPortFrom(p.me4, 40000), []byte("sparse"))
			sparse++
			time.Sleep(25 * time.Millisecond)
		}
		close(stop) // the bulk flow ends; what is queued drains
		deadline := time.Now().Add(10 * time.Second)
		for got.Load() < int64(sparse)-1 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		// The two flows share a flow queue in one gateway of 64 (the
		// hash's seed is random), and then the sparse flow may lose a
		// packet to the bulk flow's drops; more would be a bug.
		if n := got.Load(); n < int64(sparse)-1 {
			t.Errorf("LocalQueueOnly %v: %d of %d packets of the sparse flow arrived", local, n, sparse)
		}
		dropped := p.gw.srv.VPNStats().Dropped()
		t.Logf("LocalQueueOnly %v: %d dropped in 1 s", local, dropped)
		if !local && dropped < 3 {
			t.Errorf("40 ms on the path: %d dropped; want CoDel's drops from the bulk flow", dropped)
		}
		if local && dropped != 0 {
			t.Errorf("LocalQueueOnly: %d dropped, want 0", dropped)
		}
	}
}

// FuzzClockAnswer: any authenticated clock reply payload is either refused
// or yields a delay that is not negative; nothing panics.
func FuzzClockAnswer(f *testing.F) {
	now := int64(time.Minute)
	r, _ := clockReply(clockPayload(now-int64(time.Millisecond)), 12345)
	f.Add(r)
	f.Add([]byte{})
	f.Add(make([]byte, 16))
	f.Fuzz(func(t *testing.T, p []byte) {
		var m pathMeter
		if d, ok := m.answer(p, now); ok && d < 0 {
			t.Fatalf("negative delay %v from %x", d, p)
		}
		if _, ok := clockReply(p, now); ok != (len(p) == 8) {
			t.Fatalf("clockReply(%d bytes) = %v", len(p), ok)
		}
	})
}
