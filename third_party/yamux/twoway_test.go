package yamux

// Tests of twoway's changes to yamux v0.1.2 (see TWOWAY.md).

import (
	"bytes"
	"io"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// stackConn records, for every data frame header written to it, whether
// the Write came from the stream's own Write call.
type stackConn struct {
	io.ReadWriteCloser
	mu         sync.Mutex
	fromStream int
	fromLoop   int
}

func (c *stackConn) Write(p []byte) (int, error) {
	if len(p) == headerSize && p[1] == typeData {
		buf := make([]byte, 16<<10)
		st := string(buf[:runtime.Stack(buf, false)])
		c.mu.Lock()
		if strings.Contains(st, "(*Stream).Write") {
			c.fromStream++
		} else {
			c.fromLoop++
		}
		c.mu.Unlock()
	}
	return c.ReadWriteCloser.Write(p)
}

func TestStreamWriteWritesFrameItself(t *testing.T) {
	a, b := testConnPipe(t)
	sc := &stackConn{ReadWriteCloser: a}
	client, server := testClientServerConfig(t, sc, b, testConfNoKeepAlive(), testConfNoKeepAlive())
	go func() {
		st, err := server.AcceptStream()
		if err == nil {
			_, _ = io.Copy(io.Discard, st)
		}
	}()
	st, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if _, err := st.Write([]byte("request")); err != nil {
			t.Fatal(err)
		}
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.fromStream != 10 || sc.fromLoop != 0 {
		t.Fatalf("data frames written by Stream.Write %d, by the send loop %d; want 10 and 0", sc.fromStream, sc.fromLoop)
	}
}

// deliverPair opens a stream from client to server; the server's end has
// deliver set and a reader copying into got.
type deliverPair struct {
	client    *Stream
	server    *Stream
	mu        sync.Mutex
	delivered bytes.Buffer // what deliver took
	read      bytes.Buffer // what Read returned
	all       bytes.Buffer // both, in the order they were taken
	take      int          // how much of each call deliver takes; <0 all
	calls     int
}

func newDeliverPair(t *testing.T, conf *Config) *deliverPair {
	t.Helper()
	a, b := testConnTCP(t)
	client, server := testClientServerConfig(t, a, b, conf, conf.Clone())
	dp := &deliverPair{take: -1}
	var err error
	dp.client, err = client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dp.client.Write([]byte("x")); err != nil { // the SYN goes with data
		t.Fatal(err)
	}
	dp.server, err = server.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 1)
	if _, err := io.ReadFull(dp.server, first); err != nil {
		t.Fatal(err)
	}
	dp.server.SetDeliver(func(p []byte) int {
		dp.mu.Lock()
		defer dp.mu.Unlock()
		dp.calls++
		n := len(p)
		if dp.take >= 0 && dp.take < n {
			n = dp.take
		}
		dp.delivered.Write(p[:n])
		dp.all.Write(p[:n])
		return n
	})
	return dp
}

// readLoop reads until EOF, as a forward's copy goroutine does.
func (dp *deliverPair) readLoop() chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := dp.server.Read(buf)
			dp.mu.Lock()
			dp.read.Write(buf[:n])
			dp.all.Write(buf[:n])
			dp.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return done
}

func (dp *deliverPair) waitForReader(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		dp.server.recvLock.Lock()
		w := dp.server.readWaiting
		dp.server.recvLock.Unlock()
		if w {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the reader never waited")
		}
		time.Sleep(time.Millisecond)
	}
}

func (dp *deliverPair) waitForTotal(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		dp.mu.Lock()
		got := dp.all.Len()
		dp.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d bytes arrived", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestDeliverTakesFramesWhileReaderWaits(t *testing.T) {
	dp := newDeliverPair(t, testConfNoKeepAlive())
	done := dp.readLoop()
	dp.waitForReader(t)
	if _, err := dp.client.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	dp.waitForTotal(t, 4)
	dp.mu.Lock()
	if dp.delivered.String() != "ping" || dp.read.Len() != 0 {
		t.Fatalf("delivered %q, read %q; want all delivered", dp.delivered.String(), dp.read.String())
	}
	dp.mu.Unlock()
	dp.client.Close()
	<-done
}

