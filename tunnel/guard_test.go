package tunnel

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/policy"
)

func yframe(typ uint8, flags uint16, id uint32, body []byte, length ...uint32) []byte {
	h := make([]byte, frameHeaderLen, frameHeaderLen+len(body))
	h[1] = typ
	binary.BigEndian.PutUint16(h[2:4], flags)
	binary.BigEndian.PutUint32(h[4:8], id)
	n := uint32(len(body))
	if len(length) > 0 {
		n = length[0]
	}
	binary.BigEndian.PutUint32(h[8:12], n)
	return append(h, body...)
}

// sizedReader returns at most n bytes per Read, to cut headers and bodies
// at every position.
type sizedReader struct {
	r io.Reader
	n int
}

func (c *sizedReader) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.n)]) }

// readAllGuard runs in through a guard, in chunks of n bytes, and returns
// what yamux would have read.
func readAllGuard(g *streamGuard, in []byte, n int) ([]byte, error) {
	r := &sizedReader{bytes.NewReader(in), n}
	var out []byte
	buf := make([]byte, 4096)
	for {
		m, err := g.read(r, buf)
		out = append(out, buf[:m]...)
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

// TestStreamGuardRewrites feeds the guard a frame stream in every chunk
// size: accepted and pending streams within their allowance pass as they
// are; data beyond the allowance on a stream the gateway has not accepted
// becomes a reset for that stream with its body removed; later data on it
// becomes an empty frame.
func TestStreamGuardRewrites(t *testing.T) {
	hdr := []byte("stream header")
	big := bytes.Repeat([]byte("x"), 3000)
	var in, want []byte
	add := func(f []byte, w []byte) { in = append(in, f...); want = append(want, w...) }
	add(yframe(frameWindowUpdate, flagSYN, 1, nil), yframe(frameWindowUpdate, flagSYN, 1, nil))
	add(yframe(frameData, 0, 1, big), yframe(frameData, 0, 1, big)) // control stream: never pending
	add(yframe(frameWindowUpdate, flagSYN, 3, nil), yframe(frameWindowUpdate, flagSYN, 3, nil))
	add(yframe(frameData, 0, 3, hdr), yframe(frameData, 0, 3, hdr))               // the header fits
	add(yframe(frameData, 0, 3, big), yframe(frameWindowUpdate, flagRST, 3, nil)) // garbage: reset, body gone
	add(yframe(frameData, 0, 3, big), yframe(frameWindowUpdate, 0, 3, nil))       // more: an empty frame
	add(yframe(2, flagSYN, 0, nil, 7), yframe(2, flagSYN, 0, nil, 7))             // a ping passes
	add(yframe(frameData, flagSYN, 5, hdr), yframe(frameData, flagSYN, 5, hdr))
	for n := 1; n <= 40; n++ {
		g := newStreamGuard(16)
		g.helloDone()
		got, err := readAllGuard(g, in, n)
		if err != nil {
			t.Fatalf("chunks of %d: %v", n, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("chunks of %d: yamux would read\n%x\nwant\n%x", n, got, want)
		}
		if p := g.pendingCount(); p != 2 {
			t.Fatalf("chunks of %d: %d pending streams, want 2 (3 and 5)", n, p)
		}
	}

	// Accepted, a stream carries anything; a FIN ends its pending state.
	g := newStreamGuard(16)
	g.helloDone()
	in = append(yframe(frameData, flagSYN, 7, hdr), yframe(frameData, flagFIN, 9, nil)...)
	if _, err := readAllGuard(g, in, 4096); err != nil {
		t.Fatal(err)
	}
	g.accept(7)
	in = yframe(frameData, 0, 7, big)
	if got, _ := readAllGuard(g, in, 4096); !bytes.Equal(got, in) {
		t.Fatal("data on an accepted stream was changed")
	}
}

func TestStreamGuardLimits(t *testing.T) {
	t.Run("second stream before the hello", func(t *testing.T) {
		g := newStreamGuard(16)
		in := append(yframe(frameWindowUpdate, flagSYN, 1, nil), yframe(frameWindowUpdate, flagSYN, 3, nil)...)
		if _, err := readAllGuard(g, in, 4096); !errors.Is(err, ErrEarlyStreams) {
			t.Fatalf("got %v, want ErrEarlyStreams", err)
		}
	})
	t.Run("keeps sending on refused streams", func(t *testing.T) {
		g := newStreamGuard(64)
		g.helloDone()
		var in []byte
		for i := range guardStrikes + 1 {
			id := uint32(3 + 2*i)
			in = append(in, yframe(frameData, flagSYN, id, []byte("h"))...)
			in = append(in, yframe(frameData, 0, id, make([]byte, 2*preReplyAllowance))...)
		}
		if _, err := readAllGuard(g, in, 4096); !errors.Is(err, ErrStreamAbuse) {
			t.Fatalf("got %v, want ErrStreamAbuse", err)
		}
	})
	t.Run("too many unanswered streams", func(t *testing.T) {
		g := newStreamGuard(4)
		g.helloDone()
		var in []byte
		for i := range 5 {
			in = append(in, yframe(frameWindowUpdate, flagSYN, uint32(3+2*i), nil)...)
		}
		if _, err := readAllGuard(g, in, 4096); !errors.Is(err, ErrLimit) {
			t.Fatalf("got %v, want ErrLimit", err)
		}
	})
}

// TestEarlyStreamsRefused: a client that opens a second stream before its
// hello is answered gets no session.
func TestEarlyStreamsRefused(t *testing.T) {
	f := newFixture(t)
	refusals := make(chan Refusal, 4)
	scfg := f.serverConfig(nil)
	scfg.OnRefuse = func(r Refusal) { refusals <- r }
	srv := startServer(t, scfg)
	conn, err := tls.Dial("tcp", srv.Addr().String(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{ALPN},
		Certificates: []tls.Certificate{f.clientLeaf.TLSCertificate()}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	mux, err := yamux.Client(conn, DefaultTuning().yamuxConfig(testLogger()))
	if err != nil {
		t.Fatal(err)
	}
	defer mux.Close()
	// Streams 3 and 5 come before the hello, which is otherwise valid.
	ctrl, err := mux.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := mux.OpenStream(); err != nil {
			break // the gateway has already seen the first one and hung up
		}
	}
	_ = writeControl(ctrl, &controlMsg{Type: msgHello, Version: ProtocolVersion, MinVersion: minProtocolVersion})
	r := waitFor(t, refusals, "refusal")
	if r.Stage != "hello" || !errors.Is(r.Err, ErrEarlyStreams) {
		t.Fatalf("refused at %q (%v), want hello: ErrEarlyStreams", r.Stage, r.Err)
	}
	select {
	case <-mux.CloseChan():
	case <-time.After(10 * time.Second):
		t.Fatal("the gateway kept the connection")
	}
}

// TestRefusedStreamGarbageBounded: an admitted peer that opens streams to
// targets it may not reach and pours data into them must neither make the
// gateway buffer that data nor keep its session. Before the guard each
// such stream could pin a full 16 MiB window of the gateway's heap.
func TestRefusedStreamGarbageBounded(t *testing.T) {
	f := newFixture(t)
	scfg := f.serverConfig(&fakePolicy{dial: func(*pki.Identity, policy.Target) policy.Decision {
		return policy.Decision{Rule: "deny"}
	}})
	ended := make(chan error, 1)
	scfg.OnSessionEnd = func(_ SessionInfo, err error) { ended <- err }
	srv := startServer(t, scfg)
	cs := connectSession(t, f, srv.Addr().String())

	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	before := ms.HeapAlloc

	hdr, _ := streamHeader{Kind: KindConnect, Host: "192.0.2.1", Port: 80}.marshal()
	garbage := make([]byte, 4<<20)
	var streams []*yamux.Stream
	for range 32 {
		st, err := cs.mux.OpenStream()
		if err != nil {
			break
		}
		streams = append(streams, st)
		_ = st.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := st.Write(hdr); err != nil {
			break
		}
		if rep, err := readStreamReply(st); err != nil || rep.Code != CodeDenied {
			break
		}
		// Hostile: keep writing to the refused stream, never close it.
		_ = st.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := st.Write(garbage); err != nil && !errors.Is(err, yamux.ErrTimeout) {
			break // the session is gone
		}
	}
	// What the gateway holds after the flood (on the old code, every
	// refused stream's buffered garbage: 128 MiB).
	runtime.GC()
	runtime.ReadMemStats(&ms)
	if grew := int64(ms.HeapAlloc) - int64(before); grew > 16<<20 {
		t.Fatalf("gateway heap grew by %d MiB", grew>>20)
	}
	var err error
	select {
	case err = <-ended:
	case <-time.After(20 * time.Second):
		t.Fatal("the gateway kept the session of a peer flooding refused streams")
	}
	if !errors.Is(err, ErrStreamAbuse) {
		t.Fatalf("session ended with %v, want ErrStreamAbuse", err)
	}
	_ = streams
}

// TestSessionsPerIdentity: with a limit of two, alice's third session
// replaces her oldest, which is told why; bob's sessions count apart.
func TestSessionsPerIdentity(t *testing.T) {
	f := newFixture(t)
	scfg := f.serverConfig(nil)
	scfg.MaxSessionsPerIdentity = 2
	ended := make(chan error, 4)
	scfg.OnSessionEnd = func(_ SessionInfo, err error) { ended <- err }
	srv := startServer(t, scfg)
	addr := srv.Addr().String()

	first := connectSession(t, f, addr)
	connectSession(t, f, addr)
	bob := *f
	bob.clientCreds = newCreds(t, f.h.ClientCA.Client(t, "bob", "eng"), f.h.ServerBundle())
	connectSession(t, &bob, addr)
	if n := len(srv.Sessions()); n != 3 {
		t.Fatalf("%d sessions, want 3", n)
	}
	connectSession(t, f, addr)
	if err := waitFor(t, ended, "a replaced session"); !errors.Is(err, ErrLimit) {
		t.Fatalf("replaced session ended with %v, want ErrLimit", err)
	}
	select {
	case <-first.done():
	case <-time.After(10 * time.Second):
		t.Fatal("the oldest session is still open")
	}
	if bye := first.endReason(); !errors.Is(bye, ErrLimit) && !strings.Contains(fmtErr(bye), "replaced") {
		t.Fatalf("the replaced client was told %v", bye)
	}
	if n := len(srv.Sessions()); n != 3 {
		t.Fatalf("%d sessions after the replacement, want 3", n)
	}
}
