package tunnel

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twoway/twoway/ipam"
	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/policy"
	"github.com/twoway/twoway/router"
	"github.com/twoway/twoway/tun"
	"github.com/twoway/twoway/tun/tuntest"
)

// Addresses of the in-process VPN tests: the client pools, and a
// "corporate LAN" behind the gateway's TUN device.
var (
	pool4   = netip.MustParsePrefix("198.18.100.0/24")
	pool6   = netip.MustParsePrefix("2001:db8:100::/64")
	lanNet4 = netip.MustParsePrefix("198.18.0.0/24")
	lanNet6 = netip.MustParsePrefix("2001:db8:1::/64")
	lanHost = netip.MustParseAddr("198.18.0.10")
	lanHos6 = netip.MustParseAddr("2001:db8:1::10")
)

type vpnGateway struct {
	srv *Server
	lan *tuntest.Device
}

// startVPNGateway runs a gateway in VPN mode with tuntest as its LAN.
func startVPNGateway(t *testing.T, f *fixture, pol Policy, c2c bool, stateFile, listen string) *vpnGateway {
	t.Helper()
	return startVPNGatewayOn(t, f, pol, c2c, stateFile, listen, tuntest.Options{Name: "gw0"})
}

// startVPNGatewayOn is startVPNGateway with a LAN device made with opts.
func startVPNGatewayOn(t *testing.T, f *fixture, pol Policy, c2c bool, stateFile, listen string, opts tuntest.Options) *vpnGateway {
	t.Helper()
	return startVPNGatewayMod(t, f, pol, c2c, stateFile, listen, opts, nil)
}

// startVPNGatewayWith is startVPNGateway with the VPN configuration
// changed by mod.
func startVPNGatewayWith(t *testing.T, f *fixture, mod func(*ServerVPN)) *vpnGateway {
	t.Helper()
	return startVPNGatewayMod(t, f, nil, false, "", "", tuntest.Options{Name: "gw0"}, mod)
}

