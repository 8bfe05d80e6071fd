package datagram

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"testing"

	"github.com/twoway/twoway/pki/pkitest"
)

// pair returns the keys of both sides of a real TLS 1.3 session (a mutual
// one, over a pipe), for session id sid and epoch.
func tlsPair(t testing.TB) (client, server tls.ConnectionState) {
	t.Helper()
	h := pkitest.NewHierarchy(t)
	srvLeaf := h.ServerCA.Server(t, "127.0.0.1")
	cliLeaf := h.ClientCA.Client(t, "alice")
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	cc := tls.Client(a, &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, Certificates: []tls.Certificate{cliLeaf.TLSCertificate()}})
	sc := tls.Server(b, &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{srvLeaf.TLSCertificate()}, ClientAuth: tls.RequireAnyClientCert})
	var wg sync.WaitGroup
	wg.Add(1)
	var serr error
	go func() { defer wg.Done(); serr = sc.HandshakeContext(context.Background()) }()
	if err := cc.HandshakeContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if serr != nil {
		t.Fatal(serr)
	}
	return cc.ConnectionState(), sc.ConnectionState()
}

func derivePair(t testing.TB, epoch uint32) (c, s Keys) {
	t.Helper()
	ccs, scs := tlsPair(t)
	return deriveFrom(t, ccs, scs, epoch)
}

func deriveFrom(t testing.TB, ccs, scs tls.ConnectionState, epoch uint32) (c, s Keys) {
	t.Helper()
	sid := []byte("0123456789abcdef")
	c, err := DeriveKeys(ccs.ExportKeyingMaterial, sid, epoch, true)
	if err != nil {
		t.Fatal(err)
	}
	s, err = DeriveKeys(scs.ExportKeyingMaterial, sid, epoch, false)
	if err != nil {
		t.Fatal(err)
	}
	return c, s
}

// TestDeriveKeys: both ends of a TLS session derive matching keys, one per
// direction, different per epoch and per session.
func TestDeriveKeys(t *testing.T) {
	ccs, scs := tlsPair(t)
	c, s := deriveFrom(t, ccs, scs, 0)
	if c.Send != s.Recv || c.Recv != s.Send {
		t.Fatal("the two sides derived different keys")
	}
	if c.Send == c.Recv {
		t.Fatal("both directions share a key")
	}
	c1, _ := deriveFrom(t, ccs, scs, 1)
	if c1.Send == c.Send || c1.Recv == c.Recv {
		t.Fatal("epoch 1 has epoch 0's keys")
	}
	other, _ := derivePair(t, 0)
	if other.Send == c.Send {
		t.Fatal("two TLS sessions derived the same key")
	}
}

func newPair(t testing.TB, c, s Keys, recv uint32) (*Sealer, *Opener) {
	t.Helper()
	se, err := NewSealer(c, recv)
	if err != nil {
		t.Fatal(err)
	}
	op, err := NewOpener(s, recv)
	if err != nil {
		t.Fatal(err)
	}
	return se, op
}

func TestSealOpen(t *testing.T) {
	c, s := derivePair(t, 0)
	se, op := newPair(t, c, s, 7)
	pkt := []byte("an IP packet")
	d, err := se.Seal(nil, TypeData, pkt)
	if err != nil {
		t.Fatal(err)
	}
	if len(d) != len(pkt)+Overhead {
		t.Fatalf("datagram of %d bytes for %d of payload", len(d), len(pkt))
	}
	if r, ok := Receiver(d); !ok || r != 7 {
		t.Fatalf("receiver %d %v", r, ok)
	}
	typ, got, err := op.Open(nil, d)
	if err != nil || typ != TypeData || !bytes.Equal(got, pkt) {
		t.Fatalf("open: %d %q %v", typ, got, err)
	}
	// The same datagram again is a replay.
	if _, _, err := op.Open(nil, d); !errors.Is(err, ErrReplay) {
		t.Fatalf("replay: %v", err)
	}
}

