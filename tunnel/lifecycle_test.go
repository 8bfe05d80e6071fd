package tunnel

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/policy"
	"go.uber.org/goleak"
)

// roundTrip writes msg on an echo connection and reads it back.
func roundTrip(t *testing.T, conn net.Conn, msg string) {
	t.Helper()
	if _, err := io.WriteString(conn, msg); err != nil {
		t.Fatalf("write %q: %v", msg, err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, got); err != nil {
		t.Fatalf("read %q: %v", msg, err)
	}
	if string(got) != msg {
		t.Fatalf("echo %q, want %q", got, msg)
	}
}

func TestRemoteForward(t *testing.T) {
	f := newFixture(t)
	svc := startTarget(t, echo) // a service on the client's side
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	closedAddr := closed.Addr().String()
	closed.Close()

	scfg := f.serverConfig(&bindPolicy{})
	srv := startServer(t, scfg)

	type listenResult struct {
		f     Forward
		bound string
		err   error
	}
	results := make(chan listenResult, 4)
	good := mustForward(t, ForwardRemote, "127.0.0.1:0", svc.addr())
	denied := mustForward(t, ForwardRemote, "127.0.0.2:0", svc.addr())
	broken := mustForward(t, ForwardRemote, "127.0.0.1:0", closedAddr) // nothing listens behind it
	ccfg := f.clientConfig(srv.Addr().String(), good, denied, broken)
	ccfg.OnRemoteListen = func(f Forward, bound string, err error) { results <- listenResult{f, bound, err} }
	c := startClient(t, ccfg)

	got := map[string]listenResult{}
	for range 3 {
		r := waitFor(t, results, "remote listen answer")
		got[r.f.String()] = r
	}
	ok := got[good.String()]
	if ok.err != nil || !strings.HasPrefix(ok.bound, "127.0.0.1:") {
		t.Fatalf("allowed -R: %+v", ok)
	}
	if r := got[denied.String()]; !errors.Is(r.err, ErrDenied) || !strings.Contains(r.err.Error(), "loopback only") {
		t.Fatalf("denied -R: %+v", r)
	}
	if st := c.Forwards()[0]; st.Remote != ok.bound {
		t.Fatalf("status remote %q, want %q", st.Remote, ok.bound)
	}

	conn, err := net.Dial("tcp", ok.bound)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	roundTrip(t, conn, "back through the tunnel")
	conn.(*net.TCPConn).CloseWrite()
	if rest, err := io.ReadAll(conn); err != nil || len(rest) != 0 {
		t.Fatalf("after half-close: %q %v", rest, err)
	}

	// The client cannot reach its target: the gateway-side connection is
	// reset, not left hanging.
	dead := got[broken.String()]
	if dead.err != nil {
		t.Fatalf("-R to a dead target should still listen: %v", dead.err)
	}
	conn2, err := net.Dial("tcp", dead.bound)
	if err == nil {
		defer conn2.Close()
		_, err = conn2.Read(make([]byte, 1))
	}
	// On loopback the reset can overtake the end of our connect.
	if !isRefusedLocally(err) {
		t.Fatalf("unreachable -R target: %v", err)
	}
}

// bindPolicy allows binds on 127.0.0.1 only.
type bindPolicy struct{ fakePolicy }

func (p *bindPolicy) Bind(_ *pki.Identity, a netip.Addr, _ uint16) policy.Decision {
	return policy.Decision{Allow: a.String() == "127.0.0.1", Rule: "loopback only"}
}

// TestReconnect restarts the gateway under a connected client: the client
// reconnects, keeps its local listener, and a connection made while the
// gateway was down is carried once it is back.
func TestReconnect(t *testing.T) {
	f := newFixture(t)
	tgt := startTarget(t, echo)
	srv1 := startServer(t, f.serverConfig(nil))
	addr := srv1.Addr().String()

	// The first endpoint is dead: the client must move on to the next.
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	ccfg := f.clientConfig(deadAddr, mustForward(t, ForwardLocal, "127.0.0.1:0", tgt.addr()))
	ccfg.Endpoints = append(ccfg.Endpoints, addr)
	var ev sessionEvents
	ev.hook(&ccfg)
	c := startClient(t, ccfg)
	first := waitFor(t, ev.up, "first session")
	local := c.Forwards()[0].Local.String()

	conn, err := net.Dial("tcp", local)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, conn, "before")
	conn.Close()

	srv1.Stop()
	if err := waitFor(t, ev.down, "disconnect"); !errors.Is(err, ErrShutdown) {
		t.Fatalf("disconnect reason %v, want the gateway's shutdown", err)
	}

	// While the gateway is down: the connection waits for the session.
	conn, err = net.Dial("tcp", local)
	if err != nil {
		t.Fatalf("local listener closed while the gateway was down: %v", err)
	}
	defer conn.Close()
	if _, err := io.WriteString(conn, "during"); err != nil {
		t.Fatal(err)
	}

	cfg2 := f.serverConfig(nil)
	cfg2.Listen = addr
	startServer(t, cfg2)
	second := waitFor(t, ev.up, "second session")
	if second.ID == first.ID {
		t.Fatal("same session id after reconnect")
	}
	got := make([]byte, len("during"))
	if _, err := io.ReadFull(conn, got); err != nil || string(got) != "during" {
		t.Fatalf("connection made while down: %q %v", got, err)
	}
	if c.Forwards()[0].Local.String() != local {
		t.Fatal("local listener changed across reconnect")
	}
}