func startVPNGatewayMod(t *testing.T, f *fixture, pol Policy, c2c bool, stateFile, listen string, opts tuntest.Options, mod func(*ServerVPN)) *vpnGateway {
	t.Helper()
	pool, err := ipam.New(ipam.Config{IPv4: pool4, IPv6: pool6, StateFile: stateFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	lan := tuntest.New(opts)
	cfg := f.serverConfig(pol)
	if listen != "" {
		cfg.Listen = listen
	}
	cfg.VPN = &ServerVPN{
		Device: lan, Pool: pool, ClientToClient: c2c, MTU: 1400,
		Routes: []netip.Prefix{lanNet4, lanNet6}, DNS: []netip.Addr{netip.MustParseAddr("198.18.0.53")},
		SearchDomains: []string{"corp.example"},
	}
	if mod != nil {
		mod(cfg.VPN)
	}
	return &vpnGateway{srv: startServer(t, cfg), lan: lan}
}

// fakeConfigurator records what the client applies and undoes.
type fakeConfigurator struct {
	mu      sync.Mutex
	applied []tun.Config
	active  bool
	undone  int
}

func (fc *fakeConfigurator) Apply(_ context.Context, dev string, cfg tun.Config) (func() error, error) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	if fc.active {
		panic("apply while a config is active") // the real one refuses too
	}
	fc.applied = append(fc.applied, cfg)
	fc.active = true
	var once sync.Once
	return func() error {
		once.Do(func() {
			fc.mu.Lock()
			fc.active = false
			fc.undone++
			fc.mu.Unlock()
		})
		return nil
	}, nil
}

func (fc *fakeConfigurator) state() (applied, undone int, active bool) {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return len(fc.applied), fc.undone, fc.active
}

type vpnClient struct {
	c    *Client
	dev  *tuntest.Device
	conf *fakeConfigurator
	up   chan tun.Config
	down chan struct{}
}

// startVPNClient connects a VPN client with creds to addr.
func startVPNClient(t *testing.T, f *fixture, creds *memCreds, addr string, fwds ...Forward) *vpnClient {
	t.Helper()
	return startVPNClientOn(t, f, creds, addr, tuntest.Options{Name: "tw0"}, fwds...)
}

// startVPNClientOn is startVPNClient with a device made with opts.
func startVPNClientOn(t *testing.T, f *fixture, creds *memCreds, addr string, opts tuntest.Options, fwds ...Forward) *vpnClient {
	t.Helper()
	return startVPNClientMod(t, f, creds, addr, opts, nil, fwds...)
}

// startVPNClientWith is startVPNClient with the VPN configuration changed
// by mod.
func startVPNClientWith(t *testing.T, f *fixture, creds *memCreds, addr string, mod func(*ClientVPN)) *vpnClient {
	t.Helper()
	return startVPNClientMod(t, f, creds, addr, tuntest.Options{Name: "tw0"}, mod)
}

func startVPNClientMod(t *testing.T, f *fixture, creds *memCreds, addr string, opts tuntest.Options, mod func(*ClientVPN), fwds ...Forward) *vpnClient {
	t.Helper()
	vc := &vpnClient{
		dev: tuntest.New(opts), conf: &fakeConfigurator{},
		up: make(chan tun.Config, 8), down: make(chan struct{}, 8),
	}
	cfg := f.clientConfig(addr, fwds...)
	cfg.Credentials = creds
	cfg.VPN = &ClientVPN{
		Device: vc.dev, Configurator: vc.conf,
		OnUp:   func(c tun.Config) { vc.up <- c },
		OnDown: func() { vc.down <- struct{}{} },
	}
	if mod != nil {
		mod(cfg.VPN)
	}
	vc.c = startClient(t, cfg)
	return vc
}

func recvPacket(t *testing.T, ch <-chan []byte, what string) []byte {
	t.Helper()
	return waitFor(t, ch, what)
}

// expectPacket waits for the next packet on ch and checks it is want.
func expectPacket(t *testing.T, ch <-chan []byte, want []byte, what string) {
	t.Helper()
	got := recvPacket(t, ch, what)
	if !bytes.Equal(got, want) {
		p, _ := tuntest.Parse(got)
		w, _ := tuntest.Parse(want)
		t.Fatalf("%s: got packet %v -> %v proto %d, want %v -> %v proto %d", what, p.Src, p.Dst, p.Proto, w.Src, w.Dst, w.Proto)
	}
}

// waitStats polls the router's counters until cond holds: the drop
// decision is made before the packets after it are delivered, but the
// counters are added when the batch is done, with no event to wait on.
func waitStats(t *testing.T, srv *Server, cond func(router.Stats) bool) router.Stats {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s := srv.VPNStats()
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("router stats never reached the expected state: %+v", s)
		}
		time.Sleep(time.Millisecond)
	}
}

func addrOf(cfg tun.Config, v6 bool) netip.Addr {
	for _, p := range cfg.Addresses {
		if p.Addr().Is6() == v6 {
			return p.Addr()
		}
	}
	return netip.Addr{}
}

