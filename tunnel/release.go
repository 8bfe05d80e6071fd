package tunnel

import (
	"runtime/debug"
	"sync"
	"time"
)

// memoryRelease gives memory back to the OS after many sessions have ended.
// The Go runtime keeps freed heap and goroutine stacks for reuse and
// returns them slowly: after 10,000 sessions closed, a gateway kept 1 GB
// (bench/scale.sh). That is right for a population that comes back, wrong
// for one that has gone, and an operator reading RSS cannot tell the two
// from a leak. So when the live sessions have fallen to half of the peak
// since the last release, at most once per releaseEvery (or when the last
// session of such a peak ends), the gateway collects and returns what is
// free.
//
// Arrivals leave memory behind too: every handshake makes some 100 KiB of
// garbage, and the heap the collector grew to hold it stays mapped until
// the next collection that finds it free, which an idle gateway does not
// run for minutes, and the runtime does not return it then either while it
// is below the heap goal. 10,000 sessions arriving held 9 KiB per session
// of such free memory 5 minutes later (bench/scale.sh). So settleAfter
// after every releaseMinPeak arrivals, the gateway releases once as well.
type memoryRelease struct {
	mu       sync.Mutex
	peak     int         // guarded by mu
	last     time.Time   // guarded by mu
	arrivals int         // sessions established since the last release; guarded by mu
	armed    bool        // a settle release is due; guarded by mu
	settle   *time.Timer // the armed release's timer; guarded by mu
	stopped  bool        // guarded by mu
}

// settleAfter is how long after a wave of arrivals the release runs: long
// enough for a reconnecting population to be back, so that it runs once.
const settleAfter = time.Minute

// releaseEvery bounds how often a release runs; it costs a full GC.
const releaseEvery = 30 * time.Second

// releaseMinPeak is the smallest peak worth a release: a few sessions
// leave nothing to speak of.
const releaseMinPeak = 256

// observe records the live session count and reports whether to release
// now (and then starts a new peak).
func (m *memoryRelease) observe(live int, now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.peak = max(m.peak, live)
	// The last session of a large population is worth a release even
	// soon after the previous one: nothing of it will be reused.
	if m.peak < releaseMinPeak || live > m.peak/2 || now.Sub(m.last) < releaseEvery && live > 0 {
		return false
	}
	m.peak, m.last = live, now
	return true
}

// arrived records an established session and reports whether to arm the
// settle release (see memoryRelease), which it then counts as armed: once
// per releaseMinPeak arrivals, and not while one is armed.
func (m *memoryRelease) arrived() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.arrivals++
	if m.arrivals < releaseMinPeak || m.armed || m.stopped {
		return false
	}
	m.armed = true
	return true
}

// settled disarms the settle release as it runs, and reports whether it
// should still release.
func (m *memoryRelease) settled(now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.arrivals, m.armed, m.settle, m.last = 0, false, nil, now
	return !m.stopped
}

// sessionStarted is called when a session is established.
func (s *Server) sessionStarted() {
	if !s.release.arrived() {
		return
	}
	m := &s.release
	t := time.AfterFunc(settleAfter, func() {
		if m.settled(time.Now()) {
			debug.FreeOSMemory()
		}
	})
	m.mu.Lock()
	if m.armed {
		m.settle = t
	}
	m.mu.Unlock()
}

// stop disarms the settle release.
func (m *memoryRelease) stop() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.stopped = true
	if m.settle != nil {
		m.settle.Stop()
	}
}

// sessionEnded is called after a session is removed, with the live count.
func (s *Server) sessionEnded(live int) {
	if !s.release.observe(live, time.Now()) {
		return
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		debug.FreeOSMemory()
	}()
}
