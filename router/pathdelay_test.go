package router

import (
	"net/netip"
	"testing"
	"time"

	"github.com/twoway/twoway/tun/tuntest"
)

// pathRun feeds the queue a 100 Mbit/s bulk flow (a 1400-byte packet every
// 112 µs, each taken out at once: the queue is on the path, not here) and
// a sparse flow (a packet every 20 ms) for d, telling the queue that the
// path delays them by pathDelay(t) (measured every 10 ms), and returns how
// many packets of each came out.
func pathRun(e *fqEnv, d time.Duration, pathDelay func(time.Duration) time.Duration, bulk func(uint16) []byte) (bulkOut, sparseOut, bulkIn, sparseIn int) {
	const step = 112 * time.Microsecond
	var lastMeasure, lastSparse time.Duration = -time.Hour, -time.Hour
	for t := time.Duration(0); t < d; t += step {
		if t-lastMeasure >= 10*time.Millisecond {
			lastMeasure = t
			e.q.setPathDelay(pathDelay(t))
		}
		e.q.enqueueWith(nil, bulk(uint16(t/step)))
		bulkIn++
		if t-lastSparse >= 20*time.Millisecond {
			lastSparse = t
			e.q.enqueueWith(nil, sparse())
			sparseIn++
		}
		for _, p := range e.take(4) {
			if netip.AddrFrom4([4]byte(p[12:16])) == pingSrc {
				sparseOut++
			} else {
				bulkOut++
			}
		}
		e.clk.advance(step)
	}
	return
}

// newSeparateEnv is newFQEnv with a hash seed that puts the sparse flow in
// a flow queue of its own, apart from every bulk packet's: sharing one
// (a chance of 1 in 64 per bulk flow) makes the sparse flow pay for the
// bulk one, by design, which is not what these tests look at.
func newSeparateEnv(t *testing.T, bulk func(uint16) []byte, flows int) *fqEnv {
	t.Helper()
	for range 1000 {
		e := newFQEnv(1024, DefaultQueueBytes)
		sf, ok := e.q.flowOf(sparse()), true
		for i := range flows {
			if e.q.flowOf(bulk(uint16(i))) == sf {
				ok = false
			}
		}
		if ok {
			return e
		}
	}
	t.Fatal("no seed keeps the flows apart")
	return nil
}

func constDelay(d time.Duration) func(time.Duration) time.Duration {
	return func(time.Duration) time.Duration { return d }
}

// TestPathDelayDropsFromTheFlowThatBuildsIt: with the queue on the path
// (nothing waits here), a path delay above CoDel's target makes the queue
// drop from the bulk flow at CoDel's rate, never from the sparse flow; a
// path delay below target drops nothing, as does a queue told nothing.
func TestPathDelayDropsFromTheFlowThatBuildsIt(t *testing.T) {
	e := newSeparateEnv(t, bulkPkt, 1)
	bulkOut, sparseOut, bulkIn, sparseIn := pathRun(e, time.Second, constDelay(30*time.Millisecond), bulkPkt)
	drops := bulkIn - bulkOut
	t.Logf("30 ms on the path: %d of %d bulk packets dropped", drops, bulkIn)
	// CoDel starts after one interval (100 ms) above target and then
	// drops at intervals of 100 ms/sqrt(count): about 20 in the 900 ms
	// left. Far from zero, far from dropping everything.
	if drops < 10 || drops > 60 {
		t.Errorf("bulk flow: %d of %d dropped; want CoDel's rate (10-60)", drops, bulkIn)
	}
	if sparseOut != sparseIn {
		t.Errorf("sparse flow: %d of %d came out; a sparse flow is never charged the path's queue", sparseOut, sparseIn)
	}
	if int(e.dropped.Load()) != drops {
		t.Errorf("dropped counter %d, want %d", e.dropped.Load(), drops)
	}

	for name, delay := range map[string]func(time.Duration) time.Duration{
		"below target": constDelay(3 * time.Millisecond),
		"none":         nil,
	} {
		e := newFQEnv(1024, DefaultQueueBytes)
		if delay == nil {
			delay = constDelay(0)
			e.q.path = pathState{} // never set: the queue stays local
		}
		bulkOut, _, bulkIn, _ := pathRun(e, time.Second, delay, bulkPkt)
		if bulkOut != bulkIn {
			t.Errorf("%s: %d of %d bulk packets dropped", name, bulkIn-bulkOut, bulkIn)
		}
	}
}

