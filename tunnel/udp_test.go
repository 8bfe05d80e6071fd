package tunnel

import (
	"bytes"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/twoway/twoway/datagram"
	"github.com/twoway/twoway/tun/tuntest"
)

// udpPair is a VPN gateway and client whose UDP paths run on a fakeUDP.
type udpPair struct {
	net   *fakeUDP
	gw    *vpnGateway
	vc    *vpnClient
	binds chan *fakeBind // each client session's bind
	me4   netip.Addr
}

func startUDPPair(t *testing.T) *udpPair {
	t.Helper()
	f := newFixture(t)
	p := &udpPair{net: newFakeUDP(), binds: make(chan *fakeBind, 8)}
	p.gw = startVPNGatewayWith(t, f, func(v *ServerVPN) { v.UDP = &ServerUDP{Bind: p.net.bind("127.0.0.1")} })
	p.vc = startVPNClientWith(t, f, f.clientCreds, p.gw.srv.Addr().String(), func(v *ClientVPN) {
		v.UDPBind = func() conn.Bind {
			b := p.net.bind("127.0.0.2")
			p.binds <- b
			return b
		}
	})
	up := waitFor(t, p.vc.up, "VPN up")
	p.me4 = addrOf(up, false)
	return p
}

// waitPath waits until both sides say the packets travel on path.
func (p *udpPair) waitPath(t *testing.T, path string) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := start.Add(15 * time.Second)
	for {
		cs, ok := p.vc.c.Stats()
		ss := p.gw.srv.Sessions()
		if ok && cs.Path == path && len(ss) == 1 && ss[0].Stats.Path == path {
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			var gwPath string
			if len(ss) == 1 {
				gwPath = ss[0].Stats.Path
			}
			t.Fatalf("path never became %s: client %q, gateway %q", path, cs.Path, gwPath)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// roundTrip sends a packet each way and checks both arrive.
func (p *udpPair) roundTrip(t *testing.T, i int) {
	t.Helper()
	ping := tuntest.ICMPEcho(p.me4, lanHost, 9, uint16(i), []byte("over udp"))
	p.vc.dev.Inbound <- ping
	expectPacket(t, p.gw.lan.Outbound, ping, "echo request at the LAN")
	pong := tuntest.ICMPEchoReply(lanHost, p.me4, 9, uint16(i), bytes.Repeat([]byte("y"), 1200))
	p.gw.lan.Inbound <- pong
	expectPacket(t, p.vc.dev.Outbound, pong, "echo reply at the client")
}

// TestUDPPathAndFallback: a session's packets move to UDP once the
// gateway's UDP port answers, back to the packets stream when UDP is
// blocked, and to UDP again when it is not, with packets flowing both ways
// throughout and the session never ending.
func TestUDPPathAndFallback(t *testing.T) {
	p := startUDPPair(t)
	p.waitPath(t, pathUDP)
	before := p.net.sent.Load()
	p.roundTrip(t, 1)
	if got := p.net.sent.Load() - before; got < 2 {
		t.Fatalf("%d datagrams carried the round trip; want it on UDP", got)
	}
	if st := p.gw.srv.UDPStats(); st.DatagramsIn == 0 || st.DatagramsOut == 0 {
		t.Errorf("gateway UDP counters %+v", st)
	}
	if st := p.vc.c.UDPStats(); st.DatagramsIn == 0 || st.DatagramsOut == 0 || len(st.Dropped) != 0 {
		t.Errorf("client UDP counters %+v", st)
	}

	p.net.block(true)
	took := p.waitPath(t, pathTCP)
	t.Logf("UDP blocked: on TCP after %v", took)
	p.roundTrip(t, 2) // on the stream now

	p.net.block(false)
	took = p.waitPath(t, pathUDP)
	t.Logf("UDP back: on UDP after %v", took)
	before = p.net.sent.Load()
	p.roundTrip(t, 3)
	if got := p.net.sent.Load() - before; got < 2 {
		t.Fatalf("%d datagrams carried the round trip after UDP came back", got)
	}
	if n := len(p.gw.srv.Sessions()); n != 1 {
		t.Fatalf("%d sessions; the moves must not replace the session", n)
	}
}

// TestUDPRoaming: when the client's UDP source address changes, the
// gateway sends to the new one once an authenticated datagram came from
// it; a forged datagram from elsewhere moves nothing.
func TestUDPRoaming(t *testing.T) {
	p := startUDPPair(t)
	b := waitFor(t, p.binds, "client bind")
	p.waitPath(t, pathUDP)
	p.roundTrip(t, 1)

	// A datagram from an attacker's address, with a session's receiver
	// index but no key, must not move the gateway's idea of the client.
	var seen, toClient []byte
	var mu sync.Mutex
	p.net.mu.Lock()
	p.net.tap = func(from, to netip.AddrPort, d []byte) {
		mu.Lock()
		defer mu.Unlock()
		if seen == nil && from.Addr() == b.local().Addr() && d[0] == datagram.TypeData {
			seen = append([]byte(nil), d...)
		}
		if toClient == nil && to == b.local() && d[0] == datagram.TypeData {
			toClient = append([]byte(nil), d...)
		}
	}
	p.net.mu.Unlock()
	p.roundTrip(t, 2)
	mu.Lock()
	forged := append([]byte(nil), seen...)
	mu.Unlock()
	if forged == nil {
		t.Fatal("no data datagram seen from the client")
	}
	forged[14] ^= 0x01 // a counter not seen yet (256 on), so only the tag can refuse it
	attacker := p.net.bind("127.0.0.66")
	if _, _, err := attacker.Open(0); err != nil {
		t.Fatal(err)
	}
	defer attacker.Close()
	gwEP := fakeEndpoint(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(p.gw.srv.UDPPort())))
	_ = attacker.Send([][]byte{forged}, gwEP)
	waitCond(t, "forged datagram counted", func() bool { return p.gw.srv.UDPStats().Dropped["auth"] >= 1 })
	// A replay of the genuine datagram, from the attacker.
	_ = attacker.Send([][]byte{seen}, gwEP)
	waitCond(t, "replayed datagram counted", func() bool { return p.gw.srv.UDPStats().Dropped["replay"] >= 1 })
	if st := p.gw.srv.UDPStats(); st.Roamed != 0 {
		t.Fatalf("gateway followed an unauthenticated source: %+v", st)
	}
	// The client refuses and counts the same kinds of datagram.
	mu.Lock()
	back := append([]byte(nil), toClient...)
	mu.Unlock()
	if back == nil {
		t.Fatal("no data datagram seen to the client")
	}
	_ = attacker.Send([][]byte{back}, fakeEndpoint(b.local()))
	waitCond(t, "replay counted by the client", func() bool { return p.vc.c.UDPStats().Dropped["replay"] >= 1 })
	back[20] ^= 0x80
	back[14] ^= 0x01
	_ = attacker.Send([][]byte{back}, fakeEndpoint(b.local()))
	waitCond(t, "forgery counted by the client", func() bool { return p.vc.c.UDPStats().Dropped["auth"] >= 1 })
	p.roundTrip(t, 3)

	// Now the client really moves.
	b.moveTo(netip.MustParseAddrPort("127.0.0.3:41000"))
	for i := 4; p.gw.srv.UDPStats().Roamed == 0; i++ {
		// The first packet back may still go to the old address: the
		// gateway learns the new one from the client's next datagram.
		ping := tuntest.ICMPEcho(p.me4, lanHost, 9, uint16(i), []byte("moved"))
		p.vc.dev.Inbound <- ping
		expectPacket(t, p.gw.lan.Outbound, ping, "echo request after the move")
	}
	p.roundTrip(t, 100)
	if ss := p.gw.srv.Sessions(); len(ss) != 1 || ss[0].Stats.Path != pathUDP {
		t.Fatalf("after the move: %d sessions, %+v", len(ss), ss)
	}
}

// TestUDPSessionEndDropsDatagrams: once a session ends, its datagrams are
// dropped unopened (its receiver index is forgotten).
func TestUDPSessionEndDropsDatagrams(t *testing.T) {
	p := startUDPPair(t)
	b := waitFor(t, p.binds, "client bind")
	p.waitPath(t, pathUDP)
	var last []byte
	var mu sync.Mutex
	p.net.mu.Lock()
	p.net.tap = func(from, to netip.AddrPort, d []byte) {
		if from.Addr() == b.local().Addr() {
			mu.Lock()
			last = append(last[:0], d...)
			mu.Unlock()
		}
	}
	p.net.mu.Unlock()
	p.roundTrip(t, 1)
	p.vc.c.Stop()
	waitCond(t, "session gone", func() bool {
		p.gw.srv.mu.Lock()
		defer p.gw.srv.mu.Unlock()
		return len(p.gw.srv.sessions) == 0 // forgotten only once it has ended
	})
	mu.Lock()
	d := append([]byte(nil), last...)
	mu.Unlock()
	d[8] ^= 0xff // a fresh counter: only the receiver index can refuse it now
	attacker := p.net.bind("127.0.0.66")
	if _, _, err := attacker.Open(0); err != nil {
		t.Fatal(err)
	}
	defer attacker.Close()
	_ = attacker.Send([][]byte{d}, fakeEndpoint(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(p.gw.srv.UDPPort()))))
	waitCond(t, "datagram for an ended session dropped", func() bool { return p.gw.srv.UDPStats().Dropped["unknown-session"] >= 1 })
}

