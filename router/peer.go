package router

import (
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/twoway/twoway/internal/ratelog"
	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/tun"
)

// Peer is one VPN session as the router sees it: an identity, the addresses
// assigned to it, and its outbound queue. Create it with Router.AddPeer.
type Peer struct {
	id      *pki.Identity
	name    string
	addrs   []netip.Addr // immutable
	gso     bool         // its packets carry GSO descriptors (AddGSOPeer)
	removed atomic.Bool

	// Owned by the goroutine calling FromPeer for this peer.
	cache    flowCache
	lanBatch [][]byte

	log ratelog.Limiter // dropped-packet lines
	q   queue

	// Owned by the goroutine calling Dequeue: the buffers handed out by
	// the previous Dequeue, recycled by the next.
	inflight []*pbuf
}

// noGSO is the descriptor of a finished packet, for GSO peers' queues.
var noGSO = []byte{byte(tun.GSONone), 0, 0}

// enqueue queues the finished packet pkt for p, with a descriptor in front
// if p is a GSO peer.
func (p *Peer) enqueue(pkt []byte) Verdict {
	if p.gso {
		return p.q.enqueueWith(noGSO, pkt)
	}
	return p.q.enqueue(pkt)
}

// Identity returns the peer's identity.
func (p *Peer) Identity() *pki.Identity { return p.id }

// Addrs returns the peer's addresses.
func (p *Peer) Addrs() []netip.Addr { return slices.Clone(p.addrs) }

// owns reports whether a is one of p's addresses.
func (p *Peer) owns(a netip.Addr) bool {
	for _, o := range p.addrs {
		if o == a {
			return true
		}
	}
	return false
}

// Dequeue waits until at least one packet is queued for p, then returns up
// to cap(pkts) of them (at least one), appended to pkts[:0]. For a GSO peer
// (AddGSOPeer) each starts with its tun.GSOLen-byte descriptor. The packets are
// owned by the router and stay valid until the next call to Dequeue; do not
// modify or keep them. Once p was removed it returns ErrPeerClosed.
//
// One goroutine per peer calls Dequeue; in the steady state it allocates
// nothing.
func (p *Peer) Dequeue(pkts [][]byte) ([][]byte, error) {
	for _, b := range p.inflight {
		putBuf(b)
	}
	clear(p.inflight)
	p.inflight = p.inflight[:0]
	pkts = pkts[:0]
	q := &p.q
	for {
		q.mu.Lock()
		if q.n > 0 {
			k := min(q.n, max(cap(pkts), 1))
			for range k {
				b := q.ring[q.head]
				q.ring[q.head] = nil
				q.head = (q.head + 1) % len(q.ring)
				p.inflight = append(p.inflight, b)
				pkts = append(pkts, b.b)
			}
			q.n -= k
			q.mu.Unlock()
			return pkts, nil
		}
		closed := q.closed
		q.mu.Unlock()
		if closed {
			return pkts, ErrPeerClosed
		}
		select {
		case <-q.ready:
		case <-q.done:
		}
	}
}

// Queued returns how many packets wait in p's queue.
func (p *Peer) Queued() int {
	p.q.mu.Lock()
	defer p.q.mu.Unlock()
	return p.q.n
}

// queue is a peer's bounded outbound queue: many producers (FromLAN,
// FromPeer of other peers), one consumer (Dequeue).
type queue struct {
	ready chan struct{} // capacity 1: signalled when the queue becomes non-empty
	done  chan struct{} // closed by close

	mu     sync.Mutex // guards the fields below
	ring   []*pbuf
	head   int
	n      int
	closed bool
}

func newQueue(n int) queue {
	return queue{ready: make(chan struct{}, 1), done: make(chan struct{}), ring: make([]*pbuf, n)}
}

// enqueue copies pkt into the queue and returns ToPeer, or DropQueue when
// the queue is full, or DropNoRoute when its peer was removed. It never
// blocks on the consumer.
func (q *queue) enqueue(pkt []byte) Verdict {
	return q.enqueueWith(nil, pkt)
}

// enqueueWith is enqueue of pre and pkt as one item.
func (q *queue) enqueueWith(pre, pkt []byte) Verdict {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return DropNoRoute
	}
	if q.n == len(q.ring) {
		q.mu.Unlock()
		return DropQueue
	}
	b := getBuf(len(pre) + len(pkt))
	b.b = append(append(b.b[:0], pre...), pkt...)
	q.ring[(q.head+q.n)%len(q.ring)] = b
	q.n++
	wake := q.n == 1
	q.mu.Unlock()
	if wake {
		select {
		case q.ready <- struct{}{}:
		default: // already signalled
		}
	}
	return ToPeer
}

// close discards the queued packets and wakes the consumer for good.
func (q *queue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	q.closed = true
	for q.n > 0 {
		putBuf(q.ring[q.head])
		q.ring[q.head] = nil
		q.head = (q.head + 1) % len(q.ring)
		q.n--
	}
	close(q.done)
}

// Packet buffers for the queues come in two sizes: most packets are at most
// an MTU (a few KiB at most), so they take a small buffer, and only the rare
// large one ties up a 64 KiB buffer.
const (
	smallBufSize = 2048
	largeBufSize = 65535 + tun.GSOLen // the IP length fields are 16 bits
)

// pbuf is a pooled packet buffer. Pools hold *pbuf, not []byte, so that Put
// does not allocate.
type pbuf struct {
	b     []byte
	large bool
}

var (
	smallPool = sync.Pool{New: func() any { return &pbuf{b: make([]byte, 0, smallBufSize)} }}
	largePool = sync.Pool{New: func() any { return &pbuf{b: make([]byte, 0, largeBufSize), large: true} }}
)

func getBuf(n int) *pbuf {
	if n <= smallBufSize {
		return smallPool.Get().(*pbuf)
	}
	return largePool.Get().(*pbuf)
}

func putBuf(b *pbuf) {
	b.b = b.b[:0]
	if b.large {
		largePool.Put(b)
	} else {
		smallPool.Put(b)
	}
}
