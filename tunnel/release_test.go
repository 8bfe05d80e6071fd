package tunnel

import (
	"testing"
	"time"
)

// TestMemoryReleaseDecision: a release comes once the population has
// halved from a peak worth it, at most once per releaseEvery.
func TestMemoryReleaseDecision(t *testing.T) {
	var m memoryRelease
	now := time.Unix(1_800_000_000, 0)
	steps := []struct {
		live int
		dt   time.Duration
		want bool
	}{
		{100, 0, false},            // a small population: never
		{50, time.Minute, false},   // halved, but the peak was small
		{10000, 0, false},          // growing
		{6000, time.Second, false}, // not yet half
		{4999, time.Second, true},  // half gone
		{4000, time.Second, false}, // the new peak is 4999, and too soon anyway
		{100, time.Second, false},  // too soon
		{0, time.Second, true},     // but the last one of 4999 is not
		{300, time.Minute, false},  // a new peak
		{90, releaseEvery, true},   // later: 90 of 300 left
		{80, releaseEvery, false},  // peak 90 is below releaseMinPeak
	}
	for i, s := range steps {
		now = now.Add(s.dt)
		if got := m.observe(s.live, now); got != s.want {
			t.Fatalf("step %d (live %d): release %v, want %v", i, s.live, got, s.want)
		}
	}
}

// TestMemoryReleaseAfterArrivals: every releaseMinPeak arrivals arm one
// settle release; no second one while it is armed, none once stopped.
func TestMemoryReleaseAfterArrivals(t *testing.T) {
	var m memoryRelease
	arm := 0
	for range releaseMinPeak - 1 {
		if m.arrived() {
			arm++
		}
	}
	if arm != 0 {
		t.Fatalf("armed after %d arrivals", releaseMinPeak-1)
	}
	if !m.arrived() {
		t.Fatalf("not armed after %d arrivals", releaseMinPeak)
	}
	for range 3 * releaseMinPeak {
		if m.arrived() {
			t.Fatal("armed twice")
		}
	}
	if !m.settled(time.Now()) {
		t.Fatal("the armed release does not run")
	}
	for range releaseMinPeak - 1 {
		if m.arrived() {
			t.Fatal("armed again before another releaseMinPeak arrivals")
		}
	}
	m.stop()
	if m.arrived() {
		t.Fatal("armed after stop")
	}
	if m.settled(time.Now()) {
		t.Fatal("a release runs after stop")
	}
}