// TestVPNRouting: a client gets addresses, routes, DNS and MTU pushed, and
// packets flow client -> LAN and LAN -> client, IPv4 and IPv6, while a port
// forward works on the same session.
func TestVPNRouting(t *testing.T) {
	f := newFixture(t)
	gw := startVPNGateway(t, f, nil, false, "", "")
	tgt := startTarget(t, echo)
	vc := startVPNClient(t, f, f.clientCreds, gw.srv.Addr().String(), mustForward(t, ForwardLocal, "127.0.0.1:0", tgt.addr()))
	up := waitFor(t, vc.up, "VPN up")

	me4, me6 := addrOf(up, false), addrOf(up, true)
	if !pool4.Contains(me4) || !pool6.Contains(me6) {
		t.Fatalf("addresses %v not from the pools", up.Addresses)
	}
	if up.Addresses[0].Bits() != 24 || up.MTU != 1400 || !slices.Equal(up.Routes, []netip.Prefix{lanNet4, lanNet6}) ||
		len(up.DNS) != 1 || !slices.Equal(up.SearchDomains, []string{"corp.example"}) {
		t.Errorf("pushed config = %+v", up)
	}
	if len(up.Bypass) != 0 {
		t.Errorf("bypass = %v, but no route covers the gateway", up.Bypass)
	}
	if n, _, active := vc.conf.state(); n != 1 || !active {
		t.Errorf("configurator: %d applies, active %v", n, active)
	}

	// Client -> LAN and back, IPv4.
	ping := tuntest.ICMPEcho(me4, lanHost, 7, 1, []byte("hello"))
	vc.dev.Inbound <- ping
	expectPacket(t, gw.lan.Outbound, ping, "echo request at the LAN")
	pong := tuntest.ICMPEchoReply(lanHost, me4, 7, 1, []byte("hello"))
	gw.lan.Inbound <- pong
	expectPacket(t, vc.dev.Outbound, pong, "echo reply at the client")

	// IPv6, UDP, and a batch of them.
	var batch [][]byte
	for i := range 50 {
		batch = append(batch, tuntest.UDP(netip.AddrPortFrom(me6, 5000), netip.AddrPortFrom(lanHos6, 53), []byte{byte(i)}))
	}
	for _, p := range batch {
		vc.dev.Inbound <- p
	}
	for i, p := range batch {
		expectPacket(t, gw.lan.Outbound, p, "IPv6 datagram "+string(rune('0'+i%10)))
	}
	back := tuntest.UDP(netip.AddrPortFrom(lanHos6, 53), netip.AddrPortFrom(me6, 5000), bytes.Repeat([]byte("x"), 1300))
	gw.lan.Inbound <- back
	expectPacket(t, vc.dev.Outbound, back, "IPv6 reply at the client")

	// The forward on the same client.
	conn, err := net.Dial("tcp", vc.c.Forwards()[0].Local.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("forward")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 7)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "forward" {
		t.Fatalf("forward echo = %q, %v", buf, err)
	}

	// Stop undoes the configuration and closes the device; the gateway
	// closes its own. Nothing of either is left running.
	conn.Close()
	vc.c.Stop()
	if _, undone, active := vc.conf.state(); undone != 1 || active {
		t.Errorf("after Stop: %d undos, active %v", undone, active)
	}
	<-vc.dev.Closed()
	gw.srv.Stop()
	<-gw.lan.Closed()
	checkNoLeaks(t)
}

