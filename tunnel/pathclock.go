package tunnel

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twoway/twoway/datagram"
)

// Clock probes: the UDP path's measure of the queue on the path. While a
// side sends VPN packets over UDP it also sends a clock probe
// (datagram.TypeClock, its clock) every clockEvery; the other side answers
// with the probe's clock and its own at arrival. The difference of the two
// is the one-way delay plus the clocks' offset, a constant: its smallest
// value over the last clockBaseWindow is the path's delay with nothing
// queued, and what a probe takes above that is the time it queued on the
// way. That goes to the router queue the packets came from (router.Peer's
// or router.Queue's SetPathDelay), whose CoDel counts it for the flows
// that fill the path: the queue stays short where the tunnel cannot see
// it. One direction at a time: the answer's own delay does not count, so
// a download's queue is charged to the gateway's packets, not to the
// client's acknowledgements.
//
// Both sides announce capClock; a side sends probes only to a peer that
// did (an older peer would count them as undecryptable).

// capClock is the hello capability "I answer clock probes".
const capClock = "clock"

const (
	// clockEvery is how often a busy sender probes: about ten samples
	// per CoDel interval (100 ms), 48-byte datagrams.
	clockEvery = 10 * time.Millisecond
	// clockBaseWindow is how long the smallest delay is remembered: long
	// enough to span a download that keeps the queue from ever
	// emptying for a few seconds, short enough to follow a path that
	// got longer (roaming) within seconds.
	clockBaseWindow = 10 * time.Second
	// clockMaxAge: an answer to a probe older than this is ignored.
	clockMaxAge = 2 * time.Second
)

var clockBase = time.Now()

// clockNow is this process's probe clock: monotonic nanoseconds.
func clockNow() int64 { return int64(time.Since(clockBase)) }

// clockPayload is a probe's payload: the sender's clock.
func clockPayload(now int64) []byte { return binary.BigEndian.AppendUint64(nil, uint64(now)) }

// clockReply is the answer's payload: the probe's payload (its 8 bytes)
// and this side's clock at arrival.
func clockReply(probe []byte, now int64) ([]byte, bool) {
	if len(probe) != 8 {
		return nil, false
	}
	return binary.BigEndian.AppendUint64(append(make([]byte, 0, 16), probe...), uint64(now)), true
}

// pathMeter turns answers to this side's clock probes into the queueing
// delay on the path in this side's sending direction.
type pathMeter struct {
	last atomic.Int64 // clockNow of the last probe sent

	mu       sync.Mutex
	base     [2]int64 // smallest raw delay in this half-window and the previous
	baseHalf int64    // the current half-window: now / (clockBaseWindow/2)
	seen     bool
}

// due reports whether a probe should go now, and if so claims it (one
// caller wins when several send at once).
func (m *pathMeter) due(now int64) bool {
	last := m.last.Load()
	return now-last >= int64(clockEvery) && m.last.CompareAndSwap(last, now)
}

// answer reads a clock probe's answer received at now and returns the
// queueing delay it measured; false for an answer that does not parse or
// answers no recent probe of this side.
func (m *pathMeter) answer(p []byte, now int64) (time.Duration, bool) {
	if len(p) != 16 {
		return 0, false
	}
	sent := int64(binary.BigEndian.Uint64(p))
	arrived := int64(binary.BigEndian.Uint64(p[8:]))
	if sent > now || now-sent > int64(clockMaxAge) {
		return 0, false
	}
	return m.sample(arrived-sent, now), true
}

// sample records raw, a probe's arrival clock minus its sending clock
// (one-way delay plus the clocks' offset), measured at now, and returns
// how far it is above the smallest of the last clockBaseWindow.
func (m *pathMeter) sample(raw, now int64) time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	half := now / int64(clockBaseWindow/2)
	switch {
	case !m.seen || half > m.baseHalf+1:
		m.base = [2]int64{raw, raw}
	case half == m.baseHalf+1:
		m.base = [2]int64{raw, m.base[0]}
	default:
		m.base[0] = min(m.base[0], raw)
	}
	m.seen, m.baseHalf = true, half
	return time.Duration(raw - min(m.base[0], m.base[1]))
}

// sealClock seals a clock probe carrying now.
func sealClock(s *datagram.Sealer, now int64) ([]byte, error) {
	return s.Seal(make([]byte, 0, datagram.Overhead+8), datagram.TypeClock, clockPayload(now))
}

// sealClockReply seals the answer to a clock probe whose payload is p,
// arrived at now.
func sealClockReply(s *datagram.Sealer, p []byte, now int64) ([]byte, bool) {
	r, ok := clockReply(p, now)
	if !ok {
		return nil, false
	}
	d, err := s.Seal(make([]byte, 0, datagram.Overhead+16), datagram.TypeClockReply, r)
	return d, err == nil
}
