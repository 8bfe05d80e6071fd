package tunnel

import (
	"io"
	"time"
)

// Bulk forwards and everything else in a session share one TCP
// connection, so whatever bulk data waits in front of the connection
// delays every other stream's next frame: a shell or a call's signalling
// behind an upload. That wait has three parts on the sending side: the
// coalescing buffer (up to WriteBuffer), the batch being written out of
// it, and the kernel's unsent bytes (up to TCP_NOTSENT_LOWAT); fixed in
// bytes, they are 50 ms at 100 Mbit/s and half a second at 10.
//
// The session therefore measures how fast its connection drains (drain,
// below) and sizes both queues in time rather than bytes:
//
//   - A forwarded stream's write larger than paceSmall (bulk: a copy loop
//     with a full buffer) waits until the buffer and the batch in flight
//     together hold less than paceTarget of the drain rate (paceRoom).
//     Small writes (keystrokes, requests, answers) never wait, so they
//     join a queue that is never more than paceTarget long.
//   - The kernel's unsent limit follows the same rate (paceLowat), so its
//     part is about paceTarget too, and never less than paceMinLowat,
//     which the writer can refill in time on any link.
//
// Throughput does not suffer: while the connection is backlogged, the
// kernel holds paceTarget of data, and the writer wakes up and refills it
// long before it runs dry. BenchmarkForwardInteractive measures the gain;
// the README quotes it.
const (
	paceTarget   = 5 * time.Millisecond
	paceSmall    = 16 << 10
	paceMinRoom  = 16 << 10
	paceMinLowat = 16 << 10

	// drainWindow is how long the connection must stay busy for one
	// rate sample, and drainGap how long it may pause between two writes
	// and still count as busy: the flusher restarts between batches
	// when the writers are paced, which takes microseconds, but an idle
	// gap means the application, not the link, set the pace.
	drainWindow = 20 * time.Millisecond
	drainGap    = time.Millisecond
)

// drainMeter estimates the rate at which the connection takes bytes while
// it is backlogged: the link's share that this session gets. Guarded by
// muxConn.mu.
type drainMeter struct {
	rate    float64   // bytes per second, smoothed; 0 until the first sample
	start   time.Time // of the current busy period
	bytes   int       // written since start
	lastEnd time.Time // when the previous write ended
}

// begin notes that a write starts at now.
func (m *drainMeter) begin(now time.Time) {
	if now.Sub(m.lastEnd) > drainGap {
		m.start, m.bytes = now, 0
	}
}

// end notes that n bytes were written, ending at now, and reports whether
// the rate estimate changed.
func (m *drainMeter) end(now time.Time, n int) bool {
	m.lastEnd = now
	m.bytes += n
	d := now.Sub(m.start)
	if d < drainWindow {
		return false
	}
	sample := float64(m.bytes) / d.Seconds()
	if m.rate == 0 {
		m.rate = sample
	} else {
		// Smooth over a few windows, but follow a rate that
		// drops (a link that got slower) faster than one that
		// rises, so that the queues shrink in time.
		w := 0.25
		if sample < m.rate {
			w = 0.5
		}
		m.rate += w * (sample - m.rate)
	}
	m.start, m.bytes = now, 0
	return true
}

// room is how many bytes may be queued ahead of a bulk write: paceTarget
// of the drain rate, at least paceMinRoom, at most limit (also when no rate
// is known yet).
func (m *drainMeter) room(limit int) int {
	if m.rate == 0 {
		return limit
	}
	return min(limit, max(paceMinRoom, int(m.rate*paceTarget.Seconds())))
}

// lowat is the TCP_NOTSENT_LOWAT for the current rate: paceTarget of it
// rounded up to a power of two (so that noise does not change it on every
// sample), between paceMinLowat and limit.
func (m *drainMeter) lowat(limit int) int {
	if m.rate == 0 || limit <= paceMinLowat {
		return limit
	}
	want := int(m.rate * paceTarget.Seconds())
	n := paceMinLowat
	for n < want && n < limit {
		n <<= 1
	}
	return min(n, limit)
}

// waitPaced blocks a bulk write of n bytes until the queue in front of the
// connection is shorter than paceTarget (see above); small writes return
// at once. It returns early when the connection fails or closes, and the
// write that follows reports that.
func (c *muxConn) waitPaced(n int) {
	if c.direct || n <= paceSmall {
		return
	}
	c.mu.Lock()
	room := c.drain.room(c.maxPending)
	for len(c.buf)+c.inflight >= room && c.err == nil && !c.closing {
		c.spaceCond.Wait()
		room = c.drain.room(c.maxPending)
	}
	c.mu.Unlock()
}

// pacedWriter is a forwarded stream as its copy loop writes to it: each
// write waits for its turn (muxConn.waitPaced) first.
type pacedWriter struct {
	w io.Writer
	c *muxConn
}

func (p pacedWriter) Write(b []byte) (int, error) {
	p.c.waitPaced(len(b))
	return p.w.Write(b)
}

// paceLowat lets writeBatch adapt the connection's TCP_NOTSENT_LOWAT,
// which was set to max when it was opened, to the drain rate. A max of 0
// or less (the kernel's default) is left alone.
func (c *muxConn) paceLowat(max int) {
	if max > 0 {
		c.lowatMax, c.lowat = max, max
	}
}
