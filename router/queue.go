package router

import (
	"sync/atomic"
)

// Queue is a standalone FQ-CoDel packet queue, the kind each Peer has at
// the gateway, for a client's own outbound packets: the client reads its
// TUN device into it as fast as the device gives packets, and one writer
// takes them out as fast as the session carries them. Without it the
// backlog of a busy upload sits in the kernel's TUN queue and socket
// buffers, unmanaged, and every other packet of the user waits behind it.
//
// Enqueue is safe for concurrent use; one goroutine calls Dequeue.
type Queue struct {
	q        *fqQueue
	inflight []*pbuf // owned by the Dequeue caller
	dropped  atomic.Uint64
	marked   atomic.Uint64
}

// NewQueue returns a queue of at most limit packets and limitBytes bytes.
func NewQueue(limit, limitBytes int) *Queue {
	q := &Queue{}
	q.q = newFQQueue(limit, limitBytes, &q.dropped, &q.marked)
	return q
}

// Enqueue copies pre and pkt, an IP packet (pre, if any, goes in front of
// it: a GSO descriptor), into the queue. It reports false when the packet
// was dropped (the queue is closed, or the packet alone exceeds the byte
// limit). It never blocks.
func (q *Queue) Enqueue(pre, pkt []byte) bool {
	switch q.q.enqueueWith(pre, pkt) {
	case ToPeer:
		return true
	case DropQueue:
		q.dropped.Add(1)
	}
	return false
}

// Dequeue is Peer.Dequeue for this queue; once Close has been called it
// returns ErrPeerClosed.
func (q *Queue) Dequeue(pkts [][]byte) ([][]byte, error) {
	return q.q.dequeue(pkts, &q.inflight, 0)
}

// DequeueMax is Peer.DequeueMax for this queue.
func (q *Queue) DequeueMax(pkts [][]byte, maxBytes int) ([][]byte, error) {
	return q.q.dequeue(pkts, &q.inflight, maxBytes)
}

// Close discards what is queued and ends Dequeue.
func (q *Queue) Close() { q.q.close() }

// Dropped is how many packets the queue dropped (for room, or CoDel);
// Marked how many CoDel marked CE instead.
func (q *Queue) Dropped() uint64 { return q.dropped.Load() }

// Marked is how many packets CoDel marked CE instead of dropping.
func (q *Queue) Marked() uint64 { return q.marked.Load() }
