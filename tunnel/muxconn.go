package tunnel

import (
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// muxConn is the byte stream yamux runs over: the TLS connection, plus two
// things yamux v0.1.2 does not do itself.
//
// Write coalescing. yamux's send loop writes every frame as two Writes,
// the 12-byte header and then the body, and each Write on a tls.Conn becomes
// at least one TLS record and one syscall. muxConn appends writes to a
// buffer and a flusher goroutine writes it out. The flusher is started
// only at frame boundaries (it parses the yamux frame headers going by), so
// a header always leaves together with its body; and while the flusher is
// busy in a Write, further frames pile up behind it and go out in one batch.
// A batch of several TLS records leaves in one syscall (corkConn). The
// flusher exits when the buffer is empty, so an idle session has no
// goroutine here; it is started again by the next batch it is needed for.
// An idle session therefore adds no latency and a busy one gets large
// records and few syscalls. A small complete batch found with nobody
// writing (a ping, an ACK, a request) is written by the Write call itself:
// waking the flusher would cost a goroutine handoff, often an OS thread
// wakeup, on every such packet's path. The buffer is bounded by
// maxPending: yamux blocks in Write beyond that, which is the backpressure
// it would get from the socket anyway.
//
// Ping limit. yamux v0.1.2 answers every ping from a goroutine of its own,
// which waits for the send loop; a peer that sends pings and stops reading
// could pile them up without bound. Read counts the pings coming in and
// fails the connection past a rate no honest peer needs (pingLimit).
//
// Stall and liveness accounting. Every batch is written under a deadline
// (stall): a peer that stops reading for that long is treated as dead and
// the session ends, instead of blocking the send loop forever. Every Read
// that returns data records the time, which the session watchdog uses to
// detect a silent peer.
//
// Concurrency: one reader (yamux's recv loop); Write is safe for concurrent
// use; Close flushes what is pending for at most closeFlush, then closes.
type muxConn struct {
	tc         net.Conn // the TLS connection
	raw        net.Conn // the TCP connection under it, for a forced close
	stall      time.Duration
	maxPending int

	lastRead atomic.Int64  // UnixNano of the last Read that returned data
	rx, tx   atomic.Uint64 // bytes read and accepted for writing
	// deliveredBytes counts what yamux's receive loop wrote to forwarded
	// sockets itself (deliver_unix.go), without a reader's wake-up.
	deliveredBytes atomic.Uint64
	rerr           atomic.Pointer[error] // the first Read error

	// Owned by the one reader.
	rframes frameTracker  // the incoming frame structure
	pings   *rate.Limiter // incoming ping requests

	mu         sync.Mutex
	dataCond   *sync.Cond // the flusher waits here for an inline write to end
	spaceCond  *sync.Cond // writers wait here for room in buf
	buf        []byte     // pending bytes; guarded by mu
	boundary   int        // buf[:boundary] ends on a frame boundary; guarded by mu
	frames     frameTracker
	err        error // sticky write error; guarded by mu
	writing    bool  // a Write on tc is in progress (flusher or inline); guarded by mu
	closing    bool  // guarded by mu
	flushing   bool  // a flusher goroutine runs; guarded by mu
	flushers   sync.WaitGroup
	closeOnce  sync.Once
	closeFlush time.Duration
	direct     bool      // coalescing off (Tuning.noCoalesce): Write goes straight to tc; set before use
	cork       *corkConn // under tc, if set: a batch of several records leaves in one syscall
	// guard, if set (gateway side), filters what the peer sends before
	// yamux reads it and shapes the window updates we send; set before
	// yamux starts.
	guard *streamGuard
	// injectQ holds window updates the guard released while a frame was
	// half written; they go out at its end. Guarded by mu.
	injectQ []byte

	// Pacing of bulk writes (pace.go). inflight is the size of the batch
	// being written, drain the measured drain rate; both guarded by mu.
	// lowatMax, if positive, is the TCP_NOTSENT_LOWAT the session was
	// configured with, which writeBatch lowers to the rate (lowat, the
	// value set now; guarded by mu); set before use.
	inflight int
	drain    drainMeter
	lowatMax int
	lowat    int
}

// injectUpdate sends a window update for stream id that yamux did not
// write: credit the receive budget withheld earlier and now releases.
// Frames are atomic on the wire, so it goes out at a frame boundary.
func (c *muxConn) injectUpdate(id, delta uint32) {
	var h [frameHeaderLen]byte
	h[0] = 0 // yamux protocol version
	h[1] = frameWindowUpdate
	binary.BigEndian.PutUint32(h[4:8], id)
	binary.BigEndian.PutUint32(h[8:12], delta)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing || c.err != nil {
		return
	}
	if c.frames.have != 0 || c.frames.body != 0 {
		c.injectQ = append(c.injectQ, h[:]...)
		return
	}
	if c.buf == nil {
		c.buf = (*batchPool.Get().(*[]byte))[:0]
	}
	c.buf = append(c.buf, h[:]...)
	c.tx.Add(frameHeaderLen)
	c.boundary = len(c.buf)
	c.kick()
}

// batchPool recycles flush buffers so an idle session holds none.
var batchPool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

func newMuxConn(tc, raw net.Conn, stall time.Duration, maxPending int) *muxConn {
	c := &muxConn{tc: tc, raw: raw, stall: stall, maxPending: maxPending, closeFlush: time.Second,
		pings: rate.NewLimiter(pingLimit, pingBurst)}
	c.dataCond = sync.NewCond(&c.mu)
	c.spaceCond = sync.NewCond(&c.mu)
	c.lastRead.Store(time.Now().UnixNano())
	return c
}

func (c *muxConn) Read(p []byte) (int, error) {
	// No yield here: yamux (third_party/yamux) yields itself after it
	// wakes a waiting reader, and only then. A yield on every Read cost
	// a wake-up of another OS thread per TLS record (Gosched starts a
	// spinning thread when a P is idle), about 30 µs of a forward's
	// request/response round trip.
	var n int
	var err error
	if c.guard != nil {
		n, err = c.guard.read(c.tc, p)
	} else {
		n, err = c.tc.Read(p)
	}
	if n > 0 {
		c.lastRead.Store(time.Now().UnixNano())
		c.rx.Add(uint64(n))
		if c.rframes.count(p[:n], isPingRequest) > 0 && !c.pings.AllowN(time.Now(), c.rframes.matched) {
			// Failing the read ends the session before yamux sees them.
			n, err = 0, ErrPingFlood
		}
		c.rframes.matched = 0
	}
	if err != nil {
		stored := err // a copy, so that err itself stays on the stack
		c.rerr.CompareAndSwap(nil, &stored)
	}
	return n, err
}

// accepted tells the guard, if any, that the local side serves stream id:
// call it before sending the answer that lets the peer send data.
func (c *muxConn) accepted(id uint32) {
	if c.guard != nil {
		c.guard.accept(id)
	}
}

// pingLimit and pingBurst bound the pings a peer may send: twoway sends
// one per keepalive interval and one per status RTT probe; yamux's own
// keepalive, off here, sends one every 30 s.
const (
	pingLimit = rate.Limit(20)
	pingBurst = 200
)

// isPingRequest reports whether a yamux header is a ping that asks for an
// answer (type 2 with the SYN flag).
func isPingRequest(hdr *[12]byte) bool {
	return hdr[1] == 2 && binary.BigEndian.Uint16(hdr[2:4])&1 != 0
}

// readErr is the first error Read returned: for a gateway that refused our
// certificate, the TLS alert that says why.
func (c *muxConn) readErr() error {
	if p := c.rerr.Load(); p != nil {
		return *p
	}
	return nil
}

// idle is how long ago the peer last sent anything.
func (c *muxConn) idle() time.Duration {
	return time.Since(time.Unix(0, c.lastRead.Load()))
}

func (c *muxConn) Write(p []byte) (int, error) {
	if c.direct {
		_ = c.tc.SetWriteDeadline(time.Now().Add(c.stall))
		n, err := c.tc.Write(p)
		c.tx.Add(uint64(n))
		return n, err
	}
	c.mu.Lock()
	for len(c.buf) >= c.maxPending && c.err == nil && !c.closing {
		c.spaceCond.Wait()
	}
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return 0, err
	}
	if c.closing {
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	atBoundary := c.frames.have == 0 && c.frames.body == 0
	if c.guard != nil && c.guard.shaping && atBoundary && len(p) == frameHeaderLen && p[1] == frameWindowUpdate {
		// yamux writes every header in a Write of its own: this is
		// a window update, which the receive budget may trim.
		var h [frameHeaderLen]byte
		copy(h[:], p)
		if !c.guard.shapeUpdate(&h) {
			c.mu.Unlock()
			return len(p), nil // nothing to grant and no flags: not sent
		}
		p = h[:]
	}
	if c.buf == nil {
		c.buf = (*batchPool.Get().(*[]byte))[:0]
	}
	c.buf = append(c.buf, p...)
	c.tx.Add(uint64(len(p)))
	if c.frames.advance(p) {
		if len(c.injectQ) > 0 {
			c.buf = append(c.buf, c.injectQ...)
			c.injectQ = c.injectQ[:0]
		}
		c.boundary = len(c.buf)
	}
	if c.boundary > 0 && c.boundary <= inlineMax && !c.writing {
		// A small complete batch and nobody writing: write it here
		// rather than wake the flusher, which costs a goroutine
		// handoff (often an OS thread wakeup) on the latency path of
		// every ping, ACK and request. Large batches still go to the
		// flusher, so that bulk data is encrypted while yamux queues
		// the next frame.
		err := c.writeBatch(c.stall, false)
		c.mu.Unlock()
		return len(p), err
	}
	if c.boundary > 0 || len(c.buf) >= c.maxPending {
		c.kick()
	}
	c.mu.Unlock()
	return len(p), nil
}

// waitRoom blocks until fewer than n bytes wait in the buffer (or the
// connection has failed or is closing). The packets streams call it
// before each write: their backlog should wait in the FQ-CoDel queue in
// front of them, which manages it, not here, where every packet of the
// session would wait behind it unmanaged; forwarded streams still use
// the whole buffer.
func (c *muxConn) waitRoom(n int) {
	if c.direct {
		return
	}
	c.mu.Lock()
	for len(c.buf) >= n && c.err == nil && !c.closing {
		c.spaceCond.Wait()
	}
	c.mu.Unlock()
}

// packetRoom is the most the buffer may hold when a packets stream adds
// a batch (see waitRoom). Measured on the lab's 100 Mbit/s profile
// (loaded ping; wireguard-go 59 ms) and a clean link (1-stream Mbit/s):
// 32 KiB 59-76 ms but 1395-2721 Mbit/s, 64 KiB 71 ms and 2070-2482,
// 128 KiB 76 ms and 2560-3016, against 2820-3394 before the queues: the
// smaller values cost clean-link throughput, so 128 KiB.
const packetRoom = 128 << 10

// packetBatchBytes bounds the bytes a packets writer takes from its
// FQ-CoDel queue at once (at least one packet): whatever leaves the queue
// is no longer managed, and a ping arriving behind a batch of
// superpackets waits for all of it. 64 KiB is 5 ms at 100 Mbit/s; on the
// lab's 100 Mbit/s profile (with a 32 KiB packetRoom) it took a loaded
// ping from 105 ms to 59 ms (wireguard-go: 59 ms). A drain-rate pacer
// sizing batches to 2 ms of the measured rate did worse (96-120 ms), so
// the bound is fixed.
const packetBatchBytes = 64 << 10

// inlineMax is the largest batch Write sends itself (see Write).
const inlineMax = 16 << 10

// maxRecord is the most plaintext one TLS record carries; a larger batch
// is several records, which writeBatch sends corked.
const maxRecord = 16 << 10

// writeBatch takes what may be flushed (takeBatch) and writes it to the TLS
// connection under a deadline, from the calling goroutine: Write's for a
// small batch, the flusher's for the rest. Only the flusher's batches
// (metered) feed the drain rate: small inline writes that follow each
// other (a burst of pings, say) measure the application, not the link. Called with mu held and writing
// false; returns with mu held. The deadline is set under mu so that Close,
// which shortens it, cannot be overtaken by a writer still using the long
// one.
func (c *muxConn) writeBatch(deadline time.Duration, metered bool) error {
	batch := c.takeBatch()
	c.writing = true
	c.inflight = len(batch)
	now := time.Now()
	if metered {
		c.drain.begin(now)
	}
	_ = c.tc.SetWriteDeadline(now.Add(deadline))
	c.mu.Unlock()
	var err error
	if c.cork != nil && len(batch) > maxRecord {
		c.cork.cork()
		_, err = c.tc.Write(batch)
		if uerr := c.cork.uncork(); err == nil {
			err = uerr
		}
	} else {
		_, err = c.tc.Write(batch)
	}
	n := len(batch)
	recycle(batch)
	c.mu.Lock()
	c.writing = false
	c.inflight = 0
	if metered && c.drain.end(time.Now(), n) && c.lowatMax > 0 {
		if l := c.drain.lowat(c.lowatMax); l != c.lowat && setNotSentLowat(c.raw, l) == nil {
			c.lowat = l
		}
	}
	// Paced writers wait for the batch in flight to leave too.
	c.spaceCond.Broadcast()
	if err != nil {
		c.err = err
	}
	// The flusher may be waiting for this write to end.
	c.dataCond.Signal()
	return err
}

// takeBatch removes buf[:boundary], or all of buf when it may go out
// without a frame boundary (flushable), and returns it. Called with mu.
func (c *muxConn) takeBatch() []byte {
	n := c.flushable()
	batch := c.buf[:n]
	if n < len(c.buf) {
		// Keep the start of a frame whose end has not been written
		// yet; it goes out with its end.
		rest := (*batchPool.Get().(*[]byte))[:0]
		c.buf = append(rest, c.buf[n:]...)
	} else {
		c.buf = nil
	}
	c.boundary = 0
	c.spaceCond.Broadcast()
	return batch
}

// recycle returns a written batch to the pool; one oversized frame should
// not pin its buffer.
func recycle(batch []byte) {
	if cap(batch) <= 1<<20 {
		batch = batch[:0]
		batchPool.Put(&batch)
	}
}

// flushable is how much of buf the flusher may take now. Called with mu.
func (c *muxConn) flushable() int {
	switch {
	case c.boundary > 0:
		return c.boundary
	case len(c.buf) >= c.maxPending, c.closing:
		// A frame larger than the buffer, or the end: send what there is.
		return len(c.buf)
	}
	return 0
}

// kick wakes the flusher, starting one if none runs. Called with mu.
func (c *muxConn) kick() {
	if c.flushing {
		c.dataCond.Signal()
		return
	}
	c.flushing = true
	c.flushers.Add(1)
	go c.flushLoop()
}

// flushLoop writes batches until nothing is left to flush, then exits.
// It waits for a Write's inline batch to finish first, so that batches
// leave in order.
func (c *muxConn) flushLoop() {
	defer c.flushers.Done()
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		for c.writing && c.err == nil {
			c.dataCond.Wait()
		}
		if c.err != nil || c.flushable() == 0 {
			c.flushing = false
			return
		}
		deadline := c.stall
		if c.closing {
			deadline = c.closeFlush
		}
		if err := c.writeBatch(deadline, true); err != nil {
			c.flushing = false
			return
		}
	}
}

