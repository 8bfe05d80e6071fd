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
type memoryRelease struct {
	mu   sync.Mutex
	peak int       // guarded by mu
	last time.Time // guarded by mu
}

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