// TestVPNAntiSpoofAndPolicy: packets with a source that is not the
// client's and packets to denied ports never reach the LAN.
func TestVPNAntiSpoofAndPolicy(t *testing.T) {
	f := newFixture(t)
	pol := &fakePolicy{dial: func(_ *pki.Identity, tg policy.Target) policy.Decision {
		if tg.Port == 22 {
			return policy.Decision{Rule: "no ssh"}
		}
		return policy.Decision{Allow: true, Rule: "rest"}
	}}
	gw := startVPNGateway(t, f, pol, false, "", "")
	vc := startVPNClient(t, f, f.clientCreds, gw.srv.Addr().String())
	up := waitFor(t, vc.up, "VPN up")
	me4, me6 := addrOf(up, false), addrOf(up, true)

	syn := tuntest.TCPSegment{Flags: tuntest.SYN, Seq: 1}
	spoofed := tuntest.TCP(netip.MustParseAddrPort("198.18.100.99:4000"), netip.AddrPortFrom(lanHost, 80), syn)
	spoofed6 := tuntest.TCP(netip.MustParseAddrPort("[2001:db8:100::99]:4000"), netip.AddrPortFrom(lanHos6, 80), syn)
	ssh := tuntest.TCP(netip.AddrPortFrom(me4, 4000), netip.AddrPortFrom(lanHost, 22), syn)
	ssh6 := tuntest.TCP(netip.AddrPortFrom(me6, 4000), netip.AddrPortFrom(lanHos6, 22), syn)
	web := tuntest.TCP(netip.AddrPortFrom(me4, 4000), netip.AddrPortFrom(lanHost, 80), syn)
	for _, p := range [][]byte{spoofed, spoofed6, ssh, ssh6, web} {
		vc.dev.Inbound <- p
	}
	// One stream, in order: had any earlier packet passed, it would
	// arrive first.
	expectPacket(t, gw.lan.Outbound, web, "the allowed packet")
	st := waitStats(t, gw.srv, func(s router.Stats) bool { return s.Spoof == 2 && s.Policy == 2 })
	if st.ToLAN != 1 {
		t.Errorf("stats %+v: want exactly one packet to the LAN", st)
	}
	select {
	case p := <-gw.lan.Outbound:
		t.Fatalf("unexpected packet at the LAN: %x", p)
	default:
	}

	// From the LAN to an address nobody holds: dropped, not misdelivered.
	gw.lan.Inbound <- tuntest.ICMPEchoReply(lanHost, netip.MustParseAddr("198.18.100.99"), 1, 1, nil)
	waitStats(t, gw.srv, func(s router.Stats) bool { return s.NoRoute == 1 })
}

// TestVPNClientToClient: with two clients, traffic between them is
// dropped unless the gateway allows client-to-client.
func TestVPNClientToClient(t *testing.T) {
	for _, c2c := range []bool{false, true} {
		name := map[bool]string{false: "off", true: "on"}[c2c]
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			gw := startVPNGateway(t, f, nil, c2c, "", "")
			bobCreds := newCreds(t, f.h.ClientCA.Client(t, "bob", "ops"), f.h.ServerBundle())
			alice := startVPNClient(t, f, f.clientCreds, gw.srv.Addr().String())
			bob := startVPNClient(t, f, bobCreds, gw.srv.Addr().String())
			a, b := waitFor(t, alice.up, "alice up"), waitFor(t, bob.up, "bob up")
			if addrOf(a, false) == addrOf(b, false) || addrOf(a, true) == addrOf(b, true) {
				t.Fatalf("alice %v and bob %v share an address", a.Addresses, b.Addresses)
			}
			p4 := tuntest.ICMPEcho(addrOf(a, false), addrOf(b, false), 1, 1, []byte("hi bob"))
			p6 := tuntest.ICMPEcho(addrOf(a, true), addrOf(b, true), 1, 2, []byte("hi bob"))
			marker := tuntest.ICMPEcho(addrOf(a, false), lanHost, 1, 3, nil)
			for _, p := range [][]byte{p4, p6, marker} {
				alice.dev.Inbound <- p
			}
			expectPacket(t, gw.lan.Outbound, marker, "alice's packet to the LAN")
			if c2c {
				expectPacket(t, bob.dev.Outbound, p4, "alice's IPv4 packet at bob")
				expectPacket(t, bob.dev.Outbound, p6, "alice's IPv6 packet at bob")
				return
			}
			waitStats(t, gw.srv, func(s router.Stats) bool { return s.ClientToClient == 2 })
			select {
			case p := <-bob.dev.Outbound:
				t.Fatalf("bob received %x with client-to-client off", p)
			default:
			}
		})
	}
}