// TestOpenRejects: every kind of damage is refused with its error, and a
// refused datagram does not move the replay window (the genuine one still
// opens afterwards).
func TestOpenRejects(t *testing.T) {
	c, s := derivePair(t, 0)
	se, op := newPair(t, c, s, 7)
	d, _ := se.Seal(nil, TypeData, []byte("payload"))
	flip := func(i int) []byte { b := bytes.Clone(d); b[i] ^= 0x40; return b }
	setCounter := func(n byte) []byte { b := bytes.Clone(d); b[15] = n; return b }
	cases := []struct {
		name string
		p    []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"truncated to header", d[:HeaderLen], ErrShort},
		{"truncated tag", d[:len(d)-1], ErrAuth},
		{"unknown type", func() []byte { b := bytes.Clone(d); b[0] = 9; return b }(), ErrType},
		{"type changed", func() []byte { b := bytes.Clone(d); b[0] = TypeProbe; return b }(), ErrAuth},
		{"reserved bits", flip(2), ErrType},
		{"other receiver", flip(5), ErrReceiver},
		{"other phase", flip(1), ErrPhase},
		{"counter changed", setCounter(9), ErrAuth},
		{"ciphertext changed", flip(HeaderLen + 1), ErrAuth},
		{"tag changed", flip(len(d) - 1), ErrAuth},
	}
	for _, tc := range cases {
		if _, _, err := op.Open(nil, tc.p); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// Sealed with the wrong key: the other direction's.
	wrong, _ := NewSealer(s, 7)
	w, _ := wrong.Seal(nil, TypeData, []byte("payload"))
	if _, _, err := op.Open(nil, w); !errors.Is(err, ErrAuth) {
		t.Errorf("wrong key: %v", err)
	}
	if _, _, err := op.Open(nil, d); err != nil {
		t.Fatalf("the genuine datagram after the forgeries: %v", err)
	}
}

// TestReplayWindow: reordering within the window is accepted once, and
// what is older than the window is refused.
func TestReplayWindow(t *testing.T) {
	c, s := derivePair(t, 0)
	se, op := newPair(t, c, s, 1)
	var ds [][]byte
	for i := range 3 * windowSize {
		d, _ := se.Seal(nil, TypeData, []byte{byte(i)})
		ds = append(ds, d)
	}
	open := func(i int) error { _, _, err := op.Open(nil, ds[i]); return err }
	// In reverse order within the window: all accepted.
	for i := 100; i >= 0; i-- {
		if err := open(i); err != nil {
			t.Fatalf("datagram %d, reordered: %v", i, err)
		}
	}
	for i := 0; i <= 100; i++ {
		if err := open(i); !errors.Is(err, ErrReplay) {
			t.Fatalf("datagram %d again: %v", i, err)
		}
	}
	// Jump ahead by a window and a half: the skipped ones close to the new
	// top still open, those beyond the window do not.
	top := windowSize + windowSize/2
	if err := open(top); err != nil {
		t.Fatal(err)
	}
	if err := open(top - 100); err != nil {
		t.Fatalf("within the window after a jump: %v", err)
	}
	if err := open(200); !errors.Is(err, ErrReplay) {
		t.Fatalf("older than the window: %v", err)
	}
	// Every counter in sequence after that, then all of them again.
	for i := top + 1; i < len(ds); i++ {
		if err := open(i); err != nil {
			t.Fatalf("in order %d: %v", i, err)
		}
	}
	for i := len(ds) - windowSize/2; i < len(ds); i++ {
		if err := open(i); !errors.Is(err, ErrReplay) {
			t.Fatalf("replayed %d: %v", i, err)
		}
	}
}

// TestWindowAgainstModel checks the window against a map of everything
// seen, over a pseudo-random walk of counters.
func TestWindowAgainstModel(t *testing.T) {
	var w window
	seen := map[uint64]bool{}
	var top uint64
	x := uint64(1)
	for range 200000 {
		x = x*6364136223846793005 + 1442695040888963407
		var n uint64
		switch x >> 62 {
		case 0: // far ahead
			n = top + (x>>40)%(3*windowSize)
		default: // near the top, behind or ahead
			n = top + (x>>40)%256
			if d := (x >> 20) % (windowSize + 512); d < n {
				n -= d
			} else {
				n = 0
			}
		}
		// The model: accept when unseen and within the window behind top.
		want := !seen[n] && (n >= top || top-n <= windowSize-64)
		if got := w.mark(n); got != want {
			t.Fatalf("counter %d (top %d): window says %v, model %v", n, top, got, want)
		}
		if want {
			seen[n] = true
			top = max(top, n+1)
		}
	}
}

