package tunnel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// recConn is a net.Conn that records each Write as one "record". Writes
// block while gate is held, honouring the write deadline, like a socket
// whose peer stopped reading.
type recConn struct {
	net.Conn // nil: only what muxConn uses is implemented

	mu       sync.Mutex
	writes   [][]byte
	deadline time.Time
	gate     sync.RWMutex
	wrote    chan struct{} // a Write completed
	started  chan struct{} // a Write began
	closed   chan struct{}
	once     sync.Once
}

func newRecConn() *recConn {
	return &recConn{wrote: make(chan struct{}, 100), started: make(chan struct{}, 100), closed: make(chan struct{})}
}

func (c *recConn) Write(p []byte) (int, error) {
	c.started <- struct{}{}
	done := make(chan struct{})
	go func() { c.gate.RLock(); c.gate.RUnlock(); close(done) }()
	// Like a real connection, a deadline set while the Write is blocked
	// applies to it.
	for waiting := true; waiting; {
		c.mu.Lock()
		dl := c.deadline
		c.mu.Unlock()
		if !dl.IsZero() && !time.Now().Before(dl) {
			return 0, os.ErrDeadlineExceeded
		}
		select {
		case <-done:
			waiting = false
		case <-time.After(2 * time.Millisecond):
		case <-c.closed:
			return 0, net.ErrClosed
		}
	}
	c.mu.Lock()
	c.writes = append(c.writes, bytes.Clone(p))
	c.mu.Unlock()
	c.wrote <- struct{}{}
	return len(p), nil
}

func (c *recConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return nil
}

func (c *recConn) Close() error         { c.once.Do(func() { close(c.closed) }); return nil }
func (c *recConn) LocalAddr() net.Addr  { return &net.TCPAddr{} }
func (c *recConn) RemoteAddr() net.Addr { return &net.TCPAddr{} }

func (c *recConn) records() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.writes...)
}

func frame(typ byte, id uint32, body []byte) (hdr, b []byte) {
	hdr = make([]byte, 12)
	hdr[1] = typ
	binary.BigEndian.PutUint32(hdr[4:], id)
	if typ == 0 {
		binary.BigEndian.PutUint32(hdr[8:], uint32(len(body)))
	} else {
		binary.BigEndian.PutUint32(hdr[8:], 1234) // a window delta, not a length
	}
	return hdr, body
}

func TestMuxConnCoalesces(t *testing.T) {
	rc := newRecConn()
	mc := newMuxConn(rc, rc, time.Minute, 64<<10)
	defer mc.Close()

	// Header and body, written separately as yamux does, leave together.
	hdr, body := frame(0, 1, []byte("hello"))
	mc.Write(hdr)
	select {
	case <-rc.wrote:
		t.Fatal("header flushed without its body")
	default:
	}
	mc.Write(body)
	<-rc.started
	<-rc.wrote
	if recs := rc.records(); len(recs) != 1 || !bytes.Equal(recs[0], append(hdr, body...)) {
		t.Fatalf("records %q", recs)
	}

	// A window update has no body: it goes at once.
	wu, _ := frame(1, 1, nil)
	mc.Write(wu)
	<-rc.started
	<-rc.wrote

	// While the connection is busy, frames queue up and leave as one batch.
	// (A small batch on an idle connection is written by the writer
	// itself, so the first one blocks its own goroutine.)
	rc.gate.Lock()
	h1, b1 := frame(0, 3, []byte("first"))
	mc.Write(h1)
	go mc.Write(b1)
	<-rc.started // blocked in the connection's Write
	h2, b2 := frame(0, 5, []byte("second"))
	h3, _ := frame(1, 5, nil)
	mc.Write(h2)
	mc.Write(b2)
	mc.Write(h3)
	rc.gate.Unlock()
	<-rc.wrote
	<-rc.started
	<-rc.wrote
	recs := rc.records()
	if len(recs) != 4 || !bytes.Equal(recs[2], append(h1, b1...)) || !bytes.Equal(recs[3], bytes.Join([][]byte{h2, b2, h3}, nil)) {
		t.Fatalf("batched records: %d, last %q", len(recs), recs[len(recs)-1])
	}
}

func TestMuxConnBackpressureAndStall(t *testing.T) {
	rc := newRecConn()
	mc := newMuxConn(rc, rc, 100*time.Millisecond, 4<<10)
	defer mc.Close()
	rc.gate.Lock() // the peer stops reading
	defer rc.gate.Unlock()
	hdr, body := frame(0, 1, make([]byte, 3000))
	var err error
	// The buffer fills, writers block, and the stalled flush fails after
	// the stall timeout; from then on every write fails.
	for i := 0; i < 100 && err == nil; i++ {
		if _, err = mc.Write(hdr); err == nil {
			_, err = mc.Write(body)
		}
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write on a stalled connection: %v", err)
	}
	if _, err := mc.Write(hdr); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("error not sticky: %v", err)
	}
}