// TestVPNLeaseSticky: after a gateway restart the client reconnects,
// its configuration is undone and applied again, and it keeps its
// addresses, which are not the first free ones.
func TestVPNLeaseSticky(t *testing.T) {
	f := newFixture(t)
	state := filepath.Join(t.TempDir(), "leases.json")
	gw := startVPNGateway(t, f, nil, false, state, "")
	addr := gw.srv.Addr().String()

	// Bob takes the first address, then leaves.
	bobCreds := newCreds(t, f.h.ClientCA.Client(t, "bob"), f.h.ServerBundle())
	bob := startVPNClient(t, f, bobCreds, addr)
	bobUp := waitFor(t, bob.up, "bob up")
	alice := startVPNClient(t, f, f.clientCreds, addr)
	first := waitFor(t, alice.up, "alice up")
	bob.c.Stop()
	if addrOf(first, false) == addrOf(bobUp, false) {
		t.Fatal("alice and bob got the same address")
	}

	gw.srv.Stop()
	waitFor(t, alice.down, "alice's VPN down after the gateway stopped")
	if _, undone, active := alice.conf.state(); undone != 1 || active {
		t.Fatalf("after the gateway went: %d undos, active %v", undone, active)
	}

	// A new gateway on the same address with the same state file.
	gw2 := startVPNGateway(t, f, nil, false, state, addr)
	second := waitFor(t, alice.up, "alice up again")
	if !slices.Equal(first.Addresses, second.Addresses) {
		t.Fatalf("addresses after restart %v, before %v", second.Addresses, first.Addresses)
	}
	ping := tuntest.ICMPEcho(addrOf(second, false), lanHost, 9, 9, nil)
	alice.dev.Inbound <- ping
	expectPacket(t, gw2.lan.Outbound, ping, "packet through the new gateway")
	if n, _, _ := alice.conf.state(); n != 2 {
		t.Errorf("%d applies, want 2", n)
	}
}

// TestVPNGatewayWithoutVPN: a VPN client at a gateway without VPN mode
// still gets its session, without VPN; a client that did not ask for VPN
// gets no lease and cannot open a packets stream at a VPN gateway.
func TestVPNGatewayWithoutVPN(t *testing.T) {
	f := newFixture(t)
	srv := startServer(t, f.serverConfig(nil))
	ccfg := f.clientConfig(srv.Addr().String())
	ccfg.VPN = &ClientVPN{Device: tuntest.New(tuntest.Options{})}
	var ev sessionEvents
	ev.hook(&ccfg)
	c := startClient(t, ccfg)
	if si := waitFor(t, ev.up, "session"); si.VPN != nil {
		t.Fatalf("VPN config %+v from a gateway without VPN mode", si.VPN)
	}
	c.Stop()

	gw := startVPNGateway(t, f, nil, false, "", "")
	plain := f.clientConfig(gw.srv.Addr().String())
	var ev2 sessionEvents
	ev2.hook(&plain)
	pc := startClient(t, plain)
	if si := waitFor(t, ev2.up, "plain session"); si.VPN != nil {
		t.Fatalf("a client that did not ask got VPN config %+v", si.VPN)
	}
	cs, err := pc.session(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.openPackets(); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("packets stream without a lease: %v, want unsupported", err)
	}
	if got := len(gw.srv.cfg.VPN.Pool.Assignments()); got != 0 {
		t.Fatalf("%d leases for a client that did not ask", got)
	}
}

// TestClientTunConfig: a full tunnel keeps the route to the gateway
// outside it; a split tunnel that does not cover the gateway needs none.
func TestClientTunConfig(t *testing.T) {
	gwAddr := netip.MustParseAddr("198.19.0.1")
	pushed := &VPNConfig{
		Addresses: []netip.Prefix{netip.MustParsePrefix("198.18.100.2/24"), netip.MustParsePrefix("2001:db8:100::2/64")}, MTU: 1400,
		Routes: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")},
	}
	full := clientTunConfig(pushed, gwAddr, netip.Addr{})
	if !slices.Equal(full.Bypass, []netip.Addr{gwAddr}) {
		t.Errorf("full tunnel bypass = %v", full.Bypass)
	}
	if err := full.Validate(); err != nil {
		t.Errorf("full tunnel config invalid: %v", err)
	}
	pushed.Routes = []netip.Prefix{lanNet4}
	if split := clientTunConfig(pushed, gwAddr, netip.Addr{}); len(split.Bypass) != 0 {
		t.Errorf("split tunnel bypass = %v", split.Bypass)
	}
}

