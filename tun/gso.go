package tun

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// GSO passthrough. A Linux TUN device with offloads hands over TCP (and UDP)
// superpackets of up to 64 KiB, which Read cuts into MTU-sized packets and
// Write glues together again. wireguard-go has to do that, as each packet
// becomes a UDP datagram; twoway's packets travel over a TCP stream, where a
// superpacket is just a longer frame. A GSODevice therefore reads and writes
// superpackets whole, each described by a small GSO descriptor that says what
// the receiving kernel still has to do (finish the checksum, cut into
// segments). It saves the cutting, the per-segment checksums and the gluing
// at both ends, and turns ~45 packets into one everywhere in between.
//
// The descriptor sits in the GSOLen bytes of headroom right before each
// packet (buf[offset-GSOLen:offset]), which is also its wire format on a
// packets stream (docs/PROTOCOL.md): kind (1 byte), segment size (2 bytes,
// big-endian). It carries no offsets: the writing side derives them from the
// packet itself, so a peer cannot hand the kernel a header that disagrees
// with the packet.

// GSOLen is the size of a GSO descriptor.
const GSOLen = 3

// MinGSOSize is the smallest segment size a superpacket may have.
const MinGSOSize = 48

// GSOKind says what a packet still needs before it is a finished packet.
type GSOKind uint8

const (
	// GSONone: a finished packet.
	GSONone GSOKind = iota
	// GSOChecksum: one TCP or UDP packet whose checksum field holds only
	// the pseudo-header sum (the kernel's CHECKSUM_PARTIAL).
	GSOChecksum
	// GSOTCP: a TCP superpacket to be cut into segments of Size payload
	// bytes; checksum partial as for GSOChecksum.
	GSOTCP
	// GSOUDP: a UDP superpacket (UDP GSO) to be cut into datagrams of
	// Size payload bytes; checksum partial.
	GSOUDP
	numGSOKinds
)

// GSO describes one packet read or written by a GSODevice.
type GSO struct {
	Kind GSOKind
	Size uint16 // segment payload size for GSOTCP and GSOUDP, else 0
}

// PutGSO writes g as the descriptor in front of the packet at buf[offset:].
func PutGSO(buf []byte, offset int, g GSO) {
	d := buf[offset-GSOLen : offset]
	d[0] = byte(g.Kind)
	binary.BigEndian.PutUint16(d[1:], g.Size)
}

// GetGSO reads the descriptor in front of the packet at buf[offset:]. It
// does not check it; WriteGSO does, against the packet.
func GetGSO(buf []byte, offset int) GSO {
	d := buf[offset-GSOLen : offset]
	return GSO{Kind: GSOKind(d[0]), Size: binary.BigEndian.Uint16(d[1:])}
}

// GSODevice is a Device that can also read and write superpackets whole.
// The same one-reader rule covers Read and ReadGSO together; WriteGSO may run
// concurrently with anything.
type GSODevice interface {
	Device

	// CanGSO reports whether ReadGSO and WriteGSO work on this device (a
	// Linux device opened without offloads has the methods but cannot).
	CanGSO() bool

	// ReadGSO reads one packet or superpacket into buf[offset:] (buf
	// must be BufferSize long) and its descriptor in front of it, and
	// returns the packet's length. A packet whose pending checksum is of a
	// kind the descriptor cannot express is finished here and read as
	// GSONone.
	ReadGSO(buf []byte, offset int) (int, error)

	// WriteGSO writes each bufs[i][offset:] as one packet, described by
	// its descriptor (GetGSO), and returns how many were written. A
	// descriptor that does not match its packet (a TCP descriptor on a UDP
	// packet, a segment size of 0, a truncated header) is refused with
	// ErrBadGSO for that packet only. It may overwrite the headroom.
	WriteGSO(bufs [][]byte, offset int) (int, error)
}

// AsGSO returns dev as a GSODevice when it can pass superpackets through.
func AsGSO(dev Device) (GSODevice, bool) {
	g, ok := dev.(GSODevice)
	if !ok || !g.CanGSO() {
		return nil, false
	}
	return g, true
}

// ErrBadGSO is returned for a packet whose descriptor does not fit it.
var ErrBadGSO = errors.New("tun: GSO descriptor does not match the packet")

// l4 is where a packet's TCP or UDP header starts and how long it is.
type l4 struct {
	proto  uint8 // 6 or 17
	start  int   // offset of the transport header
	hdrLen int   // transport header length
	v6     bool
}

const (
	protoTCP = 6
	protoUDP = 17
)

