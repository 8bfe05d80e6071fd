package tunnel

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
)

// budgetHarness drives a guard's budget the way muxConn and yamux would:
// yamux's window updates go through shapeUpdate, injected ones are
// recorded, and the peer's credit is tracked from both.
type budgetHarness struct {
	t        *testing.T
	g        *streamGuard
	mu       sync.Mutex
	credit   map[uint32]int64 // what the peer may still send, per stream
	yamux    map[uint32]int64 // what yamux believes it granted, minus received
	injected int
}

func newBudgetHarness(t *testing.T, limit int64, pool *receivePool) *budgetHarness {
	h := &budgetHarness{t: t, g: newStreamGuard(64), credit: map[uint32]int64{}, yamux: map[uint32]int64{}}
	h.g.helloDone()
	h.g.enableBudget(limit, pool, 16<<20, func(id, delta uint32) {
		h.mu.Lock()
		h.credit[id] += int64(delta)
		h.injected++
		h.mu.Unlock()
	})
	return h
}

// open has the peer open and the gateway accept stream id, with yamux's
// first read granting the rest of the 16 MiB window.
func (h *budgetHarness) open(id uint32) {
	hdr := yframe(frameData, flagSYN, id, []byte("header"))
	if _, err := h.g.filter(hdr); err != nil {
		h.t.Fatal(err)
	}
	h.credit[id], h.yamux[id] = minStreamWindow-6, minStreamWindow-6
	h.update(id, 16<<20-minStreamWindow)
	h.g.accept(id)
}

// update is yamux sending a window update of delta.
func (h *budgetHarness) update(id uint32, delta uint32) {
	var f [frameHeaderLen]byte
	copy(f[:], yframe(frameWindowUpdate, 0, id, nil, delta))
	h.yamux[id] += int64(delta)
	if h.g.shapeUpdate(&f) {
		h.mu.Lock()
		h.credit[id] += int64(binary.BigEndian.Uint32(f[8:12]))
		h.mu.Unlock()
	}
}

// send has the peer send n bytes on id, no more than its credit.
func (h *budgetHarness) send(id uint32, n int64) int64 {
	h.mu.Lock()
	n = min(n, h.credit[id])
	h.credit[id] -= n
	h.mu.Unlock()
	h.yamux[id] -= n
	if n > 0 {
		if _, err := h.g.filter(yframe(frameData, 0, id, make([]byte, n))); err != nil {
			h.t.Fatal(err)
		}
	}
	return n
}

func (h *budgetHarness) check() {
	h.t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, c := range h.credit {
		if c > h.yamux[id] {
			h.t.Fatalf("stream %d: peer holds %d credit, yamux granted only %d", id, c, h.yamux[id])
		}
	}
}

// TestBudgetShaping: a stream whose reader keeps up ramps to the full
// window; streams whose readers stall stay within the session budget; the
// peer never gets more than yamux granted.
func TestBudgetShaping(t *testing.T) {
	const limit = 8 << 20
	pool := &receivePool{limit: 1 << 30}
	h := newBudgetHarness(t, limit, pool)

	// Eight stalled streams: the peer fills what it is given, nobody reads.
	var held int64
	for i := range 8 {
		id := uint32(3 + 2*i)
		h.open(id)
		held += h.send(id, 16<<20)
		h.check()
	}
	if max := int64(limit + 8*minStreamWindow); held > max {
		t.Fatalf("stalled streams hold %d bytes, budget allows %d", held, max)
	}

	// A fast stream: every byte that arrives is read at once, and yamux
	// grants again after each 8 MiB read, as it does.
	const fast = 101
	h.open(fast)
	var total, sinceUpdate int64
	for total < 256<<20 {
		n := h.send(fast, 1<<20)
		if n == 0 {
			break
		}
		h.g.consumed(fast, int(n))
		total += n
		if sinceUpdate += n; sinceUpdate >= 8<<20 {
			h.update(fast, uint32(sinceUpdate))
			sinceUpdate = 0
		}
		h.check()
	}
	if total < 256<<20 {
		t.Fatalf("the fast stream stalled after %d bytes", total)
	}
	if h.g.outstanding > limit+9*minStreamWindow {
		t.Fatalf("session outstanding %d, limit %d", h.g.outstanding, limit)
	}
	// Reading a stalled stream frees room and releases credit.
	before := h.injected
	h.g.consumed(3, 4<<20)
	if h.injected == before {
		t.Fatal("consuming a stalled stream released nothing")
	}
	h.check()
	for id := range h.credit {
		h.g.closed(id)
	}
	if h.g.outstanding != 0 || pool.used.Load() != 0 {
		t.Fatalf("after closing every stream: session %d, pool %d outstanding", h.g.outstanding, pool.used.Load())
	}
}

// TestReceiveBudget: a hostile client pours data into streams whose target
// never reads. The gateway's heap must stay near the session budget, not
// grow by StreamWindow per stream, while another client's transfer goes on.
func TestReceiveBudget(t *testing.T) {
	f := newFixture(t)
	scfg := f.serverConfig(nil)
	scfg.ReceiveBudget = 4 << 20
	srv := startServer(t, scfg)
	stop := make(chan struct{})
	defer close(stop)
	sink := startTarget(t, func(c net.Conn) {
		_ = c.(*net.TCPConn).SetReadBuffer(4 << 10)
		<-stop // never reads
	})
	tgt := startTarget(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c); _ = c.(*net.TCPConn).CloseWrite() })

	hcfg := f.clientConfig(srv.Addr().String(), mustForward(t, ForwardLocal, "127.0.0.1:0", tgt.addr()))
	var ev sessionEvents
	ev.hook(&hcfg)
	honest := startClient(t, hcfg)
	upload := func() time.Duration {
		conn, err := net.Dial("tcp", honest.Forwards()[0].Local.String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		start := time.Now()
		if _, err := io.CopyN(conn, bytes.NewReader(make([]byte, 32<<20)), 32<<20); err != nil {
			t.Fatal(err)
		}
		_ = conn.(*net.TCPConn).CloseWrite()
		_, _ = io.Copy(io.Discard, conn)
		return time.Since(start)
	}
	waitFor(t, ev.up, "honest session")
	alone := upload()

	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapAlloc

	cs := connectSession(t, f, srv.Addr().String())
	host, port, _ := net.SplitHostPort(sink.addr())
	garbage := make([]byte, 16<<20)
	for range 16 {
		st, _, err := cs.openConnect(host, mustPort(t, port))
		if err != nil {
			t.Fatal(err)
		}
		_ = st.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
		_, _ = st.Write(garbage) // as much as the gateway lets it
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	grew := int64(ms.HeapAlloc) - int64(before)
	t.Logf("gateway heap grew by %.1f MiB holding 16 stalled streams (budget 4 MiB)", float64(grew)/(1<<20))
	// Budget, plus the initial window of each stream, plus the test's
	// own 16 MiB garbage buffer.
	if limit := int64(4<<20 + 16*minStreamWindow + 16<<20 + 4<<20); grew > limit {
		t.Fatalf("gateway heap grew by %d MiB", grew>>20)
	}
	during := upload()
	t.Logf("32 MiB upload alone %v, beside the hostile session %v", alone.Round(time.Millisecond), during.Round(time.Millisecond))
	if during > 5*alone+2*time.Second {
		t.Fatalf("the honest transfer slowed from %v to %v", alone, during)
	}
}