func TestDeliverPartialTakeLeavesRestToRead(t *testing.T) {
	dp := newDeliverPair(t, testConfNoKeepAlive())
	dp.take = 2
	done := dp.readLoop()
	dp.waitForReader(t)
	if _, err := dp.client.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	dp.waitForTotal(t, 5)
	dp.mu.Lock()
	if dp.delivered.String() != "he" || dp.read.String() != "llo" || dp.all.String() != "hello" {
		t.Fatalf("delivered %q, read %q, in order %q", dp.delivered.String(), dp.read.String(), dp.all.String())
	}
	dp.mu.Unlock()
	dp.client.Close()
	<-done
}

func TestDeliverNotCalledWithoutWaitingReader(t *testing.T) {
	dp := newDeliverPair(t, testConfNoKeepAlive())
	if _, err := dp.client.Write([]byte("queued")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the frame arrives while nobody reads
	done := dp.readLoop()
	dp.waitForTotal(t, 6)
	dp.mu.Lock()
	if dp.calls != 0 || dp.read.String() != "queued" {
		t.Fatalf("deliver called %d times, read %q", dp.calls, dp.read.String())
	}
	dp.mu.Unlock()
	dp.client.Close()
	<-done
}

// Everything deliver takes counts as read: the sender gets its window
// back and a transfer of several windows does not stall.
func TestDeliverReturnsWindow(t *testing.T) {
	conf := testConfNoKeepAlive()
	conf.MaxStreamWindowSize = initialStreamWindow
	dp := newDeliverPair(t, conf)
	done := dp.readLoop()
	dp.waitForReader(t)
	msg := bytes.Repeat([]byte("0123456789abcdef"), 64) // 1 KiB
	total := 0
	for total < 4*int(initialStreamWindow) {
		dp.waitForReader(t) // keep deliver in charge
		if _, err := dp.client.Write(msg); err != nil {
			t.Fatal(err)
		}
		total += len(msg)
		dp.waitForTotal(t, total)
	}
	dp.mu.Lock()
	if dp.delivered.Len() != total || !bytes.Equal(dp.all.Bytes()[:len(msg)], msg) {
		t.Fatalf("delivered %d of %d", dp.delivered.Len(), total)
	}
	dp.mu.Unlock()
	dp.client.Close()
	<-done
}

// failConn fails every Write once fail is set.
type failConn struct {
	io.ReadWriteCloser
	mu   sync.Mutex
	fail bool
}

func (c *failConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	fail := c.fail
	c.mu.Unlock()
	if fail {
		return 0, io.ErrClosedPipe
	}
	return c.ReadWriteCloser.Write(p)
}

// Data that was read is returned even when the window update that the
// read triggers cannot be written (the peer has gone): upstream returned
// the write error instead, depending on whether the receive loop had
// noticed the end first.
func TestReadKeepsDataWhenWindowUpdateFails(t *testing.T) {
	a, b := testConnPipe(t)
	fc := &failConn{ReadWriteCloser: b}
	conf := testConfNoKeepAlive()
	client, server := testClientServerConfig(t, a, fc, conf, conf.Clone())
	st, err := client.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte{7}, int(conf.MaxStreamWindowSize))
	if _, err := st.Write(data); err != nil {
		t.Fatal(err)
	}
	st2, err := server.AcceptStream()
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st2.recvLock.Lock()
		have := st2.recvBuf != nil && st2.recvBuf.Len() == len(data)
		st2.recvLock.Unlock()
		if have {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the data never arrived")
		}
		time.Sleep(time.Millisecond)
	}
	fc.mu.Lock()
	fc.fail = true
	fc.mu.Unlock()
	buf := make([]byte, len(data))
	n, err := st2.Read(buf)
	if n != len(data) || err != nil {
		t.Fatalf("Read = %d, %v; want %d, nil", n, err, len(data))
	}
}
