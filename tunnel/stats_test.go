package tunnel

import (
	"errors"
	"io"
	"net"
	"testing"
)

// TestStatsAndKick: counters move with traffic, survive into the totals
// after the session ends, and Kick ends exactly the named identity's
// session with a reason the client sees.
func TestStatsAndKick(t *testing.T) {
	f := newFixture(t)
	srv := startServer(t, f.serverConfig(nil))
	tgt := startTarget(t, echo)
	ccfg := f.clientConfig(srv.Addr().String(), mustForward(t, ForwardLocal, "127.0.0.1:0", tgt.addr()))
	var ev sessionEvents
	ev.hook(&ccfg)
	c := startClient(t, ccfg)
	waitFor(t, ev.up, "client session")

	before := srv.Sessions()
	if len(before) != 1 {
		t.Fatalf("%d sessions", len(before))
	}
	const size = 1 << 20
	conn, err := net.Dial("tcp", c.Forwards()[0].Local.String())
	if err != nil {
		t.Fatal(err)
	}
	go func() { conn.Write(make([]byte, size)); conn.(*net.TCPConn).CloseWrite() }()
	if n, err := io.Copy(io.Discard, conn); err != nil || n != size {
		t.Fatalf("echo: %d bytes, %v", n, err)
	}
	conn.Close()

	after := srv.Sessions()[0].Stats
	if after.BytesIn < size || after.BytesOut < size {
		t.Fatalf("gateway counted in=%d out=%d after echoing %d bytes", after.BytesIn, after.BytesOut, size)
	}
	if after.StreamsOpened != 1 {
		t.Fatalf("streams opened %d, want 1", after.StreamsOpened)
	}
	cs, ok := c.Stats()
	if !ok || cs.BytesOut < size || cs.BytesIn < size || cs.StreamsOpened != 1 {
		t.Fatalf("client stats %+v", cs)
	}

	if n := srv.Kick("nobody"); n != 0 {
		t.Fatalf("kicked %d sessions of an unknown identity", n)
	}
	if n := srv.Kick("alice"); n != 1 {
		t.Fatalf("kicked %d sessions of alice, want 1", n)
	}
	if err := waitFor(t, ev.down, "client disconnect"); !errors.Is(err, ErrDenied) {
		t.Fatalf("client saw %v, want a denial", err)
	}
	// The ended session's traffic stays in the totals.
	tot := srv.Totals()
	if tot.Sessions < 1 || tot.BytesIn < size || tot.StreamsOpened < 1 {
		t.Fatalf("totals %+v", tot)
	}
}