// transport finds the TCP or UDP header of pkt. IPv6 extension headers are
// not walked: the kernel does not segment such packets for TUN either, and a
// descriptor on one is refused.
func transport(pkt []byte) (l4, error) {
	var t l4
	if len(pkt) < 20 {
		return t, fmt.Errorf("%w: %d-byte packet", ErrBadGSO, len(pkt))
	}
	switch pkt[0] >> 4 {
	case 4:
		t.start = int(pkt[0]&0x0f) * 4
		t.proto = pkt[9]
		if t.start < 20 {
			return t, fmt.Errorf("%w: IPv4 header length %d", ErrBadGSO, t.start)
		}
		if binary.BigEndian.Uint16(pkt[6:])&0x3fff != 0 {
			return t, fmt.Errorf("%w: IPv4 fragment", ErrBadGSO)
		}
	case 6:
		if len(pkt) < 40 {
			return t, fmt.Errorf("%w: %d-byte IPv6 packet", ErrBadGSO, len(pkt))
		}
		t.start, t.proto, t.v6 = 40, pkt[6], true
	default:
		return t, fmt.Errorf("%w: IP version %d", ErrBadGSO, pkt[0]>>4)
	}
	switch t.proto {
	case protoTCP:
		if len(pkt) < t.start+20 {
			return t, fmt.Errorf("%w: truncated TCP header", ErrBadGSO)
		}
		t.hdrLen = int(pkt[t.start+12]>>4) * 4
		if t.hdrLen < 20 {
			return t, fmt.Errorf("%w: TCP header length %d", ErrBadGSO, t.hdrLen)
		}
	case protoUDP:
		t.hdrLen = 8
	default:
		return t, fmt.Errorf("%w: protocol %d is neither TCP nor UDP", ErrBadGSO, t.proto)
	}
	if len(pkt) < t.start+t.hdrLen {
		return t, fmt.Errorf("%w: truncated transport header", ErrBadGSO)
	}
	return t, nil
}

// csumField is the offset of the checksum in a TCP or UDP header.
func (t l4) csumField() int {
	if t.proto == protoTCP {
		return 16
	}
	return 6
}

// The virtio-net header that a Linux TUN device with IFF_VNET_HDR puts in
// front of every packet (struct virtio_net_hdr, little-endian on the
// architectures Go runs Linux on).
const (
	virtioHdrLen = 10

	virtioFlagNeedsCsum = 1

	virtioGSONone  = 0
	virtioGSOTCPv4 = 1
	virtioGSOUDPL4 = 5
	virtioGSOTCPv6 = 4
	virtioGSOECN   = 0x80
)

type virtioHdr struct {
	flags, gsoType                       uint8
	hdrLen, gsoSize, csumStart, csumOffs uint16
}

func (h *virtioHdr) decode(b []byte) {
	h.flags, h.gsoType = b[0], b[1]
	h.hdrLen = binary.LittleEndian.Uint16(b[2:])
	h.gsoSize = binary.LittleEndian.Uint16(b[4:])
	h.csumStart = binary.LittleEndian.Uint16(b[6:])
	h.csumOffs = binary.LittleEndian.Uint16(b[8:])
}

func (h *virtioHdr) encode(b []byte) {
	b[0], b[1] = h.flags, h.gsoType
	binary.LittleEndian.PutUint16(b[2:], h.hdrLen)
	binary.LittleEndian.PutUint16(b[4:], h.gsoSize)
	binary.LittleEndian.PutUint16(b[6:], h.csumStart)
	binary.LittleEndian.PutUint16(b[8:], h.csumOffs)
}

// fromVirtio turns the virtio-net header in front of the n-byte packet at
// buf[offset:] into a GSO descriptor in the same headroom. A pending checksum
// the descriptor cannot express is finished in place.
func fromVirtio(buf []byte, offset, n int) error {
	var h virtioHdr
	h.decode(buf[offset-virtioHdrLen:])
	pkt := buf[offset : offset+n]
	if h.gsoType == virtioGSONone {
		g := GSO{Kind: GSONone}
		if h.flags&virtioFlagNeedsCsum != 0 {
			start, at := int(h.csumStart), int(h.csumStart)+int(h.csumOffs)
			if t, err := transport(pkt); err == nil && t.start == start && at == start+t.csumField() {
				g.Kind = GSOChecksum
			} else if err := finishChecksum(pkt, start, at); err != nil {
				return err
			}
		}
		PutGSO(buf, offset, g)
		return nil
	}
	if h.gsoType&virtioGSOECN != 0 {
		return fmt.Errorf("%w: ECN superpacket (not offered to the kernel)", ErrBadGSO)
	}
	t, err := transport(pkt)
	if err != nil {
		return err
	}
	g := GSO{Size: h.gsoSize}
	switch {
	case h.gsoType == virtioGSOTCPv4 && t.proto == protoTCP && !t.v6,
		h.gsoType == virtioGSOTCPv6 && t.proto == protoTCP && t.v6:
		g.Kind = GSOTCP
	case h.gsoType == virtioGSOUDPL4 && t.proto == protoUDP:
		g.Kind = GSOUDP
	default:
		return fmt.Errorf("%w: virtio GSO type %d on IPv%d protocol %d", ErrBadGSO, h.gsoType, pkt[0]>>4, t.proto)
	}
	if g.Size == 0 || int(h.csumStart) != t.start {
		return fmt.Errorf("%w: segment size %d, checksum start %d", ErrBadGSO, g.Size, h.csumStart)
	}
	PutGSO(buf, offset, g)
	return nil
}

