package tunnel

import (
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"
)

// benchEnv is a gateway and a connected client with one -L forward to a
// sink that counts what it receives and reports it on close.
type benchEnv struct {
	srv    *Server
	c      *Client
	local  string
	counts chan int64
	port   uint16
}

func newBenchEnv(b *testing.B, tuning Tuning, via func(addr string) string) *benchEnv {
	b.Helper()
	f := newFixture(b)
	counts := make(chan int64, 64)
	sink := startTarget(b, func(c net.Conn) {
		n, _ := io.Copy(io.Discard, c)
		fmt.Fprintf(c, "%d", n)
		counts <- n
	})
	scfg := f.serverConfig(nil)
	scfg.Tuning = tuning
	srv := startServer(b, scfg)
	addr := srv.Addr().String()
	if via != nil {
		addr = via(addr)
	}
	ccfg := f.clientConfig(addr, mustForward(b, ForwardLocal, "127.0.0.1:0", sink.addr()))
	ccfg.Tuning = tuning
	var ev sessionEvents
	ev.hook(&ccfg)
	c := startClient(b, ccfg)
	waitFor(b, ev.up, "session")
	_, p, _ := net.SplitHostPort(sink.addr())
	port, _ := strconv.Atoi(p)
	return &benchEnv{srv: srv, c: c, local: c.Forwards()[0].Local.String(), counts: counts, port: uint16(port)}
}

// send pushes n bytes through one forwarded connection and waits until the
// sink has them all.
func (e *benchEnv) send(b *testing.B, n int64, chunk []byte) {
	conn, err := net.Dial("tcp", e.local)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	for left := n; left > 0; left -= int64(len(chunk)) {
		if _, err := conn.Write(chunk[:min(int64(len(chunk)), left)]); err != nil {
			b.Fatal(err)
		}
	}
	conn.(*net.TCPConn).CloseWrite()
	ack, _ := io.ReadAll(conn)
	if string(ack) != strconv.FormatInt(n, 10) {
		b.Fatalf("sink got %q bytes, sent %d", ack, n)
	}
}

// BenchmarkThroughput is one forwarded stream over loopback, with the
// write coalescer on and off.
func BenchmarkThroughput(b *testing.B) {
	for _, coalesce := range []bool{true, false} {
		b.Run(fmt.Sprintf("coalesce=%v", coalesce), func(b *testing.B) {
			e := newBenchEnv(b, Tuning{noCoalesce: !coalesce}, nil)
			chunk := make([]byte, 64<<10)
			b.SetBytes(int64(len(chunk)))
			b.ResetTimer()
			e.send(b, int64(b.N)*int64(len(chunk)), chunk)
		})
	}
}

// BenchmarkThroughputParallel runs 8 forwarded streams at once.
func BenchmarkThroughputParallel(b *testing.B) {
	const streams = 8
	e := newBenchEnv(b, Tuning{}, nil)
	chunk := make([]byte, 64<<10)
	b.SetBytes(int64(len(chunk)))
	b.ResetTimer()
	var wg sync.WaitGroup
	per := int64(b.N) * int64(len(chunk)) / streams
	for range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.send(b, per, chunk)
		}()
	}
	wg.Wait()
}

// BenchmarkWindowRTT measures one stream through a link with 20 ms round
// trip time for several stream windows: the window, not the CPU, is the
// limit on such links (throughput <= window / RTT).
func BenchmarkWindowRTT(b *testing.B) {
	for _, w := range []uint32{256 << 10, 1 << 20, 4 << 20, 16 << 20} {
		b.Run(fmt.Sprintf("window=%dKiB", w>>10), func(b *testing.B) {
			e := newBenchEnv(b, Tuning{StreamWindow: w}, func(addr string) string {
				return startDelayProxy(b, addr, 10*time.Millisecond)
			})
			chunk := make([]byte, 64<<10)
			b.SetBytes(int64(len(chunk)))
			b.ResetTimer()
			e.send(b, int64(b.N)*int64(len(chunk)), chunk)
		})
	}
}

// BenchmarkStreamOpen is the latency of opening a forward: stream open,
// header, the gateway's dial and its answer.
func BenchmarkStreamOpen(b *testing.B) {
	e := newBenchEnv(b, Tuning{}, nil)
	b.ResetTimer()
	for b.Loop() {
		cs, st, _, err := e.c.open("127.0.0.1", e.port)
		if err != nil {
			b.Fatal(err)
		}
		st.Close()
		cs.streamDone()
		<-e.counts
	}
}

// BenchmarkHandshake is full connects per second: TCP, TLS 1.3 with both
// chains verified, hello.
func BenchmarkHandshake(b *testing.B) {
	f := newFixture(b)
	srv := startServer(b, f.serverConfig(nil))
	c, err := NewClient(f.clientConfig(srv.Addr().String()), testLogger())
	if err != nil {
		b.Fatal(err)
	}
	c.ctx, c.cancel = contextWithCancel()
	defer c.cancel()
	start := time.Now()
	for b.Loop() {
		cs, err := c.connect(srv.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		cs.close(ErrStopped)
		cs.wait()
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "handshakes/s")
}

// BenchmarkIdleSessionMemory reports the heap held per idle session, both
// ends counted (client and gateway run in this process).
func BenchmarkIdleSessionMemory(b *testing.B) {
	const n = 100
	f := newFixture(b)
	scfg := f.serverConfig(nil)
	scfg.MaxHandshakes = n
	srv := startServer(b, scfg)
	c, err := NewClient(f.clientConfig(srv.Addr().String()), testLogger())
	if err != nil {
		b.Fatal(err)
	}
	c.ctx, c.cancel = contextWithCancel()
	defer c.cancel()
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	for b.Loop() {
		before := heap()
		sessions := make([]*clientSession, 0, n)
		for range n {
			cs, err := c.connect(srv.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			sessions = append(sessions, cs)
		}
		after := heap()
		b.ReportMetric(float64(after-before)/n, "B/session")
		for _, cs := range sessions {
			cs.close(ErrStopped)
			cs.wait()
		}
	}
}

// startDelayProxy forwards TCP to target, delaying every chunk by d in each
// direction (a 2d round trip) without limiting bandwidth.
func startDelayProxy(b *testing.B, target string, d time.Duration) string {
	return startShapedLink(b, target, 0, d, 0)
}

// BenchmarkForwardRR is the lab's tcp-rr in process: 64-byte requests,
// each answered by 64 bytes, on one connection through a -L forward over
// loopback (client and gateway in this process), beside the same
// exchange on a direct loopback connection. ns/op is one round trip.
func BenchmarkForwardRR(b *testing.B) {
	echo := func(c net.Conn) {
		buf := make([]byte, 64)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}
	pingPong := func(b *testing.B, addr string) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		msg := make([]byte, 64)
		for range 100 { // warm up: the stream is open, windows granted
			conn.Write(msg)
			io.ReadFull(conn, msg)
		}
		b.ResetTimer()
		for range b.N {
			if _, err := conn.Write(msg); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(conn, msg); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("direct", func(b *testing.B) {
		pingPong(b, startTarget(b, echo).addr())
	})
	b.Run("forward", func(b *testing.B) {
		f := newFixture(b)
		tgt := startTarget(b, echo)
		srv := startServer(b, f.serverConfig(nil))
		c := startClient(b, f.clientConfig(srv.Addr().String(), mustForward(b, ForwardLocal, "127.0.0.1:0", tgt.addr())))
		pingPong(b, c.Forwards()[0].Local.String())
	})
}