// Close writes out what is pending (bounded by closeFlush), sends the TLS
// close_notify (bounded too: a peer that stopped reading gets its TCP
// connection closed under it) and closes.
func (c *muxConn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closing = true
		_ = c.tc.SetWriteDeadline(time.Now().Add(c.closeFlush))
		// A flusher writes out what is pending, after the write in
		// progress if any; nothing is added once closing is set.
		c.kick()
		c.spaceCond.Broadcast()
		c.mu.Unlock()
		c.flushers.Wait()
		// tls.Conn.Close writes close_notify with its own 5 s deadline;
		// closing the TCP connection underneath bounds that too.
		t := time.AfterFunc(c.closeFlush, func() { c.raw.Close() })
		err = c.tc.Close()
		t.Stop()
		c.raw.Close()
	})
	return err
}

func (c *muxConn) LocalAddr() net.Addr  { return c.tc.LocalAddr() }
func (c *muxConn) RemoteAddr() net.Addr { return c.tc.RemoteAddr() }

// frameTracker follows the yamux frame structure of the outgoing byte
// stream: a 12-byte header (version, type, flags, stream id, length) and,
// for data frames (type 0), length bytes of body. Other frame types carry
// no body; their length field is a window delta, ping id or reason.
type frameTracker struct {
	hdr     [12]byte
	have    int    // header bytes seen of the current frame
	body    uint32 // body bytes still to come
	matched int    // headers count matched since the caller reset it
}

// advance consumes p and reports whether the stream now ends exactly on a
// frame boundary.
func (f *frameTracker) advance(p []byte) bool {
	f.walk(p, nil)
	return f.have == 0 && f.body == 0
}

// count consumes p and adds to f.matched, and returns, how many of the
// headers completed in it match.
func (f *frameTracker) count(p []byte, match func(hdr *[12]byte) bool) int {
	f.walk(p, match)
	return f.matched
}

// walk consumes p; each header completed in it that match (if set)
// accepts is counted in f.matched.
func (f *frameTracker) walk(p []byte, match func(hdr *[12]byte) bool) {
	for len(p) > 0 {
		if f.body > 0 {
			n := uint32(len(p))
			if n > f.body {
				n = f.body
			}
			f.body -= n
			p = p[n:]
			continue
		}
		n := copy(f.hdr[f.have:], p)
		f.have += n
		p = p[n:]
		if f.have == len(f.hdr) {
			f.have = 0
			if f.hdr[1] == 0 { // typeData
				f.body = binary.BigEndian.Uint32(f.hdr[8:12])
			}
			if match != nil && match(&f.hdr) {
				f.matched++
			}
		}
	}
}