// TestRevalidate revokes a connected client's certificate and withdraws
// another's admission: Revalidate must end both sessions at once, tell the
// clients why, and the revoked one must not get back in.
func TestRevalidate(t *testing.T) {
	f := newFixture(t)
	tgt := startTarget(t, echo)
	refusals := make(chan Refusal, 16)
	scfg := f.serverConfig(nil)
	scfg.OnRefuse = func(r Refusal) { refusals <- r }
	srv := startServer(t, scfg)

	ccfg := f.clientConfig(srv.Addr().String(), mustForward(t, ForwardLocal, "127.0.0.1:0", tgt.addr()))
	var ev sessionEvents
	ev.hook(&ccfg)
	c := startClient(t, ccfg)
	waitFor(t, ev.up, "session")

	bob := f.h.ClientCA.Client(t, "bob")
	bcfg := f.clientConfig(srv.Addr().String())
	bcfg.Credentials = newCreds(t, bob, f.h.ServerBundle())
	var bev sessionEvents
	bev.hook(&bcfg)
	startClient(t, bcfg)
	waitFor(t, bev.up, "bob's session")

	conn, err := net.Dial("tcp", c.Forwards()[0].Local.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	roundTrip(t, conn, "before revocation")

	// Reload: alice's certificate is revoked; bob is still fine.
	f.serverCreds.setVerifier(t, f.h.ClientBundle(), f.h.ClientCA.CRL(t, 2, f.clientLeaf.Cert))
	start := time.Now()
	srv.Revalidate()
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Revalidate took %s", took)
	}
	r := waitFor(t, refusals, "revalidation refusal")
	if r.Stage != "revalidate" || !errors.Is(r.Err, pki.ErrRevoked) || r.Identity.CommonName != "alice" {
		t.Fatalf("refusal %+v", r)
	}
	var bye *ByeError
	if err := waitFor(t, ev.down, "alice's disconnect"); !errors.As(err, &bye) || bye.Code != "revoked" {
		t.Fatalf("alice told %v", err)
	}
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("forwarded connection survived revocation")
	}
	sessions := srv.Sessions()
	if len(sessions) != 1 || sessions[0].Peer.CommonName != "bob" {
		t.Fatalf("sessions after revocation: %d", len(sessions))
	}
	// Alice's reconnect is refused at the handshake now.
	r = waitFor(t, refusals, "alice's reconnect refused")
	if r.Stage != "verify" || !errors.Is(r.Err, pki.ErrRevoked) {
		t.Fatalf("reconnect refusal %+v", r)
	}

	// Policy reload: bob is no longer admitted.
	srv.SetPolicy(&fakePolicy{admit: func(id *pki.Identity) policy.Decision {
		return policy.Decision{Allow: id.CommonName != "bob", Rule: "bob left"}
	}})
	srv.Revalidate()
	if err := waitFor(t, bev.down, "bob's disconnect"); !errors.As(err, &bye) || bye.Code != "denied" || !strings.Contains(bye.Message, "bob left") {
		t.Fatalf("bob told %v", err)
	}
	if n := len(srv.Sessions()); n != 0 {
		t.Fatalf("%d sessions left", n)
	}
}