// TestRekey: after a rekey the old key still opens until retired, and
// each key's window is its own.
func TestRekey(t *testing.T) {
	ccs, scs := tlsPair(t)
	c0, s0 := deriveFrom(t, ccs, scs, 0)
	c1, s1 := deriveFrom(t, ccs, scs, 1)
	se0, op := newPair(t, c0, s0, 3)
	old, _ := se0.Seal(nil, TypeData, []byte("old"))
	if err := op.Rekey(s1); err != nil {
		t.Fatal(err)
	}
	se1, _ := NewSealer(c1, 3)
	nw, _ := se1.Seal(nil, TypeData, []byte("new"))
	if _, p, err := op.Open(nil, nw); err != nil || string(p) != "new" {
		t.Fatalf("new key: %q %v", p, err)
	}
	if _, p, err := op.Open(nil, old); err != nil || string(p) != "old" {
		t.Fatalf("old key before retiring: %q %v", p, err)
	}
	old2, _ := se0.Seal(nil, TypeData, []byte("late"))
	op.Retire()
	if _, _, err := op.Open(nil, old2); !errors.Is(err, ErrPhase) {
		t.Fatalf("old key after retiring: %v", err)
	}
}

// TestSealerLimits: a sealer asks for a rekey, then refuses.
func TestSealerLimits(t *testing.T) {
	c, _ := derivePair(t, 0)
	se, _ := NewSealer(c, 1)
	se.next.Store(RekeyAfter - 1)
	if se.NeedsRekey() {
		t.Fatal("rekey asked early")
	}
	if _, err := se.Seal(nil, TypeData, nil); err != nil || !se.NeedsRekey() || se.Sealed() != RekeyAfter {
		t.Fatalf("at RekeyAfter: %v, needs rekey %v", err, se.NeedsRekey())
	}
	se.next.Store(RejectAfter)
	if _, err := se.Seal(nil, TypeData, nil); !errors.Is(err, ErrExhausted) {
		t.Fatalf("past RejectAfter: %v", err)
	}
}

// TestOpenConcurrent: many goroutines opening the same datagrams accept
// each exactly once.
func TestOpenConcurrent(t *testing.T) {
	c, s := derivePair(t, 0)
	se, op := newPair(t, c, s, 1)
	const n = 2000
	ds := make([][]byte, n)
	for i := range ds {
		ds[i], _ = se.Seal(nil, TypeData, []byte{byte(i)})
	}
	var mu sync.Mutex
	opened := 0
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, d := range ds {
				if _, _, err := op.Open(nil, d); err == nil {
					mu.Lock()
					opened++
					mu.Unlock()
				} else if !errors.Is(err, ErrReplay) {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if opened != n {
		t.Fatalf("%d datagrams opened, want %d", opened, n)
	}
}

func TestSealOpenAllocs(t *testing.T) {
	c, s := derivePair(t, 0)
	se, op := newPair(t, c, s, 1)
	pkt := make([]byte, 1400)
	buf := make([]byte, 0, 1500)
	out := make([]byte, 0, 1500)
	allocs := testing.AllocsPerRun(100, func() {
		d, _ := se.Seal(buf[:0], TypeData, pkt)
		if _, _, err := op.Open(out[:0], d); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per datagram", allocs)
	}
}

func BenchmarkSealOpen(b *testing.B) {
	c, s := derivePair(b, 0)
	se, op := newPair(b, c, s, 1)
	pkt := make([]byte, 1400)
	buf := make([]byte, 0, 1500)
	out := make([]byte, 0, 1500)
	b.SetBytes(int64(len(pkt)))
	for b.Loop() {
		d, _ := se.Seal(buf[:0], TypeData, pkt)
		if _, _, err := op.Open(out[:0], d); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzOpen: no input makes Open panic, and only genuine datagrams open.
func FuzzOpen(f *testing.F) {
	c, s := derivePair(f, 0)
	se, _ := NewSealer(c, 5)
	for i := range 3 {
		d, _ := se.Seal(nil, byte(i+1), []byte("seed"))
		f.Add(d)
	}
	f.Add([]byte{})
	f.Add(make([]byte, Overhead))
	f.Fuzz(func(t *testing.T, p []byte) {
		op, err := NewOpener(s, 5)
		if err != nil {
			t.Fatal(err)
		}
		typ, payload, err := op.Open(nil, p)
		if err != nil {
			return
		}
		// It opened: it must be one we sealed ("seed", a known type).
		if string(payload) != "seed" || typ < TypeData || typ > TypeClockReply {
			t.Fatalf("opened a forgery: type %d payload %q", typ, payload)
		}
	})
}
