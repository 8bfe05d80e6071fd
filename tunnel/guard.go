package tunnel

import (
	"encoding/binary"
	"io"
	"sync"
	"sync/atomic"
)

// yamux frame layout, as the guard reads it.
const (
	frameData         = 0
	frameWindowUpdate = 1
	flagSYN           = 1
	flagFIN           = 4
	flagRST           = 8
	frameHeaderLen    = 12
)

// preReplyAllowance is what a peer may send on a stream it opened before
// the gateway answers: the stream header (at most 9+255 bytes) and nothing
// else. Every twoway client waits for the answer before sending data
// (openConnect, openPackets), so anything beyond this is a peer filling
// the gateway's buffers without a target: yamux has no session-wide
// receive budget and grants each stream its full window once its header
// has been read, so without this check a refused or still-dialing stream
// could pin up to StreamWindow of the gateway's memory.
const preReplyAllowance = 1 << 10

// guardStrikes is how many data frames on streams it was not given a peer
// may send before it loses the session. One is a bug in a client; a
// handful is an attack.
const guardStrikes = 8

// streamGuard sits in the gateway's muxConn.Read, between the TLS
// connection and yamux, and enforces what yamux v0.1.2 cannot express:
//
//   - Before the hello completes, the peer may open one stream (the
//     control stream); a second SYN ends the session.
//   - A stream the peer opened is "pending" until the gateway accepts it
//     (accept, just before the OK reply goes out). On a pending stream the
//     peer may send preReplyAllowance bytes. A data frame beyond that is
//     turned, in the byte stream yamux reads, into a reset for that
//     stream, and its body is dropped: yamux frees the stream and its
//     buffer, and never buffers the data. Refused streams stay pending, so
//     data sent on them after the refusal is treated the same way. After
//     guardStrikes such frames the session ends.
//
// The rewrite keeps yamux's view of the connection a valid frame stream:
// a 12-byte data header becomes a 12-byte window-update header with the
// RST flag and length 0, and the body bytes that followed are removed.
//
// Concurrency: filter is called by the one reader (muxConn.Read); accept,
// helloDone and pending bookkeeping are safe for concurrent use.
type streamGuard struct {
	maxPending int

	mu      sync.Mutex
	pending map[uint32]*pendingStream // guarded by mu
	// npending is len(pending), for a lock-free look on the data path.
	npending atomic.Int32
	hello    bool // the hello completed; guarded by mu

	// Owned by the reader.
	hdr     [frameHeaderLen]byte
	have    int    // bytes of hdr held back from the last filter call
	body    uint32 // body bytes of the current data frame still to come
	drop    bool   // the current frame's body is dropped
	opens   int    // SYNs seen before the hello
	strikes int

	budget // the receive budget; see budget.go
}

type pendingStream struct {
	bytes    uint32 // data received so far
	reset    bool   // already turned into a reset
	withheld int64  // window yamux granted that the peer was not given
}

func newStreamGuard(maxPending int) *streamGuard {
	return &streamGuard{maxPending: maxPending, pending: make(map[uint32]*pendingStream)}
}

// accept marks a stream the gateway serves: data may flow on it from now.
func (g *streamGuard) accept(id uint32) {
	g.mu.Lock()
	var withheld int64
	if ps := g.pending[id]; ps != nil {
		withheld = ps.withheld
	}
	delete(g.pending, id)
	g.npending.Store(int32(len(g.pending)))
	g.openLocked(id, withheld)
	g.mu.Unlock()
}

// helloDone lifts the one-stream limit: the gateway is about to answer the
// hello, after which the client may open data streams.
func (g *streamGuard) helloDone() {
	g.mu.Lock()
	g.hello = true
	g.mu.Unlock()
}

// pendingCount is how many streams wait for an answer (tests).
func (g *streamGuard) pendingCount() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.pending)
}

