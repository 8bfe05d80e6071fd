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
	cfg.MaxSessionsPerIdentity = -1 // one certificate for all n
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
