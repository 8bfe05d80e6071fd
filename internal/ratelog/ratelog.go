// Package ratelog keeps per-event log lines (a dropped packet, a refused
// connection, a device write the kernel refused) from flooding the log: a
// Limiter lets a few lines through per period and counts the rest, so the
// next line that goes out can say how many were suppressed. The tunnel and
// the packet router share it; it lives here because the router cannot
// import the tunnel, which imports the router.
package ratelog

import (
	"sync"
	"time"
)

// Limiter lets up to n log lines through per period and counts the rest.
// The zero value is ready to use; a Limiter is safe for concurrent use.
// The period starts at the first line let through after the previous one
// ended, so with n = 1 lines are at least one period apart.
type Limiter struct {
	mu         sync.Mutex // guards the fields below
	window     time.Time  // start of the current period
	count      int        // lines let through in it
	suppressed uint64     // lines held back since the last one let through
}

// Allow reports whether a line may be logged at now, given at most n lines
// per period, and if so how many were suppressed since the last one. The
// caller passes the clock so tests can drive it.
func (l *Limiter) Allow(now time.Time, n int, per time.Duration) (suppressed uint64, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.window) >= per || now.Before(l.window) {
		l.window, l.count = now, 0
	}
	if l.count >= n {
		l.suppressed++
		return 0, false
	}
	l.count++
	s := l.suppressed
	l.suppressed = 0
	return s, true
}

// Flush returns and resets the suppressed count: for a last line when the
// thing being logged about goes away.
func (l *Limiter) Flush() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.suppressed
	l.suppressed = 0
	return s
}
