package tunnel

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"sync"

	"github.com/twoway/twoway/tun"
)

// Packet framing on a packets stream (docs/PROTOCOL.md §4, kind packets):
// after the header and reply, each direction is a sequence of packets, each
// a 2-byte big-endian length n (1..65535) followed by the n bytes of one raw
// IPv4 or IPv6 packet. A sender frames a whole batch into one buffer and
// writes it at once, so that the TLS records stay large; the receiver reads
// whatever has arrived as one batch.
//
// In a direction where GSO passthrough was agreed (capGSO), a tun.GSOLen-byte
// GSO descriptor sits between the length and the packet, and the packet may
// be a superpacket (tun.GSO). The length still counts the packet only.
const (
	packetLenSize = 2

	// maxPacketWrite caps one coalesced write. A batch of 128 MTU-sized
	// packets is about 180 KiB; superpackets could make it 8 MiB, which
	// would only hold up the other streams, so such a batch leaves in a
	// few writes.
	maxPacketWrite = 256 << 10

	// packetReadBuffer holds at least one whole frame, so that "is the next
	// packet already here" can be answered without blocking.
	packetReadBuffer = 128 << 10
)

// packetWriter frames batches of packets. Its buffer grows to the largest
// batch seen and is then reused: no allocation in the steady state. One
// goroutine uses it.
type packetWriter struct {
	buf []byte
	gso bool // frames carry a GSO descriptor
	// described: each packet given to writeBatch starts with its
	// descriptor (a GSO peer's queue); else, with gso, the packets are
	// finished and framed with a GSONone descriptor.
	described bool
}

// writeBatch frames pkts (each one raw IP packet) and writes them to w,
// normally in one Write. Empty packets and packets longer than
// tun.MaxPacketSize cannot be framed and are skipped.
func (pw *packetWriter) writeBatch(w io.Writer, pkts [][]byte) error {
	buf := pw.buf[:0]
	for _, p := range pkts {
		body := len(p)
		if pw.described {
			body -= tun.GSOLen
		}
		if body <= 0 || body > tun.MaxPacketSize {
			continue
		}
		if len(buf) > 0 && len(buf)+packetLenSize+tun.GSOLen+len(p) > maxPacketWrite {
			if _, err := w.Write(buf); err != nil {
				pw.buf = buf[:0]
				return err
			}
			buf = buf[:0]
		}
		buf = binary.BigEndian.AppendUint16(buf, uint16(body))
		if pw.gso && !pw.described {
			buf = append(buf, byte(tun.GSONone), 0, 0)
		}
		buf = append(buf, p...)
	}
	var err error
	if len(buf) > 0 {
		_, err = w.Write(buf)
	}
	pw.buf = buf[:0]
	return err
}

// writeGSO frames the one packet at buf[offset:offset+n], whose GSO
// descriptor is in front of it, and writes it to w. The frame is built in
// the headroom, so a 64 KiB superpacket is not copied on its way to the
// stream.
func writeGSO(w io.Writer, buf []byte, offset, n int) error {
	start := offset - tun.GSOLen - packetLenSize
	binary.BigEndian.PutUint16(buf[start:], uint16(n))
	_, err := w.Write(buf[start : offset+n])
	return err
}

// packetBuf is one pooled packet buffer of tun.BufferSize bytes: the size a
// tun.Device needs for every element it writes (it may coalesce in place up
// to the capacity). The pool holds pointers so that Put does not allocate.
type packetBuf struct{ b []byte }

var packetBufs = sync.Pool{New: func() any { return &packetBuf{b: make([]byte, tun.BufferSize)} }}

// packetBatch is a batch of received packets in pooled buffers. pkts[i] is
// held[i].b[:tun.Offset+n] until a device's Write reorders pkts; held keeps
// the buffers themselves, which is what release returns.
type packetBatch struct {
	held []*packetBuf
	pkts [][]byte
}

// release returns the buffers to the pool.
func (b *packetBatch) release() {
	for i, h := range b.held {
		packetBufs.Put(h)
		b.held[i] = nil
	}
	b.held = b.held[:0]
	clear(b.pkts) // do not pin the buffers
	b.pkts = b.pkts[:0]
}

// packetReader reads framed packets from a packets stream.
type packetReader struct {
	r   io.Reader
	br  *bufio.Reader // over r
	gso bool          // frames carry a GSO descriptor
}

// newPacketReader reads frames from r, with GSO descriptors if gso.
func newPacketReader(r io.Reader, gso bool) *packetReader {
	return &packetReader{r: r, br: bufio.NewReaderSize(r, packetReadBuffer), gso: gso}
}

// readFull fills dst: from the buffer, and what the buffer does not hold
// yet straight from the stream, so that a superpacket is not copied through
// the buffer on its way.
func (pr *packetReader) readFull(dst []byte) error {
	have := pr.br.Buffered()
	if have >= len(dst) || len(dst)-have < 4<<10 {
		_, err := io.ReadFull(pr.br, dst)
		return err
	}
	buf, _ := pr.br.Peek(have) // cannot fail: have bytes are buffered
	k := copy(dst, buf)
	_, _ = pr.br.Discard(k)
	_, err := io.ReadFull(pr.r, dst[k:])
	return err
}

// frameLen is the size of the frame header: length and, with GSO, the
// descriptor.
func (pr *packetReader) frameLen() int {
	if pr.gso {
		return packetLenSize + tun.GSOLen
	}
	return packetLenSize
}

// readBatch blocks until one packet has arrived, then takes every further
// packet already received, up to max, into b (which must be released).
// Each packet lands at tun.Offset in its own pooled buffer, with its GSO
// descriptor (if any) right in front of it. Buffers are taken only once data
// is there, so an idle stream holds none.
func (pr *packetReader) readBatch(b *packetBatch, max int) error {
	hdr, err := pr.br.Peek(packetLenSize)
	if err != nil {
		return err
	}
	fl := pr.frameLen()
	for {
		n := int(binary.BigEndian.Uint16(hdr))
		if n == 0 {
			return fmt.Errorf("%w: zero length", ErrBadPacket)
		}
		_, _ = pr.br.Discard(packetLenSize)
		pb := packetBufs.Get().(*packetBuf)
		b.held = append(b.held, pb)
		pkt := pb.b[:tun.Offset+n]
		if err := pr.readFull(pkt[tun.Offset+packetLenSize-fl:]); err != nil {
			return fmt.Errorf("%w: truncated: %w", ErrBadPacket, err)
		}
		b.pkts = append(b.pkts, pkt)
		if len(b.pkts) >= max || pr.br.Buffered() < fl {
			return nil
		}
		hdr, _ = pr.br.Peek(packetLenSize)
		if pr.br.Buffered() < fl+int(binary.BigEndian.Uint16(hdr)) {
			return nil // the rest of it is still in flight: do not wait
		}
	}
}
