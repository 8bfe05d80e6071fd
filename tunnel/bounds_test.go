package tunnel

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// TestRefusedStreamsBounded: a peer that opens streams the gateway refuses
// and never closes its end keeps each one alive in yamux (half-closed,
// with a full receive window it may fill). Those must stay bounded too: the
// gateway ends such a session rather than hold them without limit.
func TestRefusedStreamsBounded(t *testing.T) {
	f := newFixture(t)
	scfg := f.serverConfig(nil)
	scfg.Tuning.MaxStreams = 2
	ended := make(chan error, 1)
	scfg.OnSessionEnd = func(_ SessionInfo, err error) { ended <- err }
	srv := startServer(t, scfg)
	cs := connectSession(t, f, srv.Addr().String())

	hdr, _ := streamHeader{Kind: StreamKind(99)}.marshal()
	n := 2*acceptBacklog + 10
	for i := range n {
		st, err := cs.mux.OpenStream()
		if err != nil {
			break // the gateway ended the session: what we want
		}
		_ = st.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := st.Write(hdr); err != nil {
			break
		}
		rep, err := readStreamReply(st)
		if err != nil {
			break
		}
		if rep.Code == CodeOK {
			t.Fatalf("stream %d accepted", i)
		}
		// Hostile: never close our end.
	}
	select {
	case err := <-ended:
		if !errors.Is(err, ErrLimit) {
			t.Fatalf("session ended with %v, want ErrLimit", err)
		}
	case <-time.After(5 * time.Second):
		srv.mu.Lock()
		defer srv.mu.Unlock()
		for _, ss := range srv.sessions {
			t.Fatalf("gateway still holds the session with %d streams (limit %d)", ss.mux.NumStreams(), scfg.Tuning.MaxStreams)
		}
	}
}

// TestStopDrainsPastStalledSession: one client that stopped reading (its
// gateway session's writes are stuck) must not hold up the bye to the
// others when the gateway stops.
func TestStopDrainsPastStalledSession(t *testing.T) {
	f := newFixture(t)
	// An endless download, so that a stalled client's session has writes
	// pending behind its full socket.
	tgt := endlessDownload(t)
	const stall = 3 * time.Second
	scfg := f.serverConfig(nil)
	scfg.Tuning = Tuning{KeepAliveInterval: time.Second, DeadPeerTimeout: stall}
	srv := startServer(t, scfg)
	proxy := startFreezeProxy(t, srv.Addr().String())

	// Several stalled sessions, so that Stop is unlikely to reach the
	// healthy one first by chance.
	for range 3 {
		downloadingClient(t, f, proxy, tgt, 10*stall)
	}
	proxy.freeze()

	ccfg := f.clientConfig(srv.Addr().String())
	var ev sessionEvents
	ev.hook(&ccfg)
	startClient(t, ccfg)
	waitFor(t, ev.up, "healthy session")
	waitStalled(t, srv, 3)

	go srv.Stop()
	start := time.Now()
	if err := waitFor(t, ev.down, "bye"); !errors.Is(err, ErrShutdown) {
		t.Fatalf("healthy client told %v", err)
	}
	if took := time.Since(start); took > stall/2 {
		t.Fatalf("healthy client got its bye after %s, behind the stalled ones", took)
	}
}

