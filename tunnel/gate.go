package tunnel

import (
	"container/list"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// clientHelloTimeout bounds the wait for a new connection's ClientHello.
// Every TLS client sends it at once; a connection that has not within this
// time is holding a handshake slot for nothing.
const clientHelloTimeout = 3 * time.Second

// minEvictAge is how long a connection may wait for its ClientHello before
// it can be evicted. A client's ClientHello is usually in the socket when
// the connection is accepted, but under load the goroutine that reads it
// may not have run yet; evicting the oldest connection outright would hit
// such clients as often as the idle ones. A variable for tests only.
var minEvictAge = 250 * time.Millisecond

// stalledAge is how long a handshake past its ClientHello may wait for the
// client's next bytes before, with every slot taken, it can be evicted
// too. An honest client answers the gateway's flight within a round trip:
// on a satellite link well under stalledAge. An attacker who sends a
// ClientHello and then stalls, from many addresses, would otherwise hold
// every slot for the whole handshake timeout. Only the wait for the
// client counts: a handshake that is slow because the gateway is busy
// (a restart storm on a small machine) is never evicted for it. A
// variable for tests only.
var stalledAge = 3 * time.Second

// penaltyConcurrency is how many handshakes at once a source gets while
// its failure budget (the rate limiter) is spent.
const penaltyConcurrency = 2

// handshakeGate admits connections to the TLS handshake. It replaces a
// plain semaphore, which 140 idle connections could fill, locking every
// verified client out for the handshake timeout:
//
//   - At most max handshakes run at once, and at most perSource of them
//     from one source (an IPv4 address, or an IPv6 /64, which one host
//     usually has whole) may be waiting for their ClientHello.
//   - When either bound is reached, the oldest connection that has not
//     sent its ClientHello (of that source, or of all) is closed to make
//     room; only when every slot holds a connection that is past its
//     ClientHello is the newcomer refused. Idle connections therefore
//     cannot keep anyone out: the next connection evicts them. With
//     every slot taken, a handshake that has stalled for stalledAge
//     after its ClientHello is evicted too (the oldest first).
//   - The source's token bucket (handshake_rate, handshake_burst) is
//     charged only for handshakes that fail, time out or are evicted,
//     never for successful ones, so a whole office behind one NAT
//     address reconnects at full speed. A source whose bucket is empty is
//     not refused: it may run penaltyConcurrency handshakes at once, so an
//     attacker sharing that address slows down without locking out the
//     verified clients beside it.
//
// Concurrency: safe for concurrent use.
type handshakeGate struct {
	max, perSource int
	limiter        *sourceLimiter // nil: no failure budget

	// freed is signalled when a slot frees, for an accept loop waiting
	// for one (see waitFreed).
	freed chan struct{}

	mu      sync.Mutex
	order   *list.List         // *gateTicket, oldest first; guarded by mu
	waiting map[netip.Addr]int // tickets without a ClientHello, per source; guarded by mu
	active  map[netip.Addr]int // all tickets per source; guarded by mu
}

// gateTicket is one admitted connection.
type gateTicket struct {
	conn     net.Conn
	src      netip.Addr
	start    time.Time
	el       *list.Element
	hello    bool // the ClientHello arrived; guarded by handshakeGate.mu
	evicted  bool // closed to make room; guarded by handshakeGate.mu
	released bool // guarded by handshakeGate.mu
	// reading is when the handshake started waiting for the client's
	// bytes (UnixNano), 0 while it is not waiting; see gateReader.
	reading atomic.Int64
}

// gateReader records in its ticket when the handshake is waiting for the
// client (see stalledAge). It stops once the slot is released.
type gateReader struct {
	net.Conn
	t *gateTicket
	// off is set when the handshake is over; from then on Read only
	// passes through.
	off atomic.Bool
}

func (r *gateReader) Read(p []byte) (int, error) {
	if r.off.Load() {
		return r.Conn.Read(p)
	}
	r.t.reading.Store(time.Now().UnixNano())
	n, err := r.Conn.Read(p)
	r.t.reading.Store(0)
	return n, err
}

func newHandshakeGate(max, perSource int, limiter *sourceLimiter) *handshakeGate {
	return &handshakeGate{max: max, perSource: perSource, limiter: limiter, freed: make(chan struct{}, 1),
		order: list.New(), waiting: make(map[netip.Addr]int), active: make(map[netip.Addr]int)}
}

// sourceKey is what per-source limits count by: the IPv4 address, or the
// /64 of an IPv6 address.
func sourceKey(a net.Addr) netip.Addr {
	ip := addrIP(a)
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.Addr()
	}
	return ip
}