// TestLimits checks the gateway's bounds: sessions, streams, handshake
// rate and handshakes in progress.
func TestLimits(t *testing.T) {
	f := newFixture(t)
	tgt := startTarget(t, echo)
	_, tport, _ := net.SplitHostPort(tgt.addr())

	t.Run("sessions", func(t *testing.T) {
		cfg := f.serverConfig(nil)
		cfg.MaxSessions = 1
		srv := startServer(t, cfg)
		ccfg := f.clientConfig(srv.Addr().String())
		var ev sessionEvents
		ev.hook(&ccfg)
		startClient(t, ccfg)
		waitFor(t, ev.up, "first session")
		c2, _ := NewClient(f.clientConfig(srv.Addr().String()), testLogger())
		c2.ctx, c2.cancel = contextWithCancel()
		defer c2.cancel()
		if _, err := c2.connect(srv.Addr().String()); !errors.Is(err, ErrLimit) {
			t.Fatalf("second session: %v", err)
		}
	})

	t.Run("streams", func(t *testing.T) {
		cfg := f.serverConfig(nil)
		cfg.Tuning.MaxStreams = 2
		srv := startServer(t, cfg)
		ccfg := f.clientConfig(srv.Addr().String())
		var ev sessionEvents
		ev.hook(&ccfg)
		c := startClient(t, ccfg)
		waitFor(t, ev.up, "session")
		port := mustPort(t, tport)
		var open []*clientSession
		for i := range 2 {
			cs, st, _, err := c.open("127.0.0.1", port)
			if err != nil {
				t.Fatalf("stream %d: %v", i, err)
			}
			defer st.Close()
			open = append(open, cs)
		}
		if _, _, _, err := c.open("127.0.0.1", port); !errors.Is(err, ErrLimit) {
			t.Fatalf("third stream: %v", err)
		}
		for _, cs := range open {
			cs.streamDone()
		}
	})

	t.Run("failure budget", func(t *testing.T) {
		// Two failed handshakes spend the source's budget; from then on
		// it may hold two handshakes at once, and a third connection
		// evicts the oldest one that has not sent a ClientHello.
		old := minEvictAge
		minEvictAge = 0 // any connection without a ClientHello may go
		t.Cleanup(func() { minEvictAge = old })
		refusals := make(chan Refusal, 8)
		cfg := f.serverConfig(nil)
		cfg.HandshakeRate, cfg.HandshakeBurst = 0.001, 2
		cfg.OnRefuse = func(r Refusal) { refusals <- r }
		srv := startServer(t, cfg)
		for range 2 {
			conn, err := net.Dial("tcp", srv.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			_, _ = conn.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
			if r := waitFor(t, refusals, "garbage refused"); r.Stage != "tls" {
				t.Fatalf("refusal %+v", r)
			}
			conn.Close()
		}
		var idle []net.Conn
		for range 3 {
			conn, err := net.Dial("tcp", srv.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			idle = append(idle, conn)
		}
		r := waitFor(t, refusals, "eviction")
		if r.Stage != "capacity" || !errors.Is(r.Err, errEvicted) || addrString(r.Remote) != idle[0].LocalAddr().String() {
			t.Fatalf("refusal %+v, want the first idle connection evicted", r)
		}
		if _, err := idle[0].Read(make([]byte, 1)); err == nil {
			t.Fatal("evicted connection not closed")
		}
	})

	t.Run("handshakes in progress", func(t *testing.T) {
		refusals := make(chan Refusal, 4)
		cfg := f.serverConfig(nil)
		cfg.MaxHandshakes = 1
		cfg.OnRefuse = func(r Refusal) { refusals <- r }
		srv := startServer(t, cfg)
		stalled, err := net.Dial("tcp", srv.Addr().String()) // says nothing
		if err != nil {
			t.Fatal(err)
		}
		defer stalled.Close()
		second, err := net.Dial("tcp", srv.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer second.Close()
		// The newcomer takes the slot of the connection that has not
		// even sent a ClientHello.
		if r := waitFor(t, refusals, "capacity refusal"); r.Stage != "capacity" || addrString(r.Remote) != stalled.LocalAddr().String() {
			t.Fatalf("refusal %+v, want the stalled connection evicted", r)
		}
	})
}

// TestStalledHandshakesEvicted: clients that send a ClientHello and then
// never answer the gateway's flight cannot hold every handshake slot: once
// they have stalled for stalledAge, a newcomer evicts the oldest.
func TestStalledHandshakesEvicted(t *testing.T) {
	old := stalledAge
	stalledAge = 200 * time.Millisecond
	t.Cleanup(func() { stalledAge = old })
	f := newFixture(t)
	refusals := make(chan Refusal, 8)
	cfg := f.serverConfig(nil)
	cfg.MaxHandshakes = 2
	cfg.OnRefuse = func(r Refusal) { refusals <- r }
	srv := startServer(t, cfg)
	var stalled []net.Conn
	for range 2 {
		raw, err := net.Dial("tcp", srv.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		stalled = append(stalled, raw)
		// The ClientHello goes out; the gateway's answer is never read,
		// so the client's second flight never comes.
		_, _ = raw.Write(clientHelloBytes(t))
	}
	time.Sleep(2 * stalledAge) // let them stall: the condition is time itself
	if n := srv.gate.inFlight(); n != 2 {
		t.Fatalf("%d handshakes in flight, want the 2 stalled ones", n)
	}
	start := time.Now()
	connectSession(t, f, srv.Addr().String())
	r := waitFor(t, refusals, "eviction")
	if r.Stage != "capacity" || !errors.Is(r.Err, errEvicted) {
		t.Fatalf("refusal %+v, want a stalled handshake evicted", r)
	}
	t.Logf("a client got in %s after two stalled handshakes filled the slots", time.Since(start).Round(time.Millisecond))
}

// clientHelloBytes is a real TLS 1.3 ClientHello offering twoway's ALPN.
func clientHelloBytes(t *testing.T) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go func() {
		_ = tls.Client(a, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{ALPN}, MinVersion: tls.VersionTLS13}).Handshake()
	}()
	buf := make([]byte, 16<<10)
	n, err := b.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

func mustPort(t *testing.T, s string) uint16 {
	t.Helper()
	p, err := parsePort(s, false)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDrain stops the gateway with a forwarded connection open: the
// connection keeps working until it ends, then Stop returns; a connection
// still open at the drain timeout is cut.
func TestDrain(t *testing.T) {
	f := newFixture(t)
	tgt := startTarget(t, echo)
	srv := startServer(t, f.serverConfig(nil))
	ccfg := f.clientConfig(srv.Addr().String(), mustForward(t, ForwardLocal, "127.0.0.1:0", tgt.addr()))
	var ev sessionEvents
	ev.hook(&ccfg)
	c := startClient(t, ccfg)
	waitFor(t, ev.up, "session")
	conn, err := net.Dial("tcp", c.Forwards()[0].Local.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	roundTrip(t, conn, "before")

	stopped := make(chan struct{})
	go func() { srv.Stop(); close(stopped) }()
	if err := waitFor(t, ev.down, "bye"); !errors.Is(err, ErrShutdown) {
		t.Fatalf("client told %v", err)
	}
	roundTrip(t, conn, "during the drain")
	select {
	case <-stopped:
		t.Fatal("Stop returned while a stream was open")
	default:
	}
	conn.Close()
	waitFor(t, stopped, "Stop after the last stream")

	t.Run("timeout", func(t *testing.T) {
		cfg := f.serverConfig(nil)
		cfg.DrainTimeout = 100 * time.Millisecond
		srv := startServer(t, cfg)
		ccfg := f.clientConfig(srv.Addr().String(), mustForward(t, ForwardLocal, "127.0.0.1:0", tgt.addr()))
		var ev sessionEvents
		ev.hook(&ccfg)
		c := startClient(t, ccfg)
		waitFor(t, ev.up, "session")
		conn, err := net.Dial("tcp", c.Forwards()[0].Local.String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		roundTrip(t, conn, "x")
		srv.Stop() // returns after the drain timeout
		if _, err := conn.Read(make([]byte, 1)); err == nil {
			t.Fatal("stream survived the drain timeout")
		}
	})
}

// freezeProxy forwards TCP between a client and a gateway until frozen,
// after which it passes nothing in either direction but keeps both
// connections open: a peer that silently died.
type freezeProxy struct {
	ln     net.Listener
	frozen chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
}

func startFreezeProxy(t *testing.T, target string) *freezeProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezeProxy{ln: ln, frozen: make(chan struct{})}
	pipe := func(dst, src net.Conn) {
		defer p.wg.Done()
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			select {
			case <-p.frozen:
				return
			default:
			}
			if n > 0 {
				dst.Write(buf[:n])
			}
			if err != nil {
				return
			}
		}
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			a, err := ln.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", target)
			if err != nil {
				a.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, a, b)
			p.mu.Unlock()
			p.wg.Add(2)
			go pipe(a, b)
			go pipe(b, a)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.freeze()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *freezeProxy) freeze() { p.once.Do(func() { close(p.frozen) }) }

// TestDeadPeer freezes the path between a connected client and gateway:
// both must notice within the dead-peer timeout, and an idle but live
// session must not be mistaken for a dead one.
func TestDeadPeer(t *testing.T) {
	f := newFixture(t)
	tuning := Tuning{KeepAliveInterval: 50 * time.Millisecond, DeadPeerTimeout: 300 * time.Millisecond}
	scfg := f.serverConfig(nil)
	scfg.Tuning = tuning
	ended := make(chan error, 4)
	scfg.OnSessionEnd = func(_ SessionInfo, err error) { ended <- err }
	srv := startServer(t, scfg)
	proxy := startFreezeProxy(t, srv.Addr().String())

	ccfg := f.clientConfig(proxy.ln.Addr().String())
	ccfg.Tuning = tuning
	var ev sessionEvents
	ev.hook(&ccfg)
	startClient(t, ccfg)
	waitFor(t, ev.up, "session")

	// Idle for several dead-peer timeouts: keepalives must hold it up.
	select {
	case err := <-ev.down:
		t.Fatalf("idle session dropped: %v", err)
	case <-time.After(4 * tuning.DeadPeerTimeout):
	}

	proxy.freeze()
	start := time.Now()
	if err := waitFor(t, ev.down, "client noticing"); !errors.Is(err, ErrPeerDead) {
		t.Fatalf("client: %v", err)
	}
	if err := waitFor(t, ended, "gateway noticing"); !errors.Is(err, ErrPeerDead) {
		t.Fatalf("gateway: %v", err)
	}
	if took := time.Since(start); took > 2*tuning.DeadPeerTimeout+time.Second {
		t.Fatalf("took %s to notice", took)
	}
}

// TestNoLeaks runs a full scenario and checks that Stop leaves no
// goroutine behind, right after Stop and with connections still open.
// Goroutines left by earlier tests are TestMain's to find.
func TestNoLeaks(t *testing.T) {
	earlier := goleak.IgnoreCurrent()
	f := newFixture(t)
	tgt := startTarget(t, echo)
	srv, err := NewServer(f.serverConfig(nil), testLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	svc := startTarget(t, echo)
	ccfg := f.clientConfig(srv.Addr().String(), mustForward(t, ForwardLocal, "127.0.0.1:0", tgt.addr()), mustForward(t, ForwardRemote, "127.0.0.1:0", svc.addr()))
	ccfg.DrainTimeout = 50 * time.Millisecond
	var ev sessionEvents
	ev.hook(&ccfg)
	remote := make(chan string, 1)
	ccfg.OnRemoteListen = func(_ Forward, bound string, _ error) { remote <- bound }
	c, err := NewClient(ccfg, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ev.up, "session")
	for _, addr := range []string{c.Forwards()[0].Local.String(), waitFor(t, remote, "remote listener")} {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, conn, "leak check")
		defer conn.Close()
	}
	// Stop with connections still open on both forwards.
	c.Stop()
	srv.Stop()
	if err := srv.Wait(); err != nil {
		t.Fatalf("server Wait: %v", err)
	}
	checkNoLeaks(t, earlier)
}

// TestClientLeavesDeadGateway: a client whose gateway stops answering
// (dead peer, no FIN) reconnects to the next gateway first, without
// trying the dead one again, whose dial would hang until its timeout.
func TestClientLeavesDeadGateway(t *testing.T) {
	f := newFixture(t)
	fast := Tuning{KeepAliveInterval: 100 * time.Millisecond, DeadPeerTimeout: 600 * time.Millisecond}
	scfg := f.serverConfig(nil)
	scfg.Tuning = fast
	a := startServer(t, scfg)
	b := startServer(t, scfg)
	pa := startFreezeProxy(t, a.Addr().String())
	ccfg := f.clientConfig(pa.ln.Addr().String())
	ccfg.Endpoints = append(ccfg.Endpoints, b.Addr().String())
	ccfg.Tuning = fast
	var ev sessionEvents
	ev.hook(&ccfg)
	c := startClient(t, ccfg)
	waitFor(t, ev.up, "session through the first gateway")
	if n := len(a.Sessions()); n != 1 {
		t.Fatalf("first gateway holds %d sessions, want 1", n)
	}

	pa.mu.Lock()
	dials := len(pa.conns)
	pa.mu.Unlock()
	pa.freeze()
	if err := waitFor(t, ev.down, "dead gateway noticed"); !errors.Is(err, ErrPeerDead) {
		t.Fatalf("session ended with %v, want ErrPeerDead", err)
	}
	waitFor(t, ev.up, "session through the second gateway")
	c.mu.Lock()
	ep := c.cur.endpoint
	c.mu.Unlock()
	if ep != b.Addr().String() {
		t.Errorf("reconnected to %s, want the second gateway %s", ep, b.Addr())
	}
	pa.mu.Lock()
	defer pa.mu.Unlock()
	if len(pa.conns) != dials {
		t.Errorf("the client dialled the dead gateway again before the next one")
	}
}

// TestShuffleEndpoints: each client draws its own order of the gateways,
// a permutation of them; without shuffling every client starts at the
// first.
func TestShuffleEndpoints(t *testing.T) {
	f := newFixture(t)
	eps := []string{"198.18.0.1:443", "198.18.0.2:443", "198.18.0.3:443"}
	first := make(map[string]int)
	for range 60 {
		cfg := f.clientConfig(eps[0])
		cfg.Endpoints = eps
		cfg.ShuffleEndpoints = true
		c, err := NewClient(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := slices.Sorted(slices.Values(c.order)); !slices.Equal(got, eps) {
			t.Fatalf("order %v is not a permutation of %v", c.order, eps)
		}
		first[c.order[0]]++
	}
	// 60 draws of 3: each gateway first at least 5 times, but for a
	// chance below 1e-6.
	for _, ep := range eps {
		if first[ep] < 5 {
			t.Errorf("%s first in %d of 60 clients: %v", ep, first[ep], first)
		}
	}
	cfg := f.clientConfig(eps[0])
	cfg.Endpoints = eps
	c, err := NewClient(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.order, eps) {
		t.Errorf("unshuffled order %v, want %v", c.order, eps)
	}
}
