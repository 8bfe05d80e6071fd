//go:build unix

package tunnel

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"math/big"
	"net"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	a, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a.(*net.TCPConn), b.(*net.TCPConn)
}

// deliverTo must take what the socket has room for and return, never wait
// for a reader: the receive loop of every stream of the session calls it.
func TestDeliverToNeverBlocks(t *testing.T) {
	a, b := tcpPair(t)
	_ = a.SetWriteBuffer(16 << 10)
	_ = b.SetReadBuffer(16 << 10)
	d := deliverTo(a)
	if d == nil {
		t.Fatal("no deliver function for a TCP connection")
	}
	chunk := make([]byte, 64<<10)
	var sent bytes.Buffer
	partial := make(chan int, 1)
	go func() {
		for i := 0; ; i++ {
			for j := range chunk {
				chunk[j] = byte(i + j)
			}
			n := d(chunk)
			sent.Write(chunk[:n])
			if n < len(chunk) {
				partial <- n
				return
			}
		}
	}()
	select {
	case <-partial:
	case <-time.After(10 * time.Second):
		t.Fatal("deliver blocked on a full socket")
	}
	// What it reported as taken arrives, in order, and nothing else.
	_ = a.CloseWrite()
	got, err := io.ReadAll(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, sent.Bytes()) {
		t.Fatalf("peer got %d bytes, deliver reported %d (or different bytes)", len(got), sent.Len())
	}
	if deliverTo(struct{ net.Conn }{a}) != nil {
		t.Fatal("deliver function for a connection without a file descriptor")
	}
}

// Request/response traffic of random sizes with a slow reader at the end:
// frames go to the socket straight from the receive loop, partly (the
// socket is full), or through the reader, and the bytes stay in order.
func TestForwardDeliveryKeepsOrder(t *testing.T) {
	f := newFixture(t)
	srv := startServer(t, f.serverConfig(nil))
	digests := make(chan [32]byte, 1)
	tgt := startTarget(t, func(c net.Conn) {
		// Small enough to fill, above loopback's 64 KiB MSS (a window
		// below one MSS stalls until the persist timer fires).
		_ = c.(*net.TCPConn).SetReadBuffer(256 << 10)
		h := sha256.New()
		buf := make([]byte, 1500)
		for i := 0; ; i++ {
			n, err := c.Read(buf)
			h.Write(buf[:n])
			if n > 0 {
				c.Write(buf[:1]) // an answer, so the sender waits for it
			}
			if err != nil {
				break
			}
			if i%20 == 0 {
				time.Sleep(5 * time.Millisecond) // let the socket fill up
			}
		}
		var d [32]byte
		copy(d[:], h.Sum(nil))
		digests <- d
	})
	c := startClient(t, f.clientConfig(srv.Addr().String(), mustForward(t, ForwardLocal, "127.0.0.1:0", tgt.addr())))
	conn, err := net.Dial("tcp", c.Forwards()[0].Local.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go io.Copy(io.Discard, conn)
	h := sha256.New()
	total := 0
	for i := 0; i < 200; i++ {
		size, _ := rand.Int(rand.Reader, big.NewInt(100<<10))
		msg := make([]byte, 1+size.Int64())
		rand.Read(msg)
		h.Write(msg)
		total += len(msg)
		if _, err := conn.Write(msg); err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			time.Sleep(100 * time.Microsecond) // leave the gateway's reader idle now and then
		}
	}
	_ = conn.(*net.TCPConn).CloseWrite()
	got := waitFor(t, digests, "target digest")
	var want [32]byte
	copy(want[:], h.Sum(nil))
	if got != want {
		t.Fatalf("the target got different bytes than the %d sent", total)
	}
	var delivered uint64
	srv.mu.Lock()
	sessions := srv.sessionList()
	srv.mu.Unlock()
	for _, ss := range sessions {
		delivered += ss.conn.deliveredBytes.Load()
	}
	if delivered == 0 || delivered >= uint64(total) {
		t.Fatalf("%d of %d bytes delivered by the receive loop: want both paths used", delivered, total)
	}
	t.Logf("%d of %d bytes delivered by the receive loop", delivered, total)
}