// admit takes a slot for conn, evicting an idle connection if it has to.
func (g *handshakeGate) admit(conn net.Conn, now time.Time) (*gateTicket, error) {
	src := sourceKey(conn.RemoteAddr())
	penalized := g.limiter != nil && !g.limiter.hasBudget(src, now)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.waiting[src] >= g.perSource && !g.evictLocked(src, true, now) {
		return nil, errSourceFull
	}
	if penalized && g.active[src] >= penaltyConcurrency && !g.evictLocked(src, true, now) {
		return nil, errSourceFull
	}
	if g.order.Len() >= g.max && !g.evictLocked(netip.Addr{}, false, now) {
		return nil, errGateFull
	}
	t := &gateTicket{conn: conn, src: src, start: now}
	t.el = g.order.PushBack(t)
	g.waiting[src]++
	g.active[src]++
	return t, nil
}

// admitWait is admit, except that when every slot holds a handshake past
// its ClientHello it waits up to wait for one to finish. Such handshakes
// take milliseconds, and the kernel's accept queue holds the connections
// behind meanwhile: after a gateway restart, its clients then get in as
// fast as it can verify them instead of being refused into their backoff.
func (g *handshakeGate) admitWait(conn net.Conn, wait time.Duration, done <-chan struct{}) (*gateTicket, error) {
	deadline := time.Now().Add(wait)
	for {
		t, err := g.admit(conn, time.Now())
		left := time.Until(deadline)
		if !errors.Is(err, errGateFull) || left <= 0 {
			return t, err
		}
		// A slot frees, or an idle connection becomes old enough to
		// evict: look again on either.
		timer := time.NewTimer(min(left, minEvictAge/5))
		select {
		case <-g.freed:
		case <-timer.C:
		case <-done:
			timer.Stop()
			return nil, err
		}
		timer.Stop()
	}
}

// evictLocked closes the oldest connection that has waited at least
// minEvictAge for its ClientHello, of src if bySource; failing that, when
// not bySource, the oldest handshake that is stalledAge old. It reports
// whether it found one.
func (g *handshakeGate) evictLocked(src netip.Addr, bySource bool, now time.Time) bool {
	if g.evictOldest(now, minEvictAge, func(t *gateTicket) bool { return !t.hello && (!bySource || t.src == src) }) {
		return true
	}
	return !bySource && g.evictOldest(now, 0, func(t *gateTicket) bool {
		since := t.reading.Load()
		return t.hello && since != 0 && now.Sub(time.Unix(0, since)) >= stalledAge
	})
}

// evictOldest closes the oldest connection at least age old that pick
// accepts.
func (g *handshakeGate) evictOldest(now time.Time, age time.Duration, pick func(*gateTicket) bool) bool {
	for e := g.order.Front(); e != nil; e = e.Next() {
		t := e.Value.(*gateTicket)
		if now.Sub(t.start) < age {
			return false // the rest are younger still
		}
		if t.evicted || !pick(t) {
			continue
		}
		t.evicted = true
		g.removeLocked(t)
		_ = t.conn.Close() // its handshake fails and releases nothing more
		return true
	}
	return false
}

func (g *handshakeGate) removeLocked(t *gateTicket) {
	if t.released {
		return
	}
	t.released = true
	g.order.Remove(t.el)
	if !t.hello {
		g.dec(g.waiting, t.src)
	}
	g.dec(g.active, t.src)
}

func (g *handshakeGate) dec(m map[netip.Addr]int, src netip.Addr) {
	if m[src]--; m[src] <= 0 {
		delete(m, src)
	}
}

// helloArrived marks t past its ClientHello: from then on it can be
// evicted only when it has stalled (see stalledAge).
// It reports false if t was evicted first.
func (g *handshakeGate) helloArrived(t *gateTicket) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if t.evicted {
		return false
	}
	if !t.hello {
		t.hello = true
		g.dec(g.waiting, t.src)
	}
	return true
}

// expire closes t if its ClientHello has not arrived (clientHelloTimeout).
func (g *handshakeGate) expire(t *gateTicket) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !t.hello && !t.released {
		_ = t.conn.Close()
	}
}

// release frees t's slot. A handshake that did not succeed (failed, timed
// out, evicted) is charged to its source's failure budget.
func (g *handshakeGate) release(t *gateTicket, ok bool, now time.Time) (evicted bool) {
	g.mu.Lock()
	evicted = t.evicted
	g.removeLocked(t)
	g.mu.Unlock()
	select {
	case g.freed <- struct{}{}:
	default:
	}
	if !ok && g.limiter != nil {
		g.limiter.charge(t.src, now)
	}
	return evicted
}

// inFlight is how many handshakes hold a slot (tests).
func (g *handshakeGate) inFlight() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.order.Len()
}

// refusalLogBurst is how many refusal lines a second the gateway logs; the
// rest are counted (see Server.refuse).
const refusalLogBurst = 10
