package tunnel

import (
	"runtime"
	"testing"
	"time"
)

// TestIdleSessionGoroutines: an idle session costs each side four
// goroutines, yamux's reader and writer, the control reader and the stream
// acceptor, and no more: goroutine stacks are most of what an idle session
// costs the gateway (bench/scale.sh). The watchdog is a timer, the write
// flusher runs only while there is something to write, and the goroutine
// that ran the gateway's handshake returns once the session is up.
func TestIdleSessionGoroutines(t *testing.T) {
	f := newFixture(t)
	cfg := f.serverConfig(nil)
	cfg.MaxSessionsPerIdentity = 0 // one certificate for all n
	srv := startServer(t, cfg)
	base := runtime.NumGoroutine()
	const n, perSession = 8, 8 // both ends of a session in this process
	for range n {
		connectSession(t, f, srv.Addr().String())
	}
	// The gateway's first RTT probe, and yamux's ping handlers, are
	// short-lived goroutines: wait for them to end.
	var per float64
	deadline := time.Now().Add(10 * time.Second)
	for {
		per = float64(runtime.NumGoroutine()-base) / n
		if per <= perSession || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond) // polling a count with no event to wait on
	}
	if live := len(srv.Sessions()); live != n {
		t.Fatalf("%d sessions live, want %d", live, n)
	}
	if per > perSession {
		t.Fatalf("an idle session holds %.1f goroutines (gateway and client), want at most %d", per, perSession)
	}
	t.Logf("%.1f goroutines per idle session, both ends", per)
}

// TestZeroLimitsMeanOff: in ServerConfig, as in server.toml, a handshake
// rate and a per-identity session limit of 0 mean no limit (the daemon
// passes server.toml's values through unchanged); the defaults are
// stated by the caller, and negative values are refused.
func TestZeroLimitsMeanOff(t *testing.T) {
	f := newFixture(t)
	cfg := f.serverConfig(nil)
	cfg.HandshakeRate, cfg.HandshakeBurst, cfg.MaxSessionsPerIdentity = 0, 0, 0
	srv, err := NewServer(cfg, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	if srv.gate.limiter != nil || srv.cfg.MaxSessionsPerIdentity != 0 {
		t.Fatalf("0 did not turn the limits off: limiter %v, per identity %d", srv.gate.limiter != nil, srv.cfg.MaxSessionsPerIdentity)
	}
	cfg.HandshakeRate = DefaultHandshakeRate
	if srv, err = NewServer(cfg, testLogger()); err != nil || srv.gate.limiter == nil || srv.cfg.HandshakeBurst != DefaultHandshakeBurst {
		t.Fatalf("a rate without a burst: %v, burst %d", err, srv.cfg.HandshakeBurst)
	}
	for _, bad := range []func(*ServerConfig){
		func(c *ServerConfig) { c.HandshakeRate = -1 },
		func(c *ServerConfig) { c.MaxSessionsPerIdentity = -1 },
	} {
		c := f.serverConfig(nil)
		bad(&c)
		if _, err := NewServer(c, testLogger()); err == nil {
			t.Error("a negative limit was accepted")
		}
	}
}