// TestUDPLossyLinkStaysOnUDP: 5% loss each way does not make the path
// flap back to TCP, and packets keep arriving.
func TestUDPLossyLinkStaysOnUDP(t *testing.T) {
	p := startUDPPair(t)
	p.waitPath(t, pathUDP)
	p.net.setLoss(0.05)
	got := 0
	deadline := time.Now().Add(3 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		ping := tuntest.ICMPEcho(p.me4, lanHost, 9, uint16(i), []byte("lossy"))
		p.vc.dev.Inbound <- ping
		select {
		case <-p.gw.lan.Outbound:
			got++
		case <-time.After(50 * time.Millisecond):
		}
		if cs, _ := p.vc.c.Stats(); cs.Path != pathUDP {
			t.Fatalf("path went to %q on a 5%% lossy link", cs.Path)
		}
	}
	if got == 0 {
		t.Fatal("no packet arrived")
	}
}

func waitCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestUDPRekey: each direction moves to new keys after udpRekeyAfter
// datagrams (lowered here), announced over the control stream, without
// losing a packet; the gateway and client agree on the epochs.
func TestUDPRekey(t *testing.T) {
	old := udpRekeyAfter
	udpRekeyAfter = 40
	t.Cleanup(func() { udpRekeyAfter = old }) // after the pair has stopped
	p := startUDPPair(t)
	p.waitPath(t, pathUDP)
	var gw *udpLink
	p.gw.srv.mu.Lock()
	for _, ss := range p.gw.srv.sessionList() {
		gw = ss.udp
	}
	p.gw.srv.mu.Unlock()
	var cs *clientSession
	if l := p.vc.c.link.Load(); l != nil && l.udp != nil {
		cs = l.udp.cs
	}
	if gw == nil || cs == nil {
		t.Fatal("no UDP path on one side")
	}
	// A rekey takes a round trip on the control stream, during which
	// datagrams still go out under the old key, so how many rekeys a
	// fixed number of datagrams brings depends on the machine's speed:
	// go on until both sides have rekeyed a few times (at least 120
	// datagrams each way) or give up after 10 s.
	var cSend, cRecv, gSend, gRecv uint32
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		p.roundTrip(t, i)
		if i%50 != 49 {
			continue
		}
		cSend, cRecv = cs.udpKeys.epochs()
		gSend, gRecv = gw.keys.epochs()
		if cSend >= 3 && gSend >= 3 || time.Now().After(deadline) {
			break
		}
	}
	if st, _ := p.vc.c.Stats(); st.Path != pathUDP {
		t.Errorf("path %q after the rekeys, want udp", st.Path)
	}
	t.Logf("client epochs send %d recv %d; gateway send %d recv %d", cSend, cRecv, gSend, gRecv)
	if cSend < 3 || gSend < 3 {
		t.Fatalf("too few rekeys: client sends under epoch %d, gateway %d", cSend, gSend)
	}
	if d := int(gRecv) - int(cSend); d < 0 || d > 1 {
		t.Errorf("gateway receives epoch %d, client sends %d", gRecv, cSend)
	}
	if d := int(cRecv) - int(gSend); d < 0 || d > 1 {
		t.Errorf("client receives epoch %d, gateway sends %d", cRecv, gSend)
	}
	if st := p.gw.srv.UDPStats(); st.Dropped["phase"] > 0 || st.Dropped["auth"] > 0 {
		t.Errorf("datagrams refused across rekeys: %+v", st.Dropped)
	}
}
