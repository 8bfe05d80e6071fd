package tunnel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"syscall"
	"testing"
)

func TestStreamHeaderRoundTrip(t *testing.T) {
	for _, h := range []streamHeader{
		{Kind: KindConnect, Host: "db.corp.example", Port: 5432},
		{Kind: KindConnect, Host: "2001:db8::1", Port: 443},
		{Kind: KindReverse, Listener: 7, Host: "198.18.0.9", Port: 50000},
		{Kind: KindPackets},
	} {
		b, err := h.marshal()
		if err != nil {
			t.Fatal(err)
		}
		// The header must be read exactly: what follows is payload.
		r := bytes.NewReader(append(b, "payload"...))
		got, err := readStreamHeader(r)
		if err != nil || got != h {
			t.Fatalf("round trip %+v: got %+v, %v", h, got, err)
		}
		rest, _ := io.ReadAll(r)
		if string(rest) != "payload" {
			t.Fatalf("header read consumed payload: rest %q", rest)
		}
	}
	if _, err := (streamHeader{Host: strings.Repeat("a", 256)}).marshal(); err == nil {
		t.Fatal("256-byte host accepted")
	}
	for _, bad := range [][]byte{nil, {1, 1, 0}, {2, 1, 0, 80, 0, 0, 0, 0, 0}, {1, 1, 0, 80, 0, 0, 0, 0, 5, 'a'}} {
		if _, err := readStreamHeader(bytes.NewReader(bad)); !errors.Is(err, ErrBadHeader) {
			t.Fatalf("header %v: err %v", bad, err)
		}
	}
}

func TestStreamReply(t *testing.T) {
	for _, r := range []streamReply{
		{Code: CodeOK, Bound: "10.0.0.1:40000"},
		{Code: CodeDenied, Message: `db:5432 (rule "default deny")`},
		{Code: CodeRefused, Message: strings.Repeat("x", 300)}, // truncated to 255
	} {
		got, err := readStreamReply(bytes.NewReader(r.marshal()))
		if err != nil {
			t.Fatal(err)
		}
		r.Message = truncate(r.Message, 255)
		if got != r {
			t.Fatalf("got %+v want %+v", got, r)
		}
	}
	err := streamReply{Code: CodeRefused, Message: "connection refused"}.err()
	if !errors.Is(err, ErrRefused) || !errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, ErrDenied) {
		t.Fatalf("refused reply error %v does not unwrap right", err)
	}
	if err := (streamReply{Code: 200}).err(); err == nil || !strings.Contains(err.Error(), "code(200)") {
		t.Fatalf("unknown code: %v", err)
	}
}

func TestControlFraming(t *testing.T) {
	var buf bytes.Buffer
	in := &controlMsg{Type: msgListen, ID: 3, Bind: "127.0.0.1:8080"}
	if err := writeControl(&buf, in); err != nil {
		t.Fatal(err)
	}
	out, err := readControl(&buf)
	if err != nil || out.Type != msgListen || out.ID != 3 || out.Bind != "127.0.0.1:8080" {
		t.Fatalf("got %+v %v", out, err)
	}
	// Lengths are checked before anything is allocated.
	var huge [4]byte
	binary.BigEndian.PutUint32(huge[:], 1<<31)
	if _, err := readControl(bytes.NewReader(huge[:])); !errors.Is(err, ErrBadControl) {
		t.Fatalf("huge length: %v", err)
	}
	// Unknown fields are ignored (later versions may add some); a missing
	// type is not.
	for body, ok := range map[string]bool{`{"type":"reset","stream":5,"future":true}`: true, `{"stream":5}`: false, `[1]`: false} {
		b := binary.BigEndian.AppendUint32(nil, uint32(len(body)))
		_, err := readControl(bytes.NewReader(append(b, body...)))
		if (err == nil) != ok {
			t.Fatalf("%s: err %v", body, err)
		}
	}
}

func FuzzStreamHeader(f *testing.F) {
	for _, h := range []streamHeader{{Kind: KindConnect, Host: "example.com", Port: 80}, {Kind: KindReverse, Listener: 1, Host: "::1", Port: 1}} {
		b, _ := h.marshal()
		f.Add(b)
	}
	f.Add([]byte{1, 1, 0, 0, 0, 0, 0, 0, 255})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		h, err := readStreamHeader(r)
		if err != nil {
			return
		}
		if used := len(data) - r.Len(); used != streamHeaderFixed+len(h.Host) {
			t.Fatalf("consumed %d bytes for a %d-byte host", used, len(h.Host))
		}
		b, err := h.marshal()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, data[:len(b)]) {
			t.Fatalf("re-encoding differs: %x vs %x", b, data[:len(b)])
		}
	})
}

