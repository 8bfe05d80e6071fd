// Package renew keeps a client certificate fresh: at about two thirds of
// its lifetime the client asks its gateway, over the live session, to
// certify a new key for the same identity (tunnel.Client.Renew), writes
// the new key and certificate over the files its configuration names and
// reloads them for the next connection, leaving the current session
// alone. When is decided by Plan, a pure function of the certificate's
// validity, the failures so far, the clock and a random draw.
package renew

import (
	"time"
)

// Plan decides when to renew. The zero Plan is not useful; start from
// DefaultPlan.
type Plan struct {
	// At is the fraction of the lifetime after which to renew (2/3).
	At float64
	// Jitter spreads renewals over ±Jitter of the lifetime (0.05), so
	// that a fleet enrolled at once does not renew at once.
	Jitter float64
	// RetryMin and RetryMax bound the delay between failed attempts,
	// which doubles from RetryMin (30 s, 1 h).
	RetryMin, RetryMax time.Duration
}

// DefaultPlan renews at two thirds of the lifetime, ±5%, and retries from
// 30 s up to an hour apart.
var DefaultPlan = Plan{At: 2.0 / 3, Jitter: 0.05, RetryMin: 30 * time.Second, RetryMax: time.Hour}

// State is what Next decides on.
type State struct {
	// NotBefore and NotAfter are the current certificate's validity.
	NotBefore, NotAfter time.Time
	// Failures counts the attempts that failed since the certificate was
	// last renewed (or loaded); LastAttempt is when the last one was.
	Failures    int
	LastAttempt time.Time
}

// Next returns when to try to renew. u is a random draw in [0, 1) (the
// same u for the same certificate keeps its due time stable). With no
// failures that is At of the lifetime, moved by up to ±Jitter of it. After
// failures it is the last attempt plus a delay doubling from RetryMin to
// RetryMax, moved by up to ±10% by u, and never later than it leaves
// room for: the delay is at most a quarter of the time left, so that
// several tries fit before expiry (a certificate of 7 days with 2 days
// left retries within 12 hours, then within 6...), but at least RetryMin.
// A time in the past means now.
func (p Plan) Next(s State, u float64) time.Time {
	life := s.NotAfter.Sub(s.NotBefore)
	if s.Failures == 0 {
		frac := p.At + p.Jitter*(2*u-1)
		return s.NotBefore.Add(time.Duration(float64(life) * frac))
	}
	d := p.RetryMin
	for i := 1; i < s.Failures && d < p.RetryMax; i++ {
		d *= 2
	}
	d = min(d, p.RetryMax)
	if left := s.NotAfter.Sub(s.LastAttempt); d > left/4 {
		d = left / 4
	}
	d = time.Duration(float64(d) * (0.9 + 0.2*u))
	d = max(d, p.RetryMin)
	return s.LastAttempt.Add(d)
}

// Urgent reports whether renewal has failed and the certificate has less
// than a tenth of its lifetime left at now: time to warn loudly.
func (s State) Urgent(now time.Time) bool {
	return s.Failures > 0 && s.NotAfter.Sub(now) < s.NotAfter.Sub(s.NotBefore)/10
}
