package tunnel

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestIdleFloodDoesNotLockOut is the first test: 1,000 idle TCP
// connections from 50 loopback addresses, and at the same time 200
// clients with valid certificates from one address. Every client must get
// its session within 5 s (the race detector's slowdown gets a longer
// bound; the same test without it runs in CI's storm step).
func TestIdleFloodDoesNotLockOut(t *testing.T) {
	if testing.Short() {
		t.Skip("storm test: skipped with -short")
	}
	f := newFixture(t)
	cfg := f.serverConfig(nil)
	cfg.HandshakeRate, cfg.HandshakeBurst = DefaultHandshakeRate, DefaultHandshakeBurst // the defaults: 5/s, burst 20
	cfg.HandshakeTimeout = 0                                                            // default 10 s
	cfg.MaxSessionsPerIdentity = 0                                                      // one certificate stands for 200 users
	var stages sync.Map
	cfg.OnRefuse = func(r Refusal) {
		v, _ := stages.LoadOrStore(r.Stage+": "+fmt.Sprint(r.Err)[:min(60, len(fmt.Sprint(r.Err)))], new(atomic.Int32))
		v.(*atomic.Int32).Add(1)
	}
	srv := startServer(t, cfg)
	addr := srv.Addr().String()

	var idle []net.Conn
	var mu sync.Mutex
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range idle {
			c.Close()
		}
	}()
	var wg sync.WaitGroup
	for i := range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 1, byte(1+i%50))}}
			c, err := d.Dial("tcp", addr)
			if err == nil {
				mu.Lock()
				idle = append(idle, c)
				mu.Unlock()
			}
		}()
	}

	c, err := NewClient(f.clientConfig(addr), testLogger())
	if err != nil {
		t.Fatal(err)
	}
	c.ctx, c.cancel = contextWithCancel()
	defer c.cancel()
	bound := 5 * time.Second
	if raceEnabled {
		bound = 15 * time.Second
	}
	start := time.Now()
	var ok atomic.Int32
	errs := make(chan error, 200)
	var cw sync.WaitGroup
	for range 200 {
		cw.Add(1)
		go func() {
			defer cw.Done()
			// A real client retries a refused connection; so does this
			// one, within the bound.
			for time.Since(start) < bound {
				cs, err := c.connect(addr)
				if err == nil {
					ok.Add(1)
					cs.close(ErrStopped)
					cs.wait()
					return
				}
				errs <- err
				time.Sleep(50 * time.Millisecond) // a client's reconnect backoff
			}
		}()
	}
	cw.Wait()
	took := time.Since(start)
	wg.Wait()
	close(errs)
	failures := 0
	var first error
	for err := range errs {
		if first == nil {
			first = err
		}
		failures++
	}
	t.Logf("200 clients in %v beside 1000 idle connections from 50 addresses; %d failed attempts (first: %v)", took.Round(time.Millisecond), failures, first)
	stages.Range(func(k, v any) bool { t.Logf("refused %d x %s", v.(*atomic.Int32).Load(), k); return true })
	if n := ok.Load(); n != 200 {
		t.Fatalf("%d of 200 clients got a session within %v", n, bound)
	}
}

// TestRestartStorm is the second test: a gateway with 2,000
// clients behind one address is restarted; with the default limits all of
// them must be back within 60 s.
func TestRestartStorm(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("storm test: 4,000 handshakes take minutes under the race detector or -short; CI runs it in its storm step")
	}
	const n = 2000
	f := newFixture(t)
	cfg := f.serverConfig(nil)
	cfg.HandshakeRate, cfg.HandshakeBurst, cfg.HandshakeTimeout = DefaultHandshakeRate, DefaultHandshakeBurst, 0 // defaults
	cfg.MaxSessionsPerIdentity = 0                                                                               // one certificate stands for 2,000 users
	var up atomic.Int64
	cfg.OnSession = func(SessionInfo) { up.Add(1) }
	srv := startServer(t, cfg)
	addr := srv.Addr().String()

	var clients []*Client
	for range n {
		ccfg := f.clientConfig(addr)
		ccfg.BackoffMin, ccfg.BackoffMax = 0, 0 // the defaults: 0.5 s doubling to 30 s
		c, err := NewClient(ccfg, testLogger())
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	for _, c := range clients {
		if err := c.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		defer c.Stop()
	}
	waitCount := func(what string, want int64, bound time.Duration) time.Duration {
		start := time.Now()
		for up.Load() < want {
			if time.Since(start) > bound {
				t.Fatalf("%s: %d of %d sessions after %v", what, up.Load()-(want-n), n, bound)
			}
			time.Sleep(10 * time.Millisecond) // polling a counter the hook fills
		}
		return time.Since(start)
	}
	first := waitCount("first start", n, 120*time.Second)

	srv.Stop()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s again: %v", addr, err)
	}
	cfg.Listen, cfg.Listener = "", ln
	srv2 := startServer(t, cfg)
	_ = srv2
	again := waitCount("after the restart", 2*n, 60*time.Second)
	t.Logf("%d clients behind one address: first start %v, back after a restart in %v", n, first.Round(time.Millisecond), again.Round(time.Millisecond))

}

// lineCounter counts log lines containing a string.
type lineCounter struct {
	mu    sync.Mutex
	lines []string
}

func (l *lineCounter) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.lines = append(l.lines, string(p))
	l.mu.Unlock()
	return len(p), nil
}

func (l *lineCounter) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		if strings.Contains(line, s) {
			n++
		}
	}
	return n
}

// TestRefusalLogIsRateLimited: a storm of 300 refused connections is a
// handful of log lines and a count, not 300 lines; the hook still sees
// every refusal.
func TestRefusalLogIsRateLimited(t *testing.T) {
	f := newFixture(t)
	cfg := f.serverConfig(nil)
	var hooked atomic.Int32
	cfg.OnRefuse = func(Refusal) { hooked.Add(1) }
	var logs lineCounter
	srv, err := NewServer(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	start := time.Now()
	for range 300 {
		c, err := net.Dial("tcp", srv.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
		_, _ = io.Copy(io.Discard, c)
		c.Close()
	}
	for hooked.Load() < 300 {
		time.Sleep(5 * time.Millisecond) // polling a counter the hook fills
	}
	// One more, a second later: it is logged with the count of the rest.
	time.Sleep(time.Second) // the log budget is per second of wall time
	c, err := net.Dial("tcp", srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = c.Write([]byte("x"))
	_, _ = io.Copy(io.Discard, c)
	c.Close()
	for hooked.Load() < 301 {
		time.Sleep(5 * time.Millisecond)
	}
	secs := int(time.Since(start)/time.Second) + 1
	if n := logs.count(`msg="connection refused"`); n > refusalLogBurst*secs || n < 2 {
		t.Fatalf("%d refusal lines for 301 refusals in %d s", n, secs)
	}
	if logs.count("connection refusals not logged") == 0 {
		t.Fatal("the suppressed refusals were not counted in the log")
	}
}