// read reads from r into p through the guard: what it returns is the
// frame stream yamux may see. It never returns 0 bytes without an error.
func (g *streamGuard) read(r io.Reader, p []byte) (int, error) {
	if len(p) <= frameHeaderLen {
		return 0, io.ErrShortBuffer
	}
	for {
		// Bytes of a header held back last time go first, so that the
		// rewrite below never writes ahead of what it has read.
		k := copy(p, g.hdr[:g.have])
		g.have = 0
		n, err := r.Read(p[k:])
		m, ferr := g.filter(p[:k+n])
		if ferr != nil {
			return 0, ferr
		}
		if m > 0 || err != nil {
			return m, err
		}
	}
}

// filter rewrites b in place and returns how many bytes of it are for
// yamux. A header that b ends in the middle of is kept in g.hdr for the
// next call.
func (g *streamGuard) filter(b []byte) (int, error) {
	w := 0
	for i := 0; i < len(b); {
		if g.body > 0 {
			n := uint32(len(b) - i)
			n = min(n, g.body)
			if !g.drop {
				copy(b[w:], b[i:i+int(n)])
				w += int(n)
			}
			g.body -= n
			i += int(n)
			continue
		}
		if len(b)-i < frameHeaderLen {
			g.have = copy(g.hdr[:], b[i:])
			break
		}
		h := b[i : i+frameHeaderLen]
		i += frameHeaderLen
		g.drop = false
		if err := g.check(h); err != nil {
			return 0, err
		}
		if h[1] == frameData {
			g.body = binary.BigEndian.Uint32(h[8:12])
		}
		copy(b[w:], h) // h may have been rewritten; w <= i-12
		w += frameHeaderLen
	}
	return w, nil
}

// check looks at one frame header from the peer and rewrites it in place
// when its data must not reach yamux.
func (g *streamGuard) check(h []byte) error {
	typ, flags := h[1], binary.BigEndian.Uint16(h[2:4])
	id := binary.BigEndian.Uint32(h[4:8])
	if typ != frameData && typ != frameWindowUpdate {
		return nil // ping, go away: no stream
	}
	if flags&flagSYN == 0 && g.npending.Load() == 0 && !g.shaping {
		return nil // every stream accepted and no budget: no lock
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	defer func() { g.npending.Store(int32(len(g.pending))) }()
	if flags&flagSYN != 0 {
		if !g.hello {
			if g.opens++; g.opens > 1 {
				return ErrEarlyStreams
			}
		}
		if id != 1 { // the control stream carries the hello: never pending
			if len(g.pending) >= g.maxPending {
				return errPendingStreams
			}
			g.pending[id] = &pendingStream{}
		}
	}
	ps := g.pending[id]
	if ps == nil {
		if bs := g.budgeted[id]; bs != nil && typ == frameData {
			bs.received += int64(binary.BigEndian.Uint32(h[8:12]))
		}
		return nil
	}
	if flags&(flagFIN|flagRST) != 0 {
		// The peer is done with it; whatever it sent still counts
		// below, but nothing more can come.
		delete(g.pending, id)
	}
	if typ != frameData {
		return nil
	}
	length := binary.BigEndian.Uint32(h[8:12])
	if !ps.reset && ps.bytes+length <= preReplyAllowance {
		ps.bytes += length
		return nil
	}
	if g.strikes++; g.strikes > guardStrikes {
		return ErrStreamAbuse
	}
	if ps.reset {
		// yamux has forgotten the stream; it would drop the data
		// too, after reading it. A frame for a missing stream is
		// harmless to yamux, so send it an empty one.
		h[1] = frameWindowUpdate
		binary.BigEndian.PutUint16(h[2:4], 0)
	} else {
		h[1] = frameWindowUpdate
		binary.BigEndian.PutUint16(h[2:4], flagRST)
		ps.reset = true
	}
	binary.BigEndian.PutUint32(h[8:12], 0)
	// The rewritten header no longer says how much body follows; the
	// guard still has to skip it.
	g.drop = true
	g.body = length
	return nil
}