// TestPathDelayStopsWhenTheQueueDrains: once the measured delay is below
// target again, dropping stops.
func TestPathDelayStopsWhenTheQueueDrains(t *testing.T) {
	e := newFQEnv(1024, DefaultQueueBytes)
	delay := func(t time.Duration) time.Duration {
		if t < 500*time.Millisecond {
			return 30 * time.Millisecond
		}
		return 2 * time.Millisecond
	}
	pathRun(e, 500*time.Millisecond, delay, bulkPkt)
	before := e.dropped.Load()
	if before == 0 {
		t.Fatal("no drops while the path's queue was long")
	}
	// Continue the same timeline from 500 ms.
	bulkOut, _, bulkIn, _ := pathRun(e, time.Second, constDelay(2*time.Millisecond), bulkPkt)
	if bulkOut != bulkIn {
		t.Errorf("%d drops after the path's queue drained", bulkIn-bulkOut)
	}
}

// TestPathDelayMarksECN: an ECN-capable flow is marked, not dropped.
func TestPathDelayMarksECN(t *testing.T) {
	e := newFQEnv(1024, DefaultQueueBytes)
	bulkOut, _, bulkIn, _ := pathRun(e, time.Second, constDelay(30*time.Millisecond), func(i uint16) []byte { return ect(bulkPkt(i)) })
	if bulkOut != bulkIn || e.marks.Load() < 10 {
		t.Errorf("ECN flow: %d dropped, %d marked; want 0 dropped and CoDel's marks", bulkIn-bulkOut, e.marks.Load())
	}
}

// TestPathDelayGivesUp: a path delay that dropping does not bring down
// (a loss-based flow outside the tunnel keeps the bottleneck full, or the
// base delay is stale) is ignored after pathGiveUp, for
// pathRestAfterGiveUp; stale measurements are ignored at once.
func TestPathDelayGivesUp(t *testing.T) {
	e := newFQEnv(1024, DefaultQueueBytes)
	pathRun(e, 3*time.Second, constDelay(40*time.Millisecond), bulkPkt)
	if e.q.path.gaveUp.Load() != 1 {
		t.Fatalf("gave up %d times, want 1", e.q.path.gaveUp.Load())
	}
	before := e.dropped.Load()
	pathRun(e, 3*time.Second, constDelay(40*time.Millisecond), bulkPkt)
	if d := e.dropped.Load() - before; d != 0 {
		t.Errorf("%d drops while resting after giving up", d)
	}

	// A measurement 300 ms old does not count.
	s := newFQEnv(1024, DefaultQueueBytes)
	s.q.setPathDelay(40 * time.Millisecond)
	s.clk.advance(300 * time.Millisecond)
	for i := range 5000 {
		s.q.enqueueWith(nil, bulkPkt(uint16(i)))
		s.take(1)
		s.clk.advance(112 * time.Microsecond)
	}
	if s.dropped.Load() != 0 {
		t.Errorf("%d drops on a stale measurement", s.dropped.Load())
	}
}

// TestPathDelaySixteenFlows: sixteen downloads sharing the path each send
// a sixteenth of the bytes; each is charged the path's queue (half a fair
// share is enough), so the queue drops from them, not from the sparse
// flow beside them.
func TestPathDelaySixteenFlows(t *testing.T) {
	many := func(i uint16) []byte {
		return tuntest.UDP(ap(bulkSrc, 443), ap(aliceV4, 50000+i%16), make([]byte, 1400))
	}
	e := newSeparateEnv(t, many, 16)
	bulkOut, sparseOut, bulkIn, sparseIn := pathRun(e, 2*time.Second, constDelay(30*time.Millisecond), many)
	t.Logf("16 flows, 30 ms on the path: %d of %d dropped", bulkIn-bulkOut, bulkIn)
	if bulkIn-bulkOut < 16 {
		t.Errorf("%d dropped of sixteen flows filling the path; want CoDel's drops from them", bulkIn-bulkOut)
	}
	if sparseOut != sparseIn {
		t.Errorf("sparse flow: %d of %d came out", sparseOut, sparseIn)
	}
}
