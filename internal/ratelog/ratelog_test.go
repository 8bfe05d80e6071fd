package ratelog

import (
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	var l Limiter
	t0 := time.Unix(1000, 0)
	// One per second: the first passes, the next two in the same second are
	// counted, and the first a second later reports them.
	if s, ok := l.Allow(t0, 1, time.Second); !ok || s != 0 {
		t.Fatalf("first: %d %v", s, ok)
	}
	for _, d := range []time.Duration{time.Millisecond, 999 * time.Millisecond} {
		if _, ok := l.Allow(t0.Add(d), 1, time.Second); ok {
			t.Fatalf("allowed at +%s", d)
		}
	}
	if s, ok := l.Allow(t0.Add(time.Second), 1, time.Second); !ok || s != 2 {
		t.Fatalf("a second later: %d %v, want 2 true", s, ok)
	}
	// Three per period.
	t1 := t0.Add(time.Hour)
	for i := range 3 {
		if _, ok := l.Allow(t1, 3, time.Second); !ok {
			t.Fatalf("line %d of 3 held back", i)
		}
	}
	if _, ok := l.Allow(t1, 3, time.Second); ok {
		t.Fatal("fourth line let through")
	}
	if n := l.Flush(); n != 1 {
		t.Fatalf("Flush = %d, want 1", n)
	}
	if n := l.Flush(); n != 0 {
		t.Fatalf("second Flush = %d, want 0", n)
	}
}
