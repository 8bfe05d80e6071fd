package tunnel

import (
	"encoding/binary"
	"io"
	"sync/atomic"
)

// The receive budget bounds what a peer can make the gateway buffer.
//
// yamux v0.1.2 has per-stream flow control only: as soon as a stream is
// read it grants the peer the whole StreamWindow (16 MiB), and it has no
// session-wide limit, so a client whose streams lead to targets that read
// slowly (or not at all) could pin StreamWindow times MaxStreams of the
// gateway's heap. The guard therefore stands between yamux's window
// updates and the wire (muxConn.Write hands it every update yamux sends)
// and passes on only part of what yamux grants:
//
//   - Per stream, the credit the peer holds plus what sits unread in
//     yamux's buffer (given - consumed) stays under the stream's cap. The
//     cap starts at yamux's initial window and doubles each time the
//     reader has consumed half of it while keeping the buffer at most a
//     quarter full: a stream whose target keeps up grows to StreamWindow
//     within a few round trips; one whose target stalls stays small.
//   - Per session and gateway-wide, the sum over streams stays under the
//     budget (limit and pool), except for the initial window every stream
//     gets from the protocol, which nobody can withhold.
//
// What yamux granted and the peer was not given is withheld and released,
// as a window update the guard injects, when the reader consumes. The
// peer never holds more credit than yamux believes it granted, so yamux
// never sees its window exceeded.
type budget struct {
	shaping     bool                     // set once, before yamux starts
	limit       int64                    // per session
	pool        *receivePool             // gateway-wide; nil for none
	maxWindow   int64                    // yamux's StreamWindow
	inject      func(id, delta uint32)   // sends a window update
	budgeted    map[uint32]*streamCredit // guarded by streamGuard.mu
	outstanding int64                    // sum of given-consumed; guarded by streamGuard.mu
	starved     int                      // streams waiting for session or pool room; guarded by streamGuard.mu
}

// streamCredit is the budget's view of one accepted stream.
type streamCredit struct {
	given    int64 // credit passed to the peer in total, initial window included
	consumed int64 // bytes the local reader took
	received int64 // data bytes that arrived
	withheld int64 // granted by yamux, not passed on yet
	cap      int64 // bound on given-consumed
	grown    int64 // consumed since cap last grew
	starved  bool  // withheld for lack of session or pool room
}

// receivePool is the gateway-wide part of the budget, shared by sessions.
type receivePool struct {
	limit int64
	used  atomic.Int64
}

// minRelease is the smallest window update the budget injects on its own,
// so that a reader taking small bites does not cost a frame per bite.
const minRelease = 256 << 10

// enableBudget turns shaping on; call before yamux starts.
func (g *streamGuard) enableBudget(limit int64, pool *receivePool, maxWindow int64, inject func(id, delta uint32)) {
	g.shaping, g.limit, g.pool, g.maxWindow, g.inject = true, limit, pool, maxWindow, inject
	g.budgeted = make(map[uint32]*streamCredit)
}

// charge adds n (which may be negative) to what the session and the
// gateway have outstanding. Called with g.mu.
func (g *streamGuard) charge(n int64) {
	g.outstanding += n
	if g.pool != nil {
		g.pool.used.Add(n)
	}
}

// openLocked starts budgeting a stream that has just been accepted (or
// opened by us), with the credit withheld while it was pending. Called
// with g.mu.
func (g *streamGuard) openLocked(id uint32, withheld int64) *streamCredit {
	if !g.shaping {
		return nil
	}
	bs := &streamCredit{given: minStreamWindow, cap: minStreamWindow, withheld: withheld}
	g.budgeted[id] = bs
	g.charge(minStreamWindow)
	return bs
}

// allowance is how much of bs's withheld credit may go to the peer now.
// Called with g.mu.
func (g *streamGuard) allowance(bs *streamCredit) int64 {
	own := bs.cap - (bs.given - bs.consumed)
	room := g.limit - g.outstanding
	if g.pool != nil {
		room = min(room, g.pool.limit-g.pool.used.Load())
	}
	give := max(0, min(bs.withheld, own, room))
	starved := give < bs.withheld && room < own
	if starved != bs.starved {
		bs.starved = starved
		if starved {
			g.starved++
		} else {
			g.starved--
		}
	}
	return give
}

// grant passes give of bs's withheld credit on. Called with g.mu.
func (g *streamGuard) grant(bs *streamCredit, give int64) {
	bs.withheld -= give
	bs.given += give
	g.charge(give)
}