func FuzzStreamReply(f *testing.F) {
	f.Add(streamReply{Code: CodeOK, Bound: "1.2.3.4:5"}.marshal())
	f.Add(streamReply{Code: CodeDenied, Message: "no"}.marshal())
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		rep, err := readStreamReply(r)
		if err != nil {
			return
		}
		b := rep.marshal()
		if used := len(data) - r.Len(); used != len(b) || !bytes.Equal(b, data[:used]) {
			t.Fatalf("re-encoding differs: %x vs %x", b, data[:used])
		}
	})
}

func FuzzReadControl(f *testing.F) {
	for _, m := range []*controlMsg{
		{Type: msgHello, Version: 1, MinVersion: 1, Capabilities: []string{capForward}},
		{Type: msgListenError, ID: 2, Code: ctlDenied, Message: "no"},
		{Type: msgBye, Code: ctlRevoked},
	} {
		var buf bytes.Buffer
		writeControl(&buf, m)
		f.Add(buf.Bytes())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := readControl(bytes.NewReader(data))
		if err != nil {
			return
		}
		var buf bytes.Buffer
		if err := writeControl(&buf, m); err != nil {
			t.Fatal(err)
		}
		m2, err := readControl(&buf)
		if err != nil || m2.Type != m.Type || m2.ID != m.ID || m2.Stream != m.Stream {
			t.Fatalf("round trip: %+v -> %+v, %v", m, m2, err)
		}
	})
}

func TestForwardValidate(t *testing.T) {
	cases := []struct {
		f   Forward
		err bool
	}{
		{Forward{ForwardLocal, "127.0.0.1:8080", "db:5432"}, false},
		{Forward{ForwardLocal, "[::1]:0", "[2001:db8::5]:22"}, false},
		{Forward{ForwardLocal, "localhost:0", "10.0.0.1:80"}, false},
		{Forward{ForwardRemote, "127.0.0.1:9000", "localhost:3000"}, false},
		{Forward{ForwardRemote, "gw.example:9000", "localhost:3000"}, true}, // -R binds by address
		{Forward{ForwardDynamic, "127.0.0.1:1080", ""}, false},
		{Forward{ForwardDynamic, "127.0.0.1:1080", "db:1"}, true},
		{Forward{ForwardLocal, "127.0.0.1:8080", "db"}, true},
		{Forward{ForwardLocal, "127.0.0.1:8080", "db:0"}, true},
		{Forward{ForwardLocal, "127.0.0.1:70000", "db:1"}, true},
		{Forward{ForwardLocal, "8080", "db:1"}, true},
		{Forward{ForwardLocal, "127.0.0.1:8080", "bad host:1"}, true},
		{Forward{'X', "127.0.0.1:1", ""}, true},
	}
	for _, tc := range cases {
		err := tc.f.Validate()
		if tc.err != (err != nil) || err != nil && !errors.Is(err, ErrBadForward) {
			t.Errorf("%+v: Validate = %v, want error %v", tc.f, err, tc.err)
		}
	}
}

// TestFrameTracker checks the coalescer's frame parser against the frame
// boundaries of a random stream of yamux frames cut into random pieces.
func TestFrameTracker(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 200; round++ {
		var stream []byte
		ends := map[int]bool{}
		for range 1 + rng.IntN(10) {
			typ := byte(rng.IntN(4))
			n := uint32(rng.IntN(3000))
			hdr := make([]byte, 12)
			hdr[1] = typ
			binary.BigEndian.PutUint32(hdr[8:], n)
			stream = append(stream, hdr...)
			if typ == 0 {
				stream = append(stream, make([]byte, n)...)
			}
			ends[len(stream)] = true
		}
		var ft frameTracker
		for off := 0; off < len(stream); {
			n := 1 + rng.IntN(min(len(stream)-off, 5000))
			if got := ft.advance(stream[off : off+n]); got != ends[off+n] {
				t.Fatalf("round %d: boundary at %d: got %v want %v", round, off+n, got, ends[off+n])
			}
			off += n
		}
	}
}
