package router

import (
	"sync/atomic"
	"time"
)

// The path's queue. Over the UDP data path nothing queues in the tunnel:
// the socket takes packets as fast as they come, and the queue builds at
// the path's bottleneck (a home router, a mobile base station, the
// emulator's drop-tail FIFO in the lab), which no inner TCP learns about
// until it overflows: a download then adds that whole buffer to every
// other packet of the user. The link measures how long its datagrams wait
// on the way (one-way delay above the smallest seen, see SetPathDelay) and
// the queue counts that wait into the sojourn time CoDel judges, for the
// flows that make it: each flow's bytes over the last one or two CoDel
// intervals are kept, and only a flow that sent at least pathHeavyBytes
// and at least half its fair share of the queue's bytes in them is
// charged (the fair share: the bytes divided among the flows that sent
// more than pathActiveBytes in the previous interval). A ping, a DNS
// query or a call's audio next to a download never is, and sixteen
// downloads are charged alike; their packets are dropped (or marked)
// early enough that their senders keep the bottleneck's queue near
// codelTarget.
//
// A delay-based signal loses against loss-based flows outside the tunnel
// that share the bottleneck (they keep the queue full whatever the
// tunnel's flows do), and a stale base (the path got longer) looks like a
// queue. Both show as a path delay that dropping does not bring down:
// after pathGiveUp of it the queue stops counting the path for
// pathRestAfterGiveUp and behaves as a plain FQ-CoDel queue.
const (
	pathHeavyBytes      = 16 << 10
	pathActiveBytes     = 8 << 10
	pathGiveUp          = int64(2 * time.Second)
	pathRestAfterGiveUp = int64(10 * time.Second)
	// pathStale: a measurement older than this no longer counts (the
	// link stopped measuring: idle, or moved to another path).
	pathStale = int64(250 * time.Millisecond)
)

// pathState is a queue's view of its path's delay.
type pathState struct {
	delay atomic.Int64 // nanoseconds of queueing on the path, last measured
	at    atomic.Int64 // clock of that measurement; 0: never

	// Guarded by the queue's mu.
	aboveSince int64 // clock since when delay has been above target; 0: it is not
	offUntil   int64 // clock until which the path is not counted (gave up)
	gaveUp     atomic.Uint64

	total  flowWindow // the queue's bytes, as flowWindow counts a flow's
	active int        // flows that sent more than pathActiveBytes in the previous window
}

// flowWindow is a flow's bytes dequeued in the current CoDel interval
// (window win: clock / codelInterval) and the one before.
type flowWindow struct {
	win       int64
	cur, prev int
}

// lately is what w counted in window win and the one before.
func (w *flowWindow) lately(win int64) int {
	switch w.win {
	case win:
		return w.cur + w.prev
	case win - 1:
		return w.cur
	}
	return 0
}

func (w *flowWindow) roll(win int64) {
	if w.win == win {
		return
	}
	if w.win == win-1 {
		w.prev = w.cur
	} else {
		w.prev = 0
	}
	w.cur, w.win = 0, win
}

// set records a measurement of the path's queueing delay at now.
func (p *pathState) set(d time.Duration, now int64) {
	p.delay.Store(max(int64(d), 0))
	p.at.Store(now)
}

// current returns the path's delay to count at now: zero when there is no
// fresh measurement, or while resting after giving up. Called with the
// queue's mu held.
func (p *pathState) current(now int64) int64 {
	at := p.at.Load()
	if at == 0 || now-at > pathStale || now < p.offUntil {
		p.aboveSince = 0
		return 0
	}
	d := p.delay.Load()
	if d < codelTarget {
		p.aboveSince = 0
		return d
	}
	if p.aboveSince == 0 {
		p.aboveSince = now
	} else if now-p.aboveSince > pathGiveUp {
		p.aboveSince = 0
		p.offUntil = now + pathRestAfterGiveUp
		p.gaveUp.Add(1)
		return 0
	}
	return d
}

// sent accounts size bytes of flow f as dequeued at now. Called with the
// queue's mu held.
func (q *fqQueue) sent(f *flowWindow, size int, now int64) {
	p := &q.path
	win := now / codelInterval
	if p.total.win != win {
		// A new window: count the flows active in the one that ended.
		p.active = 0
		if p.total.win == win-1 && q.flows != nil {
			for i := range q.flows {
				if w := &q.flows[i].win; w.win == p.total.win && w.cur > pathActiveBytes {
					p.active++
				}
			}
		}
	}
	p.total.roll(win)
	p.total.cur += size
	f.roll(win)
	f.cur += size
}

// heavy reports whether f sent enough lately to be charged the path's
// queue. Called with the queue's mu held.
func (p *pathState) heavy(f *flowWindow, now int64) bool {
	win := now / codelInterval
	mine := f.lately(win)
	return mine >= pathHeavyBytes && mine*2*max(p.active, 1) >= p.total.lately(win)
}

// setPathDelay records d, the queueing delay measured on the path beyond
// q, as of now.
func (q *fqQueue) setPathDelay(d time.Duration) { q.path.set(d, q.clock()) }

// SetPathDelay tells the peer's queue how long its packets wait on the
// path after it (measured by the link that carries them: its one-way
// delay above the smallest seen), so that CoDel keeps that queue short
// too. Call it at each measurement; a measurement counts for 250 ms.
func (p *Peer) SetPathDelay(d time.Duration) { p.q.setPathDelay(d) }

// SetPathDelay is Peer.SetPathDelay for this queue.
func (q *Queue) SetPathDelay(d time.Duration) { q.q.setPathDelay(d) }

// PathGaveUp is how many times the queue stopped counting the path's
// delay because dropping did not bring it down (see pathGiveUp).
func (q *Queue) PathGaveUp() uint64 { return q.q.path.gaveUp.Load() }
