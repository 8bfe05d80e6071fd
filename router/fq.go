package router

import (
	"encoding/binary"
	"hash/maphash"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// fqQueue is a peer's outbound queue, managed as FQ-CoDel (RFC 8290)
// manages a link's: packets are hashed by flow (addresses, protocol, ports)
// into fqFlows queues served round robin by bytes (deficit round robin),
// with flows that have just become active served first, so a ping or a
// DNS answer never waits behind a download; and each flow's queue is kept
// short by CoDel (RFC 8289): once packets have waited longer than
// codelTarget for a whole codelInterval, the flow's head packets are
// dropped, or ECN-marked if their sender understands that, at a rate that
// grows until the wait is short again. A full queue drops from the flow
// that holds the most bytes, not the newcomer.
//
// That is what keeps a download through the tunnel from adding hundreds of
// milliseconds to everything else of the user: its TCP sender learns from
// the drops (or marks) to send no faster than the session drains, instead
// of filling every buffer on the way.
//
// Many producers (FromLAN, FromPeer of other peers), one consumer
// (Dequeue). The flow table and the packet slots are allocated on first
// use, so a peer that never receives packets costs little.
type fqQueue struct {
	ready chan struct{} // capacity 1: signalled when the queue becomes non-empty
	done  chan struct{} // closed by close

	limit      int // packets
	limitBytes int
	seed       maphash.Seed
	clock      func() int64 // monotonic nanoseconds; replaced in tests

	mu     sync.Mutex // guards the fields below
	flows  *[fqFlows]fqFlow
	items  []fqItem // packet slots; free ones are chained from free
	free   int32
	n      int // packets queued
	bytes  int // bytes queued
	lists  [2]flowList
	closed bool

	// The router's counters of packets dropped after they were accepted
	// (see Router.Stats) and of CE marks.
	dropped, marked *atomic.Uint64

	path pathState // the queue on the path beyond this one (pathdelay.go)
}

// fqFlows is the number of flow queues per peer: enough that the flows of
// one user rarely share one (RFC 8290 uses 1024 per link; a peer is one
// user).
const fqFlows = 64

// CoDel's parameters, RFC 8289's for the internet: a standing queue of
// more than codelTarget for codelInterval is too much.
const (
	codelTarget   = int64(5 * time.Millisecond)
	codelInterval = int64(100 * time.Millisecond)
	// fqQuantum is the bytes a flow may send per round (an Ethernet
	// frame, as RFC 8290 suggests).
	fqQuantum = 1514
	// codelMinBytes: a flow with no more than a packet queued is not
	// dropped from, however long it waited (RFC 8289's maxpacket).
	codelMinBytes = 1514
)

// DefaultQueueBytes bounds the bytes one peer's queue holds: GSO
// superpackets are up to 64 KiB each, and 1024 of them would pin 64 MiB.
const DefaultQueueBytes = 4 << 20

type fqItem struct {
	b    *pbuf
	enq  int64 // clock when queued
	next int32 // the flow's next item, or the next free slot; -1: none
	pre  uint8 // bytes in front of the IP packet (a GSO descriptor)
}

type fqFlow struct {
	head, tail int32 // items; -1: empty
	bytes      int
	deficit    int
	next       int32 // in its list; -1: last
	list       int8  // which list it is on: -1 none, 0 new, 1 old

	// CoDel state.
	firstAbove int64 // when the sojourn time may be judged too long; 0: below target
	dropNext   int64 // when the next drop is due while dropping
	count      uint32
	lastCount  uint32
	dropping   bool

	win flowWindow // bytes sent lately, to tell who fills the path's queue
}

// flowList is a list of flows linked through fqFlow.next.
type flowList struct{ head, tail int32 }

const (
	listNew = 0
	listOld = 1
)

var clockBase = time.Now()

func monoNow() int64 { return int64(time.Since(clockBase)) }

func newFQQueue(limit, limitBytes int, dropped, marked *atomic.Uint64) *fqQueue {
	return &fqQueue{dropped: dropped, marked: marked,
		ready: make(chan struct{}, 1), done: make(chan struct{}),
		limit: limit, limitBytes: limitBytes, seed: maphash.MakeSeed(), clock: monoNow,
		free: -1, lists: [2]flowList{{-1, -1}, {-1, -1}},
	}
}

// flowOf hashes the flow of an IP packet (after its GSO descriptor, if
// pre is set) to a flow queue. The seed is random per queue, so a sender
// cannot aim many flows at one queue.
func (q *fqQueue) flowOf(pkt []byte) int {
	var key [37]byte
	k := key[:0]
	if len(pkt) > 0 {
		switch pkt[0] >> 4 {
		case 4:
			if len(pkt) >= 20 {
				ihl := int(pkt[0]&0x0f) * 4
				k = append(k, pkt[9])        // protocol
				k = append(k, pkt[12:20]...) // addresses
				frag := binary.BigEndian.Uint16(pkt[6:]) & 0x1fff
				if ihl >= 20 && frag == 0 && len(pkt) >= ihl+4 {
					k = append(k, pkt[ihl:ihl+4]...) // ports
				}
			}
		case 6:
			if len(pkt) >= 40 {
				k = append(k, pkt[6])       // next header
				k = append(k, pkt[8:40]...) // addresses
				if len(pkt) >= 44 {
					k = append(k, pkt[40:44]...) // ports, for the common case of no extension headers
				}
			}
		}
	}
	return int(maphash.Bytes(q.seed, k) % fqFlows)
}

// enqueueWith copies pre and pkt as one item into pkt's flow queue and
// returns ToPeer, or DropQueue when there is no room even after dropping
// from the fattest flow (the packet is larger than the whole byte limit),
// or DropNoRoute when the peer was removed. It never blocks on the
// consumer.
func (q *fqQueue) enqueueWith(pre, pkt []byte) Verdict {
	size := len(pre) + len(pkt)
	fi := q.flowOf(pkt)
	now := q.clock()
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return DropNoRoute
	}
	if size > q.limitBytes {
		q.mu.Unlock()
		return DropQueue
	}
	if q.flows == nil {
		q.flows = new([fqFlows]fqFlow)
		for i := range q.flows {
			q.flows[i] = fqFlow{head: -1, tail: -1, next: -1, list: -1}
		}
	}
	// Make room by dropping from the head of the flow holding the most
	// bytes: the one building the queue pays, not whoever comes next.
	for q.n >= q.limit || q.bytes+size > q.limitBytes {
		q.dropFattest()
	}
	slot := q.free
	if slot >= 0 {
		q.free = q.items[slot].next
	} else {
		q.items = append(q.items, fqItem{})
		slot = int32(len(q.items) - 1)
	}
	b := getBuf(size)
	b.b = append(append(b.b[:0], pre...), pkt...)
	q.items[slot] = fqItem{b: b, enq: now, next: -1, pre: uint8(len(pre))}
	f := &q.flows[fi]
	if f.tail >= 0 {
		q.items[f.tail].next = slot
	} else {
		f.head = slot
	}
	f.tail = slot
	f.bytes += size
	q.n++
	q.bytes += size
	if f.list < 0 {
		// A flow becoming active goes on the new list, served first,
		// with a fresh quantum.
		f.deficit = fqQuantum
		q.push(listNew, int32(fi))
	}
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

// dropFattest drops the head packet of the flow holding the most bytes.
// Called with mu held and at least one packet queued.
func (q *fqQueue) dropFattest() {
	fat := 0
	for i := range q.flows {
		if q.flows[i].bytes > q.flows[fat].bytes {
			fat = i
		}
	}
	q.releaseItem(q.popItem(&q.flows[fat]))
	q.countDrop()
}

// popItem unlinks and returns the head item of f (which must have one).
// Called with mu held.
func (q *fqQueue) popItem(f *fqFlow) int32 {
	slot := f.head
	it := &q.items[slot]
	f.head = it.next
	if f.head < 0 {
		f.tail = -1
	}
	size := len(it.b.b)
	f.bytes -= size
	q.n--
	q.bytes -= size
	return slot
}

// releaseItem returns a popped item's buffer to its pool and its slot to
// the free list. Called with mu held.
func (q *fqQueue) releaseItem(slot int32) {
	putBuf(q.items[slot].b)
	q.freeSlot(slot)
}

// freeSlot puts slot, whose buffer has been taken care of, on the free
// list. Called with mu held.
func (q *fqQueue) freeSlot(slot int32) {
	q.items[slot] = fqItem{next: q.free}
	q.free = slot
}

func (q *fqQueue) push(l int, fi int32) {
	f := &q.flows[fi]
	f.next, f.list = -1, int8(l)
	if q.lists[l].tail >= 0 {
		q.flows[q.lists[l].tail].next = fi
	} else {
		q.lists[l].head = fi
	}
	q.lists[l].tail = fi
}

func (q *fqQueue) popList(l int) int32 {
	fi := q.lists[l].head
	f := &q.flows[fi]
	q.lists[l].head = f.next
	if f.next < 0 {
		q.lists[l].tail = -1
	}
	f.next, f.list = -1, -1
	return fi
}

// dequeueInto moves up to max(cap(pkts), 1) packets and, if maxBytes > 0,
// about maxBytes (at least one packet), in FQ-CoDel order, to pkts (their
// buffers to inflight, for the caller to recycle) and returns both. Called
// with mu held.
func (q *fqQueue) dequeueInto(pkts [][]byte, inflight []*pbuf, maxBytes int) ([][]byte, []*pbuf) {
	now := q.clock()
	want := max(cap(pkts), 1)
	size := 0
	for len(pkts) < want && (maxBytes <= 0 || size < maxBytes) {
		l := listNew
		if q.lists[listNew].head < 0 {
			l = listOld
			if q.lists[listOld].head < 0 {
				break
			}
		}
		fi := q.lists[l].head
		f := &q.flows[fi]
		if f.deficit <= 0 {
			f.deficit += fqQuantum
			q.popList(l)
			q.push(listOld, fi)
			continue
		}
		slot := q.codelDequeue(f, now)
		if slot < 0 {
			q.popList(l)
			if l == listNew && q.lists[listOld].head >= 0 {
				// RFC 8290 §4.2: an emptied new flow goes to the end
				// of the old list, so that a flow cannot stay new
				// (and first) by emptying and refilling.
				q.push(listOld, fi)
			}
			continue
		}
		it := &q.items[slot]
		f.deficit -= len(it.b.b)
		size += len(it.b.b)
		q.sent(&f.win, len(it.b.b), now)
		pkts = append(pkts, it.b.b)
		inflight = append(inflight, it.b)
		q.freeSlot(slot)
	}
	return pkts, inflight
}

// codelDequeue returns f's next packet to send, after dropping (or
// marking) what CoDel says to, or -1 when f is empty (RFC 8289's
// dequeue). Called with mu held.
func (q *fqQueue) codelDequeue(f *fqFlow, now int64) int32 {
	// The path's queue, charged to the flows that fill it: for them
	// CoDel's state lives on while the flow's queue here empties (it
	// empties after nearly every packet when the queue is on the path).
	var path int64
	if q.path.at.Load() != 0 {
		if path = q.path.current(now); path > 0 && !q.path.heavy(&f.win, now) {
			path = 0
		}
	}
	if f.head < 0 {
		if path == 0 {
			f.dropping = false
		}
		return -1
	}
	slot := q.popItem(f)
	okToDrop := q.sojournTooLong(f, slot, now, path)
	switch {
	case f.dropping && !okToDrop:
		f.dropping = false
	case f.dropping:
		for now >= f.dropNext && f.dropping {
			f.count++
			if q.signal(slot) {
				f.dropNext = controlLaw(f.dropNext, f.count)
				return slot // marked, sent
			}
			q.releaseItem(slot)
			if f.head < 0 {
				if path == 0 {
					f.dropping = false
				} else {
					f.dropNext = controlLaw(f.dropNext, f.count)
				}
				return -1
			}
			slot = q.popItem(f)
			if !q.sojournTooLong(f, slot, now, path) {
				f.dropping = false
			} else {
				f.dropNext = controlLaw(f.dropNext, f.count)
			}
		}
	case okToDrop:
		// Enter the dropping state. If it was left recently, resume at
		// about the rate that last worked (RFC 8289's count reuse).
		delta := f.count - f.lastCount
		f.count = 1
		if delta > 1 && now-f.dropNext < 16*codelInterval {
			f.count = delta
		}
		f.dropNext = controlLaw(now, f.count)
		f.lastCount = f.count
		f.dropping = true
		if q.signal(slot) {
			return slot
		}
		q.releaseItem(slot)
		if f.head < 0 {
			return -1
		}
		slot = q.popItem(f)
	}
	return slot
}

// sojournTooLong is RFC 8289's should-drop test for the popped item slot,
// path the time it will wait on the path after this queue (zero unless f
// is charged for it).
func (q *fqQueue) sojournTooLong(f *fqFlow, slot int32, now, path int64) bool {
	sojourn := now - q.items[slot].enq + path
	// A flow with a packet or less queued here is not dropped from
	// (maxpacket), unless the queue it builds is on the path.
	standing := path > 0 || f.bytes+len(q.items[slot].b.b) > codelMinBytes
	if sojourn < codelTarget || !standing {
		f.firstAbove = 0
		return false
	}
	if f.firstAbove == 0 {
		f.firstAbove = now + codelInterval
		return false
	}
	return now >= f.firstAbove
}

// signal tells the sender of the packet in slot to slow down: an ECN mark
// if the packet is ECN-capable (reported true: it is still sent), else the
// caller drops it (counted here).
func (q *fqQueue) signal(slot int32) bool {
	if it := &q.items[slot]; markCE(it.b.b, int(it.pre)) {
		q.marked.Add(1)
		return true
	}
	q.countDrop()
	return false
}

// countDrop counts the drop of a packet the queue had accepted.
func (q *fqQueue) countDrop() { q.dropped.Add(1) }

func controlLaw(t int64, count uint32) int64 {
	return t + int64(float64(codelInterval)/math.Sqrt(float64(count)))
}

// markCE sets the ECN field of the IP packet at b[prefix:] to CE (RFC
// 3168) if it is ECT(0) or ECT(1), keeping the IPv4 header checksum right,
// and reports whether it did.
func markCE(b []byte, prefix int) bool {
	if len(b) < prefix+1 {
		return false
	}
	p := b[prefix:]
	switch p[0] >> 4 {
	case 4:
		if len(p) < 20 || p[1]&3 == 0 {
			return false
		}
		old := binary.BigEndian.Uint16(p[0:2])
		p[1] |= 3
		// Incremental checksum update (RFC 1624): HC' = ~(~HC + ~m + m').
		sum := uint32(^binary.BigEndian.Uint16(p[10:12])) + uint32(^old) + uint32(binary.BigEndian.Uint16(p[0:2]))
		for sum > 0xffff {
			sum = sum&0xffff + sum>>16
		}
		binary.BigEndian.PutUint16(p[10:12], ^uint16(sum))
		return true
	case 6:
		if len(p) < 40 {
			return false
		}
		tc := (p[0]&0x0f)<<4 | p[1]>>4
		if tc&3 == 0 {
			return false
		}
		p[1] |= 0x30 // ECN is the low two bits of the traffic class
		return true
	}
	return false
}

// close discards the queued packets and wakes the consumer for good.
func (q *fqQueue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	q.closed = true
	for i := range q.items {
		if q.items[i].b != nil {
			putBuf(q.items[i].b)
		}
	}
	q.items, q.flows, q.n, q.bytes = nil, nil, 0, 0
	close(q.done)
}