// shapeUpdate trims a window update yamux is sending, in place, to what
// the budget allows, and reports whether it should still be sent (it has
// credit or flags). Called from muxConn.Write with its mu held.
func (g *streamGuard) shapeUpdate(h *[frameHeaderLen]byte) bool {
	flags := binary.BigEndian.Uint16(h[2:4])
	id := binary.BigEndian.Uint32(h[4:8])
	delta := int64(binary.BigEndian.Uint32(h[8:12]))
	g.mu.Lock()
	defer g.mu.Unlock()
	var give int64
	if ps := g.pending[id]; ps != nil {
		ps.withheld += delta // the peer may send its header, no more
	} else {
		bs := g.budgeted[id]
		if bs == nil {
			if flags&flagSYN == 0 || id == 1 {
				return true // not budgeted: the control stream, or one already closed
			}
			bs = g.openLocked(id, 0) // a stream we open (-R)
		}
		bs.withheld += delta
		give = g.allowance(bs)
		if give < bs.withheld && give < minRelease {
			give = 0
		}
		g.grant(bs, give)
	}
	binary.BigEndian.PutUint32(h[8:12], uint32(give))
	return give > 0 || flags != 0
}

type release struct {
	id    uint32
	delta uint32
}

// consumed records n bytes read from stream id by the local side, grows
// the stream's cap if its reader keeps up, and releases withheld credit
// the budget now has room for.
func (g *streamGuard) consumed(id uint32, n int) {
	var out [4]release
	rel := out[:0]
	g.mu.Lock()
	bs := g.budgeted[id]
	if bs == nil {
		g.mu.Unlock()
		return
	}
	bs.consumed += int64(n)
	bs.grown += int64(n)
	g.charge(-int64(n))
	if bs.cap < g.maxWindow && bs.grown >= bs.cap/2 && bs.received-bs.consumed <= bs.cap/4 {
		bs.cap = min(2*bs.cap, g.maxWindow)
		bs.grown = 0
	}
	if bs.withheld > 0 {
		if give := g.allowance(bs); give >= min(bs.withheld, minRelease) {
			g.grant(bs, give)
			rel = append(rel, release{id, uint32(give)})
		}
	}
	if g.starved > 0 && g.limit-g.outstanding >= minRelease {
		// Room freed by this reader goes to streams that waited
		// for it, not only to this one.
		for oid, o := range g.budgeted {
			if !o.starved || oid == id {
				continue
			}
			if give := g.allowance(o); give >= min(o.withheld, minRelease) && give > 0 {
				g.grant(o, give)
				rel = append(rel, release{oid, uint32(give)})
			}
			if g.starved == 0 || g.limit-g.outstanding < minRelease {
				break
			}
		}
	}
	g.mu.Unlock()
	for _, r := range rel {
		g.inject(r.id, r.delta)
	}
}

// closed stops budgeting stream id: what it held is returned.
func (g *streamGuard) closed(id uint32) {
	g.mu.Lock()
	defer g.mu.Unlock()
	bs := g.budgeted[id]
	if bs == nil {
		return
	}
	if bs.starved {
		g.starved--
	}
	g.charge(-(bs.given - bs.consumed))
	delete(g.budgeted, id)
}

// shutdown returns everything the session still holds to the pool.
func (g *streamGuard) shutdown() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.pool != nil {
		g.pool.used.Add(-g.outstanding)
	}
	g.outstanding = 0
	g.budgeted = make(map[uint32]*streamCredit)
	g.starved = 0
}

// consumer wraps a stream's reader so the budget learns what was read.
type consumer struct {
	r  io.Reader
	g  *streamGuard
	id uint32
}

func (c *consumer) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.g.consumed(c.id, n)
	}
	return n, err
}

// consuming returns r, wrapped to report to the budget if there is one.
func (c *muxConn) consuming(r io.Reader, id uint32) io.Reader {
	if c.guard == nil || !c.guard.shaping {
		return r
	}
	return &consumer{r: r, g: c.guard, id: id}
}

// delivered tells the budget, if any, that n bytes of stream id went to
// the application without a Read (Stream.SetDeliver).
func (c *muxConn) delivered(id uint32, n int) {
	c.deliveredBytes.Add(uint64(n))
	if c.guard != nil && c.guard.shaping {
		c.guard.consumed(id, n)
	}
}

// streamClosed tells the budget, if any, that stream id is done with.
func (c *muxConn) streamClosed(id uint32) {
	if c.guard != nil && c.guard.shaping {
		c.guard.closed(id)
	}
}