func TestMuxConnCloseFlushes(t *testing.T) {
	rc := newRecConn()
	mc := newMuxConn(rc, rc, time.Minute, 64<<10)
	rc.gate.Lock()
	h1, b1 := frame(0, 1, []byte("one"))
	mc.Write(h1)
	go mc.Write(b1) // written by this writer itself, blocked on the gate
	<-rc.started
	h2, b2 := frame(0, 1, []byte("bye"))
	mc.Write(h2)
	mc.Write(b2)
	closed := make(chan struct{})
	go func() { mc.Close(); close(closed) }()
	rc.gate.Unlock()
	<-closed
	if got := bytes.Join(rc.records(), nil); !bytes.Equal(got, bytes.Join([][]byte{h1, b1, h2, b2}, nil)) {
		t.Fatalf("pending data not flushed on close: %q", got)
	}
	if _, err := mc.Write(h1); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}

	// A peer that never reads does not hold Close for long.
	rc2 := newRecConn()
	mc2 := newMuxConn(rc2, rc2, time.Minute, 64<<10)
	mc2.closeFlush = 50 * time.Millisecond
	rc2.gate.Lock()
	defer rc2.gate.Unlock()
	mc2.Write(h1)
	go mc2.Write(b1)
	<-rc2.started
	start := time.Now()
	mc2.Close()
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("Close took %s", took)
	}
}

// readConn serves reads from a byte slice, in chunks of at most chunk.
type readConn struct {
	recConn
	data  []byte
	chunk int
}

func (c *readConn) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), c.chunk, len(c.data))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

// pingFrame is a yamux ping header: a request (SYN) or an answer (ACK).
func pingFrame(syn bool, id uint32) []byte {
	hdr := make([]byte, 12)
	hdr[1] = 2         // typePing
	flags := uint16(2) // ACK
	if syn {
		flags = 1
	}
	binary.BigEndian.PutUint16(hdr[2:], flags)
	binary.BigEndian.PutUint32(hdr[8:], id)
	return hdr
}

// TestMuxConnPingFlood: yamux answers each ping from a goroutine of its
// own, so a peer flooding pings fails the read; answers to our pings, and
// data that merely looks like ping headers, do not count.
func TestMuxConnPingFlood(t *testing.T) {
	readAll := func(data []byte, chunk int) error {
		rc := &readConn{recConn: *newRecConn(), data: data, chunk: chunk}
		mc := newMuxConn(rc, rc, time.Minute, 64<<10)
		defer mc.Close()
		buf := make([]byte, 4096)
		for {
			if _, err := mc.Read(buf); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
		}
	}
	var flood, answers, inData []byte
	for i := range 2 * pingBurst {
		flood = append(flood, pingFrame(true, uint32(i))...)
		answers = append(answers, pingFrame(false, uint32(i))...)
		inData = append(inData, pingFrame(true, uint32(i))...)
	}
	hdr, _ := frame(0, 3, inData)
	inData = append(hdr, inData...)
	for _, chunk := range []int{5, 12, 4096} {
		if err := readAll(flood, chunk); !errors.Is(err, ErrPingFlood) {
			t.Errorf("chunk %d: %d ping requests at once: %v, want ErrPingFlood", chunk, 2*pingBurst, err)
		}
		if err := readAll(answers, chunk); err != nil {
			t.Errorf("chunk %d: ping answers: %v", chunk, err)
		}
		if err := readAll(inData, chunk); err != nil {
			t.Errorf("chunk %d: ping headers inside a data frame: %v", chunk, err)
		}
		if err := readAll(flood[:pingBurst*12], chunk); err != nil {
			t.Errorf("chunk %d: a burst of %d pings: %v", chunk, pingBurst, err)
		}
	}
}

// TestMuxConnFlusherOnDemand: the flusher goroutine runs only while there
// is a batch to write, so an idle connection has none, and the next large
// batch starts one again.
func TestMuxConnFlusherOnDemand(t *testing.T) {
	rc := newRecConn()
	mc := newMuxConn(rc, rc, time.Minute, 256<<10)
	defer mc.Close()
	flushing := func() bool {
		mc.mu.Lock()
		defer mc.mu.Unlock()
		return mc.flushing
	}
	if flushing() {
		t.Fatal("a new connection runs a flusher")
	}
	for round := range 3 {
		// Larger than inlineMax: the flusher writes it, not Write.
		hdr, body := frame(0, 1, bytes.Repeat([]byte{byte(round)}, inlineMax+1))
		mc.Write(hdr)
		mc.Write(body)
		<-rc.wrote
		recs := rc.records()
		if got := recs[len(recs)-1]; !bytes.Equal(got, append(hdr, body...)) {
			t.Fatalf("round %d: wrote %d bytes, want the frame of %d", round, len(got), len(hdr)+len(body))
		}
		deadline := time.Now().Add(5 * time.Second)
		for flushing() {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the flusher still runs with nothing to write", round)
			}
			time.Sleep(time.Millisecond) // polling a flag with no event to wait on
		}
	}
}