// BenchmarkVPNPackets measures packets from a client's TUN device to the
// gateway's LAN device over loopback mTLS: framing, yamux, TLS, router.
func BenchmarkVPNPackets(b *testing.B) {
	f := newFixture(b)
	pool, err := ipam.New(ipam.Config{IPv4: pool4}, nil)
	if err != nil {
		b.Fatal(err)
	}
	lan := tuntest.New(tuntest.Options{Name: "gw0", Queue: 4096})
	scfg := f.serverConfig(nil)
	scfg.VPN = &ServerVPN{Device: lan, Pool: pool, Routes: []netip.Prefix{lanNet4}}
	srv := startServer(b, scfg)
	dev := tuntest.New(tuntest.Options{Name: "tw0", Queue: 4096})
	up := make(chan tun.Config, 1)
	ccfg := f.clientConfig(srv.Addr().String())
	ccfg.VPN = &ClientVPN{Device: dev, OnUp: func(c tun.Config) { up <- c }}
	startClient(b, ccfg)
	cfg := waitFor(b, up, "VPN up")
	pkt := tuntest.UDP(netip.AddrPortFrom(addrOf(cfg, false), 5000), netip.AddrPortFrom(lanHost, 5001), make([]byte, 1372))
	b.SetBytes(int64(len(pkt)))
	b.ResetTimer()
	go func() {
		for range b.N {
			dev.Inbound <- pkt
		}
	}()
	for range b.N {
		lan.Recycle(<-lan.Outbound)
	}
}

// TestVPNPacketsStreamLossReconnects: a session keeps one packets stream,
// so when that stream ends while the session is up (a bad frame, a failed
// write, on either side) the session must end and the client reconnect,
// rather than keep a session whose VPN is dead.
func TestVPNPacketsStreamLossReconnects(t *testing.T) {
	for _, side := range []string{"gateway", "client", "client write"} {
		t.Run(side, func(t *testing.T) {
			f := newFixture(t)
			gw := startVPNGateway(t, f, nil, false, "", "")
			vc := startVPNClient(t, f, f.clientCreds, gw.srv.Addr().String())
			up := waitFor(t, vc.up, "VPN up")
			me4 := addrOf(up, false)

			switch side {
			case "gateway":
				gw.srv.mu.Lock()
				var sessions []*serverSession
				for _, ss := range gw.srv.sessions {
					sessions = append(sessions, ss)
				}
				gw.srv.mu.Unlock()
				if len(sessions) != 1 {
					t.Fatalf("%d sessions at the gateway", len(sessions))
				}
				sessions[0].closePackets()
			case "client":
				l := vc.c.link.Load()
				if l == nil {
					t.Fatal("no VPN link at the client")
				}
				_ = l.st.SetReadDeadline(time.Now())
			case "client write":
				// The next packet from the device fails to go out.
				l := vc.c.link.Load()
				if l == nil {
					t.Fatal("no VPN link at the client")
				}
				_ = l.st.Close()
				vc.dev.Inbound <- tuntest.ICMPEcho(me4, lanHost, 9, 0, []byte("lost"))
			}

			waitFor(t, vc.down, "VPN down after the packets stream ended")
			again := waitFor(t, vc.up, "VPN up again after reconnecting")
			if addrOf(again, false) != me4 {
				t.Errorf("address %v after reconnecting, want %v (sticky)", addrOf(again, false), me4)
			}
			ping := tuntest.ICMPEcho(me4, lanHost, 9, 1, []byte("again"))
			vc.dev.Inbound <- ping
			expectPacket(t, gw.lan.Outbound, ping, "echo request at the LAN after reconnecting")
		})
	}
}
