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
	q   *fqQueue

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
	return p.q.enqueueWith(nil, pkt)
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
	return p.q.dequeue(pkts, &p.inflight, 0)
}

// DequeueMax is Dequeue returning about maxBytes at most (at least one
// packet): what leaves the queue is no longer managed, and a packet of
// another flow arriving meanwhile waits behind all of it, so a writer
// that knows how fast its path drains takes no more than that.
func (p *Peer) DequeueMax(pkts [][]byte, maxBytes int) ([][]byte, error) {
	return p.q.dequeue(pkts, &p.inflight, maxBytes)
}

// dequeue is Dequeue for q, recycling the buffers in *inflight (the
// previous call's) and recording the new ones there.
func (q *fqQueue) dequeue(pkts [][]byte, inflight *[]*pbuf, maxBytes int) ([][]byte, error) {
	for _, b := range *inflight {
		putBuf(b)
	}
	clear(*inflight)
	*inflight = (*inflight)[:0]
	pkts = pkts[:0]
	for {
		q.mu.Lock()
		if q.n > 0 {
			pkts, *inflight = q.dequeueInto(pkts, *inflight, maxBytes)
			q.mu.Unlock()
			if len(pkts) > 0 {
				return pkts, nil
			}
			continue // CoDel dropped all that was queued
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
