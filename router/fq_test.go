package router

import (
	"encoding/binary"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twoway/twoway/tun/tuntest"
)

// fakeClock is a settable clock for fqQueue.
type fakeClock struct{ t int64 }

func (c *fakeClock) now() int64              { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t += int64(d) }

type fqEnv struct {
	q              *fqQueue
	clk            *fakeClock
	dropped, marks atomic.Uint64
}

func newFQEnv(limit, limitBytes int) *fqEnv {
	e := &fqEnv{clk: &fakeClock{t: int64(time.Hour)}}
	e.q = newFQQueue(limit, limitBytes, &e.dropped, &e.marks)
	e.q.clock = e.clk.now
	return e
}

// take dequeues up to n packets (fewer if the queue runs dry).
func (e *fqEnv) take(n int) [][]byte {
	e.q.mu.Lock()
	defer e.q.mu.Unlock()
	pkts, inflight := e.q.dequeueInto(make([][]byte, 0, n), nil, 0)
	out := make([][]byte, len(pkts))
	for i, p := range pkts {
		out[i] = slices.Clone(p)
	}
	for _, b := range inflight {
		putBuf(b)
	}
	return out
}

var (
	bulkSrc = netip.MustParseAddr("198.19.0.80")
	pingSrc = netip.MustParseAddr("198.19.0.53")
)

func bulkPkt(uint16) []byte {
	return tuntest.UDP(ap(bulkSrc, 443), ap(aliceV4, 50000), make([]byte, 1400))
}
func sparse() []byte { return udp(pingSrc, 53, aliceV4, 40000) }

// ect makes an IPv4 packet ECN-capable (ECT(0)), with a valid checksum.
func ect(pkt []byte) []byte {
	pkt = slices.Clone(pkt)
	pkt[1] |= 2
	binary.BigEndian.PutUint16(pkt[10:], 0)
	binary.BigEndian.PutUint16(pkt[10:], ipv4Checksum(pkt[:20]))
	return pkt
}

func ipv4Checksum(h []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(h); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// TestFQSparseFlowFirst: a packet of a flow that has just become active is
// sent before the backlog of a bulk flow (the new-flows list).
func TestFQSparseFlowFirst(t *testing.T) {
	e := newSeparateEnv(t, bulkPkt, 1) // sharing a flow queue, they would share its order
	for i := range 500 {
		e.q.enqueueWith(nil, bulkPkt(uint16(i)))
	}
	e.take(3) // the bulk flow has had its turn and sits on the old list
	e.q.enqueueWith(nil, sparse())
	got := e.take(2)
	if len(got) == 0 || netip.AddrFrom4([4]byte(got[0][12:16])) != pingSrc {
		t.Fatalf("the sparse packet waits behind the bulk flow (first out: from %v)", netip.AddrFrom4([4]byte(got[0][12:16])))
	}
}

// TestFQFullDropsFromFattest: a full queue makes room by dropping from the
// flow with the most bytes; the newcomer of another flow gets in.
func TestFQFullDropsFromFattest(t *testing.T) {
	e := newFQEnv(16, DefaultQueueBytes)
	for i := range 16 {
		if v := e.q.enqueueWith(nil, bulkPkt(uint16(i))); v != ToPeer {
			t.Fatalf("packet %d: %v", i, v)
		}
	}
	if v := e.q.enqueueWith(nil, sparse()); v != ToPeer {
		t.Fatalf("the sparse packet into a full queue: %v", v)
	}
	if e.dropped.Load() != 1 || e.q.n != 16 {
		t.Fatalf("dropped %d, queued %d; want 1 and 16", e.dropped.Load(), e.q.n)
	}
	got := e.take(16)
	sparseOut := 0
	for _, p := range got {
		if netip.AddrFrom4([4]byte(p[12:16])) == pingSrc {
			sparseOut++
		}
	}
	if sparseOut != 1 {
		t.Fatalf("the sparse packet came out %d times", sparseOut)
	}
	// Bytes bound too: a packet larger than the whole limit is refused.
	small := newFQEnv(16, 100)
	if v := small.q.enqueueWith(nil, make([]byte, 101)); v != DropQueue {
		t.Fatalf("oversized packet: %v", v)
	}
}

// TestCoDel: a standing queue (packets wait longer than the target for
// longer than an interval) gets drops, ECN-capable packets get marked
// instead, and a queue that drains fast enough loses nothing.
func TestCoDel(t *testing.T) {
	run := func(mk func(int) []byte, service time.Duration) (sent int, e *fqEnv) {
		e = newFQEnv(4096, DefaultQueueBytes)
		// Two packets arrive per 1 ms; service takes one packet per
		// 'service': at 1 ms the queue grows without bound, at 0.4 ms
		// it stays empty.
		for ms := range 2000 {
			e.q.enqueueWith(nil, mk(2*ms))
			e.q.enqueueWith(nil, mk(2*ms+1))
			for step := time.Duration(0); step < time.Millisecond; step += service {
				sent += len(e.take(1))
				e.clk.advance(service)
			}
		}
		return sent, e
	}
	sent, e := run(func(i int) []byte { return bulkPkt(uint16(i)) }, 400*time.Microsecond)
	if e.dropped.Load() != 0 || e.marks.Load() != 0 || sent != 4000 {
		t.Fatalf("a fast enough queue: %d dropped, %d marked, %d sent of 4000", e.dropped.Load(), e.marks.Load(), sent)
	}
	_, e = run(func(i int) []byte { return bulkPkt(uint16(i)) }, time.Millisecond)
	if e.dropped.Load() == 0 {
		t.Fatal("a standing queue gets no drops")
	}
	// A sender that backs off when it loses a packet, as TCP does, is
	// held near CoDel's target: it never fills the queue, though it
	// would with tail drop alone (its rate grows until a loss).
	e = newFQEnv(4096, DefaultQueueBytes)
	rate, credit, worst := 0.5, 0.0, 0
	for ms := range 20000 {
		before := e.dropped.Load()
		for credit += rate; credit >= 1; credit-- {
			e.q.enqueueWith(nil, bulkPkt(0))
		}
		e.take(1) // one packet per ms
		e.clk.advance(time.Millisecond)
		if e.dropped.Load() > before {
			rate /= 2
		} else {
			rate += 0.001
		}
		if ms >= 10000 {
			worst = max(worst, e.q.n)
		}
	}
	// At one packet per ms, n packets queued wait n ms.
	if worst > 40 {
		t.Fatalf("a responsive sender's queue reached %d ms; CoDel's target is %d ms", worst, codelTarget/int64(time.Millisecond))
	}
	t.Logf("responsive sender: worst queue in the last 10 s %d ms, %d drops", worst, e.dropped.Load())
	_, e = run(func(i int) []byte { return ect(bulkPkt(uint16(i))) }, time.Millisecond)
	if e.marks.Load() == 0 || e.dropped.Load() != 0 {
		t.Fatalf("ECN-capable flow: %d marked, %d dropped; want marks and no drops", e.marks.Load(), e.dropped.Load())
	}
}

func TestMarkCE(t *testing.T) {
	p := ect(bulkPkt(0))
	if !markCE(p, 0) || p[1]&3 != 3 {
		t.Fatalf("IPv4 ECT not marked: tos %#x", p[1])
	}
	if ipv4Checksum(p[:20]) != 0 {
		t.Fatal("the IPv4 header checksum is wrong after marking")
	}
	if q := bulkPkt(0); markCE(q, 0) {
		t.Fatal("a not-ECT packet was marked")
	}
	v6 := udp(netip.MustParseAddr("2001:db8::1"), 1, netip.MustParseAddr("2001:db8::2"), 2)
	v6[1] |= 0x10 // ECT(0): traffic class low bits are byte 1's bits 5-4
	pre := append([]byte{1, 2, 3}, v6...)
	if !markCE(pre, 3) || pre[3+1]&0x30 != 0x30 {
		t.Fatalf("IPv6 ECT behind a descriptor not marked: %#x", pre[4])
	}
}

// TestFQNoAllocs: in the steady state queueing and dequeueing allocate
// nothing.
func TestFQNoAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under the race detector")
	}
	e := newFQEnv(1024, DefaultQueueBytes)
	pkt, sp := bulkPkt(0), sparse()
	pkts := make([][]byte, 0, 4)
	var inflight []*pbuf
	step := func() {
		e.q.enqueueWith(nil, pkt)
		e.q.enqueueWith(nil, sp)
		e.q.mu.Lock()
		pkts, inflight = e.q.dequeueInto(pkts[:0], inflight[:0], 0)
		e.q.mu.Unlock()
		for _, b := range inflight {
			putBuf(b)
		}
	}
	for range 100 {
		step()
	}
	// A collection during the run may empty the buffer pools once: a
	// tenth of an allocation per round on average is such noise, not a
	// per-packet allocation.
	if a := testing.AllocsPerRun(1000, step); a > 0.1 {
		t.Fatalf("%v allocations per round", a)
	}
}