// TestPingFloodEndsSession: an authenticated peer that floods multiplexer
// pings (each answered by a goroutine of yamux's) loses its session, and
// the gateway says why.
func TestPingFloodEndsSession(t *testing.T) {
	f := newFixture(t)
	scfg := f.serverConfig(nil)
	ended := make(chan error, 2)
	scfg.OnSessionEnd = func(_ SessionInfo, err error) { ended <- err }
	// The client is done with the hello when it has the gateway's, a
	// moment before the gateway has registered the session: a flood in
	// that moment is refused at the hello stage instead, equally right.
	scfg.OnRefuse = func(r Refusal) { ended <- r.Err }
	srv := startServer(t, scfg)
	cs := connectSession(t, f, srv.Addr().String())
	// Straight into the connection under yamux, as a hostile peer would.
	for i := range 2 * pingBurst {
		if _, err := cs.conn.Write(pingFrame(true, uint32(i))); err != nil {
			break
		}
	}
	select {
	case err := <-ended:
		if !errors.Is(err, ErrPingFlood) {
			t.Fatalf("session ended with %v, want ErrPingFlood", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the gateway kept a session flooding it with pings")
	}
}

// TestKickStalledSessionIsPrompt: kicking a client that stopped reading
// must not wait for its session's stall timeout; the bye gets a second,
// then the session is closed regardless.
func TestKickStalledSessionIsPrompt(t *testing.T) {
	f := newFixture(t)
	const stall = 8 * time.Second
	scfg := f.serverConfig(nil)
	scfg.Tuning = Tuning{KeepAliveInterval: time.Second, DeadPeerTimeout: stall}
	srv := startServer(t, scfg)
	proxy := startFreezeProxy(t, srv.Addr().String())
	downloadingClient(t, f, proxy, endlessDownload(t), 10*stall)
	proxy.freeze()
	waitStalled(t, srv, 1)

	start := time.Now()
	if n := srv.Kick(f.clientLeaf.Cert.Subject.CommonName); n != 1 {
		t.Fatalf("kicked %d sessions, want 1", n)
	}
	if took := time.Since(start); took > stall/2 {
		t.Fatalf("Kick of a stalled session took %s (stall timeout %s)", took, stall)
	}
}

// waitStalled waits until n of the gateway's sessions have their writes
// stuck behind a peer that does not read: a Write to the socket has not
// finished for stuckAfter, and nothing new was accepted for writing
// meanwhile (the bulk writers wait for it, paced, or yamux's send loop
// does, behind a full buffer). A Write that is merely slow (encrypting
// under the race detector, say) finishes sooner, and then the writers go
// on: the bytes accepted for writing change.
func waitStalled(t *testing.T, srv *Server, n int) {
	t.Helper()
	const stuckAfter = 200 * time.Millisecond
	type mark struct {
		tx    uint64
		since time.Time
	}
	full := make(map[*muxConn]mark)
	deadline := time.Now().Add(10 * time.Second)
	for {
		srv.mu.Lock()
		conns := make([]*muxConn, 0, len(srv.sessions))
		for _, ss := range srv.sessions {
			conns = append(conns, ss.conn)
		}
		srv.mu.Unlock()
		stuck := 0
		for _, c := range conns {
			c.mu.Lock()
			// A write in progress, with more waiting (in the buffer or,
			// paced, in front of it) and no progress: stuck.
			isFull, tx := c.writing && c.inflight > 0, c.tx.Load()
			c.mu.Unlock()
			switch m, ok := full[c]; {
			case !isFull:
				delete(full, c)
			case !ok || m.tx != tx:
				full[c] = mark{tx, time.Now()}
			case time.Since(m.since) >= stuckAfter:
				stuck++
			}
		}
		if stuck >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of the gateway's sessions have their writes stuck, want %d", stuck, n)
		}
		time.Sleep(5 * time.Millisecond) // polling a state that has no event to wait on
	}
}

// endlessDownload is a target that writes to each connection until it
// fails.
func endlessDownload(t *testing.T) *testTarget {
	t.Helper()
	return startTarget(t, func(c net.Conn) {
		buf := make([]byte, 64<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
}

// downloadingClient connects a client through proxy with a forward to tgt
// and starts reading one download; it returns once data flows. The caller
// then freezes the proxy to stall the session.
func downloadingClient(t *testing.T, f *fixture, proxy *freezeProxy, tgt *testTarget, deadPeer time.Duration) net.Conn {
	t.Helper()
	ccfg := f.clientConfig(proxy.ln.Addr().String(), mustForward(t, ForwardLocal, "127.0.0.1:0", tgt.addr()))
	ccfg.Tuning = Tuning{KeepAliveInterval: time.Second, DeadPeerTimeout: deadPeer}
	var ev sessionEvents
	ev.hook(&ccfg)
	c := startClient(t, ccfg)
	waitFor(t, ev.up, "session")
	proxy.smallBuffers()
	conn, err := net.Dial("tcp", c.Forwards()[0].Local.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := io.ReadFull(conn, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	return conn
}

// smallBuffers fixes the proxy's receive buffers, before a download
// starts, at a size TCP autotuning would grow past: what the gateway sends
// a frozen session then backs up into the gateway soon. With autotuning a
// frozen proxy could absorb more than a stream's window (tcp_rmem's maximum
// is 32 MiB on some systems), and the gateway's writes would never block.
func (p *freezeProxy) smallBuffers() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.(*net.TCPConn).SetReadBuffer(64 << 10)
	}
}

// connectSession is one client session to addr, driven by the test alone
// (no reconnects, no forwards); it is closed when the test ends.
func connectSession(t *testing.T, f *fixture, addr string) *clientSession {
	t.Helper()
	c, err := NewClient(f.clientConfig(addr), testLogger())
	if err != nil {
		t.Fatal(err)
	}
	c.ctx, c.cancel = contextWithCancel()
	t.Cleanup(c.cancel)
	cs, err := c.connect(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.close(ErrStopped); cs.wait() })
	return cs
}

// TestEarlyResetAbortsProxy: a reset can arrive for a stream before it is
// proxied (the peer gave up while this side was still dialing). It must
// abort the stream once proxy starts, closing the local connection,
// rather than be lost and leave both waiting.
func TestEarlyResetAbortsProxy(t *testing.T) {
	f := newFixture(t)
	srv := startServer(t, f.serverConfig(nil))
	cs := connectSession(t, f, srv.Addr().String())
	st, err := cs.mux.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	cs.abortStream(st.StreamID()) // the peer's reset, before proxy

	local, remote := net.Pipe()
	defer remote.Close()
	done := make(chan struct{})
	go func() { defer close(done); cs.proxy(st, local) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("proxy kept a stream the peer had reset")
	}
	if _, err := remote.Read(make([]byte, 1)); err == nil {
		t.Fatal("the local connection of a reset stream is still open")
	}

	// Bounded: resets for streams that never come do not pile up.
	for i := range 10 * maxEarlyResets {
		cs.abortStream(uint32(1_000_000 + i))
	}
	cs.mu.Lock()
	n := len(cs.early)
	cs.mu.Unlock()
	if n > maxEarlyResets {
		t.Fatalf("%d early resets kept, bound %d", n, maxEarlyResets)
	}
}
