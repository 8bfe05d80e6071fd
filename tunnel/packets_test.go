package tunnel

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"testing"

	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/router"
	"github.com/twoway/twoway/tun"
	"github.com/twoway/twoway/tun/tuntest"
)

// TestPacketFraming: batches survive the framing byte for byte, in order,
// and a reader takes what has arrived as one batch up to its limit.
func TestPacketFraming(t *testing.T) {
	var pkts [][]byte
	for i := range 300 {
		size := 1 + (i*997)%tun.MaxPacketSize
		if i%3 == 0 {
			size = 1400
		}
		p := bytes.Repeat([]byte{byte(i)}, size)
		pkts = append(pkts, p)
	}
	var wire bytes.Buffer
	var pw packetWriter
	if err := pw.writeBatch(&wire, pkts[:150]); err != nil {
		t.Fatal(err)
	}
	if err := pw.writeBatch(&wire, pkts[150:]); err != nil {
		t.Fatal(err)
	}
	pr := newPacketReader(&wire, false)
	var got [][]byte
	for {
		var b packetBatch
		err := pr.readBatch(&b, 64)
		if len(b.pkts) > 64 {
			t.Fatalf("batch of %d, limit 64", len(b.pkts))
		}
		for _, p := range b.pkts {
			if cap(p) != tun.BufferSize {
				t.Fatalf("buffer capacity %d, want tun.BufferSize", cap(p))
			}
			got = append(got, bytes.Clone(p[tun.Offset:]))
		}
		b.release()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != len(pkts) {
		t.Fatalf("read %d packets, wrote %d", len(got), len(pkts))
	}
	for i := range pkts {
		if !bytes.Equal(got[i], pkts[i]) {
			t.Fatalf("packet %d differs", i)
		}
	}
}

// TestPacketFramingErrors: a zero length and a truncated packet are
// errors, not packets.
func TestPacketFramingErrors(t *testing.T) {
	for name, wire := range map[string][]byte{
		"zero length": {0, 0, 0, 5, 1, 2, 3, 4, 5},
		"truncated":   {0, 10, 1, 2, 3},
	} {
		var b packetBatch
		err := newPacketReader(bytes.NewReader(wire), false).readBatch(&b, 8)
		b.release()
		if !errors.Is(err, ErrBadPacket) {
			t.Errorf("%s: err = %v, want ErrBadPacket", name, err)
		}
	}
}

// FuzzPacketReader: any byte stream yields packets that re-frame to a
// prefix of the input, or an error; never a panic.
func FuzzPacketReader(f *testing.F) {
	f.Add([]byte{0, 3, 1, 2, 3, 0, 1, 9})
	f.Add([]byte{0, 0})
	f.Add([]byte{255, 255, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		pr := newPacketReader(bytes.NewReader(data), false)
		var out bytes.Buffer
		var pw packetWriter
		for {
			var b packetBatch
			err := pr.readBatch(&b, 16)
			var views [][]byte
			for _, p := range b.pkts {
				views = append(views, p[tun.Offset:])
			}
			if werr := pw.writeBatch(&out, views); werr != nil {
				t.Fatal(werr)
			}
			b.release()
			if err != nil {
				break
			}
		}
		if !bytes.HasPrefix(data, out.Bytes()) {
			t.Fatalf("re-framed %x is not a prefix of the input %x", out.Bytes(), data)
		}
	})
}

// loopReader serves the same bytes forever without allocating.
type loopReader struct {
	data []byte
	off  int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := copy(p, l.data[l.off:])
	l.off = (l.off + n) % len(l.data)
	return n, nil
}

// nullLAN takes packets without keeping them.
type nullLAN struct{ n int }

func (l *nullLAN) Write(bufs [][]byte, offset int) (int, error) {
	l.n += len(bufs)
	return len(bufs), nil
}

// TestPacketPathAllocs: in the steady state, framing a batch read from
// the device, and decoding a batch from the stream and routing it to the
// LAN, allocate nothing per packet (nothing at all per batch).
func TestPacketPathAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items, so allocation counts are meaningless")
	}
	me := netip.MustParseAddr("198.18.100.2")
	const batch = 64
	var pkts [][]byte
	for i := range batch {
		pkts = append(pkts, tuntest.UDP(netip.AddrPortFrom(me, uint16(1000+i)), netip.MustParseAddrPort("198.18.0.10:53"), make([]byte, 1200)))
	}

	var pw packetWriter
	if n := testing.AllocsPerRun(100, func() { _ = pw.writeBatch(io.Discard, pkts) }); n != 0 {
		t.Errorf("writeBatch: %v allocations per batch of %d", n, batch)
	}

	var wire bytes.Buffer
	_ = pw.writeBatch(&wire, pkts)
	lan := &nullLAN{}
	r, err := router.New(router.Config{LAN: lan, Policy: &fakePolicy{}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	peer, err := r.AddPeer(&pki.Identity{CommonName: "alice"}, []netip.Addr{me})
	if err != nil {
		t.Fatal(err)
	}
	pr := newPacketReader(&loopReader{data: wire.Bytes()}, false)
	var b packetBatch
	n := testing.AllocsPerRun(100, func() {
		if err := pr.readBatch(&b, batch); err != nil {
			t.Fatal(err)
		}
		if err := r.FromPeer(peer, b.pkts, tun.Offset, nil); err != nil {
			t.Fatal(err)
		}
		b.release()
	})
	if n != 0 {
		t.Errorf("read + route: %v allocations per batch", n)
	}
	if lan.n == 0 {
		t.Fatal("nothing reached the LAN")
	}
}

// chunkReader hands out its data in pieces of varying size, as a stream
// does when frames arrive in parts.
type chunkReader struct {
	data []byte
	i    int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	c.i++
	n := min(len(p), len(c.data), 1+(c.i*7919)%9000)
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

// TestPacketFramingGSO: with descriptors, superpackets framed in place
// (writeGSO), finished packets framed with a none descriptor and queue items
// that carry their own descriptor all come back with descriptor and bytes
// intact, also when the stream delivers them in odd pieces.
func TestPacketFramingGSO(t *testing.T) {
	type item struct {
		g   tun.GSO
		pkt []byte
	}
	var want []item
	var wire bytes.Buffer
	for i := range 40 {
		size := 1 + (i*7717)%tun.MaxPacketSize
		p := bytes.Repeat([]byte{byte(i)}, size)
		switch i % 3 {
		case 0: // a superpacket read by ReadGSO, framed in place
			g := tun.GSO{Kind: tun.GSOTCP, Size: uint16(1000 + i)}
			buf := make([]byte, tun.BufferSize)
			copy(buf[tun.Offset:], p)
			tun.PutGSO(buf, tun.Offset, g)
			if err := writeGSO(&wire, buf, tun.Offset, size); err != nil {
				t.Fatal(err)
			}
			want = append(want, item{g, p})
		case 1: // finished packets from an ordinary read
			pw := packetWriter{gso: true}
			if err := pw.writeBatch(&wire, [][]byte{p}); err != nil {
				t.Fatal(err)
			}
			want = append(want, item{tun.GSO{}, p})
		case 2: // a GSO peer's queue item, descriptor in front
			g := tun.GSO{Kind: tun.GSOUDP, Size: 1200}
			q := make([]byte, tun.GSOLen+size)
			tun.PutGSO(q, tun.GSOLen, g)
			copy(q[tun.GSOLen:], p)
			pw := packetWriter{gso: true, described: true}
			if err := pw.writeBatch(&wire, [][]byte{q}); err != nil {
				t.Fatal(err)
			}
			want = append(want, item{g, p})
		}
	}
	pr := newPacketReader(&chunkReader{data: wire.Bytes()}, true)
	var got []item
	for {
		var b packetBatch
		err := pr.readBatch(&b, 8)
		for _, p := range b.pkts {
			got = append(got, item{tun.GetGSO(p, tun.Offset), bytes.Clone(p[tun.Offset:])})
		}
		b.release()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(got) != len(want) {
		t.Fatalf("read %d packets, wrote %d", len(got), len(want))
	}
	for i := range want {
		if got[i].g != want[i].g || !bytes.Equal(got[i].pkt, want[i].pkt) {
			t.Fatalf("packet %d: %+v, %d bytes; want %+v, %d bytes", i, got[i].g, len(got[i].pkt), want[i].g, len(want[i].pkt))
		}
	}
}