// toVirtio checks the descriptor in front of the n-byte packet at
// buf[offset:] against the packet and replaces it with the virtio-net header
// a Linux TUN device takes.
func toVirtio(buf []byte, offset, n int) error {
	h, _, err := virtioFor(buf[offset:offset+n], GetGSO(buf, offset))
	if err != nil {
		return err
	}
	h.encode(buf[offset-virtioHdrLen:])
	return nil
}

// CheckGSO reports whether g fits pkt, as WriteGSO checks it: ErrBadGSO if
// not.
func CheckGSO(pkt []byte, g GSO) error {
	_, _, err := virtioFor(pkt, g)
	return err
}

// virtioFor is the virtio-net header for pkt described by g, and where its
// transport header is (zero for GSONone). Only the kind and segment size come
// from the descriptor; every offset comes from the packet.
func virtioFor(pkt []byte, g GSO) (virtioHdr, l4, error) {
	var h virtioHdr
	var t l4
	if g.Kind == GSONone {
		return h, t, nil
	}
	if g.Kind >= numGSOKinds {
		return h, t, fmt.Errorf("%w: kind %d", ErrBadGSO, g.Kind)
	}
	t, err := transport(pkt)
	if err != nil {
		return h, t, err
	}
	h.flags = virtioFlagNeedsCsum
	h.csumStart, h.csumOffs = uint16(t.start), uint16(t.csumField())
	if g.Kind == GSOChecksum {
		return h, t, nil
	}
	want := uint8(protoTCP)
	if g.Kind == GSOUDP {
		want = protoUDP
	}
	if t.proto != want {
		return h, t, fmt.Errorf("%w: %s descriptor on protocol %d", ErrBadGSO, g.Kind, t.proto)
	}
	// A tiny segment size would have the receiving kernel turn one frame
	// into tens of thousands of packets, an amplification a peer must not
	// get. Linux never sends TCP segments below 48 bytes (TCP_MIN_SND_MSS),
	// so a frame becomes at most ~1,400 packets, about twice its bytes.
	if g.Size < MinGSOSize {
		return h, t, fmt.Errorf("%w: segment size %d below %d", ErrBadGSO, g.Size, MinGSOSize)
	}
	payload := len(pkt) - t.start - t.hdrLen
	// One segment's worth is a plain packet with a pending checksum;
	// kernels refuse "superpackets" of one.
	if payload > int(g.Size) {
		h.hdrLen, h.gsoSize = uint16(t.start+t.hdrLen), g.Size
		switch {
		case g.Kind == GSOUDP:
			h.gsoType = virtioGSOUDPL4
		case t.v6:
			h.gsoType = virtioGSOTCPv6
		default:
			h.gsoType = virtioGSOTCPv4
		}
	}
	return h, t, nil
}

// finishChecksum completes a partial checksum: the one's complement sum of
// pkt[start:], which already includes the pseudo-header sum the sender left
// in the field at at, goes into that field.
func finishChecksum(pkt []byte, start, at int) error {
	if start < 0 || at < start || at+2 > len(pkt) {
		return fmt.Errorf("%w: checksum at %d from %d in a %d-byte packet", ErrBadGSO, at, start, len(pkt))
	}
	s := Checksum(pkt[start:], 0)
	binary.BigEndian.PutUint16(pkt[at:], ^s)
	return nil
}

// Checksum folds the RFC 1071 one's complement sum of b, added to initial,
// into 16 bits (not complemented).
func Checksum(b []byte, initial uint64) uint16 {
	s := initial
	for len(b) >= 8 {
		v := binary.BigEndian.Uint64(b)
		s += v >> 32
		s += v & 0xffffffff
		b = b[8:]
	}
	for len(b) >= 2 {
		s += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint64(b[0]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

func (k GSOKind) String() string {
	switch k {
	case GSONone:
		return "none"
	case GSOChecksum:
		return "checksum"
	case GSOTCP:
		return "tcp"
	case GSOUDP:
		return "udp"
	}
	return fmt.Sprintf("GSOKind(%d)", uint8(k))
}
