package renew

import (
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

func week() State { return State{NotBefore: t0, NotAfter: t0.Add(7 * 24 * time.Hour)} }

func TestNextAtTwoThirdsWithJitter(t *testing.T) {
	p := DefaultPlan
	life := 7 * 24 * time.Hour
	for _, tc := range []struct {
		u    float64
		want time.Duration // after NotBefore
	}{
		{0.5, life * 2 / 3},
		{0, time.Duration(float64(life) * (2.0/3 - 0.05))},
		{0.999999, time.Duration(float64(life) * (2.0/3 + 0.05))},
	} {
		got := p.Next(week(), tc.u).Sub(t0)
		if d := got - tc.want; d < -time.Second || d > time.Second {
			t.Errorf("u=%v: renew %v after issue, want %v", tc.u, got, tc.want)
		}
	}
	// Every draw stays within ±5% of the lifetime around two thirds.
	for u := 0.0; u < 1; u += 0.01 {
		f := float64(p.Next(week(), u).Sub(t0)) / float64(life)
		if f < 2.0/3-0.05-1e-9 || f > 2.0/3+0.05+1e-9 {
			t.Fatalf("u=%v: at %.4f of the lifetime", u, f)
		}
	}
}

func TestNextBacksOffAndKeepsRoomBeforeExpiry(t *testing.T) {
	p := DefaultPlan
	s := week()
	s.LastAttempt = t0.Add(5 * 24 * time.Hour) // 2 days left
	for f, want := range map[int]time.Duration{1: 30 * time.Second, 2: time.Minute, 3: 2 * time.Minute, 8: 64 * time.Minute} {
		s.Failures = f
		if got := p.Next(s, 0.5).Sub(s.LastAttempt); got != min(want, time.Hour) {
			t.Errorf("after %d failures: retry in %v, want %v", f, got, min(want, time.Hour))
		}
	}
	s.Failures = 30 // capped at RetryMax
	if got := p.Next(s, 0.5).Sub(s.LastAttempt); got != time.Hour {
		t.Errorf("after 30 failures: retry in %v, want 1h", got)
	}
	// With 20 minutes left, a quarter of that.
	s.LastAttempt = s.NotAfter.Add(-20 * time.Minute)
	if got := p.Next(s, 0.5).Sub(s.LastAttempt); got != 5*time.Minute {
		t.Errorf("20 min left: retry in %v, want 5m", got)
	}
	// Never faster than RetryMin, even at the very end.
	s.LastAttempt = s.NotAfter.Add(-time.Second)
	if got := p.Next(s, 0).Sub(s.LastAttempt); got != 30*time.Second {
		t.Errorf("1 s left: retry in %v, want 30s", got)
	}
	// Jitter moves retries by up to ±10%.
	s.LastAttempt, s.Failures = t0.Add(24*time.Hour), 3
	if lo, hi := p.Next(s, 0).Sub(s.LastAttempt), p.Next(s, 0.999).Sub(s.LastAttempt); lo != 108*time.Second || hi < 131*time.Second || hi > 132*time.Second {
		t.Errorf("retry jitter: %v..%v, want 1m48s..2m12s", lo, hi)
	}
}

func TestUrgent(t *testing.T) {
	s := week()
	late := s.NotAfter.Add(-12 * time.Hour) // under a tenth of 7 days left
	if s.Urgent(late) {
		t.Error("urgent without failures")
	}
	s.Failures = 1
	if !s.Urgent(late) || s.Urgent(t0.Add(5*24*time.Hour)) {
		t.Error("urgent: want true with 12 h left and false with 2 days left")
	}
}