// TestQueue: the standalone queue hands out what was queued, with its
// descriptor, counts what it cannot take, and ends Dequeue on Close.
func TestQueue(t *testing.T) {
	q := NewQueue(4, 1<<20)
	desc := []byte{0, 0, 0}
	for range 6 {
		if !q.Enqueue(desc, sparse()) {
			t.Fatal("refused while open")
		}
	}
	if q.Dropped() != 2 {
		t.Fatalf("dropped %d, want the 2 beyond its 4 slots", q.Dropped())
	}
	got, err := q.Dequeue(make([][]byte, 0, 8))
	if err != nil || len(got) != 4 || len(got[0]) != len(desc)+len(sparse()) {
		t.Fatalf("dequeued %d packets (%v)", len(got), err)
	}
	q.Close()
	if _, err := q.Dequeue(nil); err != ErrPeerClosed {
		t.Fatalf("after Close: %v", err)
	}
	if q.Enqueue(nil, sparse()) {
		t.Fatal("accepted after Close")
	}
}

// TestDequeueMax: a writer can bound what one Dequeue hands out, in bytes
// (at least one packet), so that little leaves the managed queue at once.
func TestDequeueMax(t *testing.T) {
	q := NewQueue(64, 4<<20)
	big := tuntest.UDP(ap(bulkSrc, 443), ap(aliceV4, 50000), make([]byte, 20000))
	for range 10 {
		q.Enqueue(nil, big)
	}
	got, err := q.DequeueMax(make([][]byte, 0, 64), 64<<10)
	if err != nil || len(got) != 4 {
		t.Fatalf("DequeueMax(64 KiB) handed out %d packets of %d bytes (%v), want 4", len(got), len(big), err)
	}
	if got, _ := q.DequeueMax(make([][]byte, 0, 64), 1); len(got) != 1 {
		t.Fatalf("a 1-byte bound handed out %d packets, want 1", len(got))
	}
	if got, _ := q.Dequeue(make([][]byte, 0, 64)); len(got) != 5 {
		t.Fatalf("Dequeue handed out %d, want the 5 left", len(got))
	}
}
