package tun

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
)

// Packets for these tests are built by hand, not with tuntest (which imports
// this package).

var (
	src4 = netip.MustParseAddr("198.18.100.7")
	dst4 = netip.MustParseAddr("198.18.0.10")
	src6 = netip.MustParseAddr("2001:db8:100::7")
	dst6 = netip.MustParseAddr("2001:db8:1::10")
)

// ipPacket wraps l4 (whose checksum field is at csumAt, or -1 for none) in
// an IPv4 or IPv6 header and fills in every checksum.
func ipPacket(src, dst netip.Addr, proto uint8, l4 []byte, csumAt int) []byte {
	var p []byte
	if src.Is4() {
		p = make([]byte, 20+len(l4))
		p[0], p[8], p[9] = 0x45, 64, proto
		binary.BigEndian.PutUint16(p[2:], uint16(len(p)))
		copy(p[12:], src.AsSlice())
		copy(p[16:], dst.AsSlice())
		binary.BigEndian.PutUint16(p[10:], ^Checksum(p[:20], 0))
		copy(p[20:], l4)
	} else {
		p = make([]byte, 40+len(l4))
		p[0], p[6], p[7] = 0x60, proto, 64
		binary.BigEndian.PutUint16(p[4:], uint16(len(l4)))
		copy(p[8:], src.AsSlice())
		copy(p[24:], dst.AsSlice())
		copy(p[40:], l4)
	}
	if csumAt >= 0 {
		t := p[len(p)-len(l4):]
		binary.BigEndian.PutUint16(t[csumAt:], ^Checksum(t, pseudoSum(src, dst, proto, len(l4))))
	}
	return p
}

func pseudoSum(src, dst netip.Addr, proto uint8, n int) uint64 {
	var b []byte
	b = append(b, src.AsSlice()...)
	b = append(b, dst.AsSlice()...)
	b = append(b, 0, proto, byte(n>>8), byte(n))
	return uint64(Checksum(b, 0))
}

func tcpPacket(src, dst netip.Addr, payload int) []byte {
	l4 := make([]byte, 20+payload)
	binary.BigEndian.PutUint16(l4[0:], 40000)
	binary.BigEndian.PutUint16(l4[2:], 80)
	l4[12], l4[13] = 5<<4, 0x18
	return ipPacket(src, dst, protoTCP, l4, 16)
}

func udpPacket(src, dst netip.Addr, payload int) []byte {
	l4 := make([]byte, 8+payload)
	binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
	return ipPacket(src, dst, protoUDP, l4, 6)
}

// withVirtio puts pkt at offset Offset of a buffer with h in front.
func withVirtio(pkt []byte, h virtioHdr) []byte {
	buf := make([]byte, Offset+len(pkt))
	copy(buf[Offset:], pkt)
	h.encode(buf[Offset-virtioHdrLen:])
	return buf
}

// What a kernel hands over becomes a descriptor, and the descriptor becomes
// the header the kernel wants back, with the offsets taken from the packet.
func TestGSOVirtioRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		pkt  []byte
		in   virtioHdr
		want GSO
		out  virtioHdr
	}{
		{"finished", udpPacket(src4, dst4, 10), virtioHdr{}, GSO{}, virtioHdr{}},
		{"tcp4", tcpPacket(src4, dst4, 5000),
			virtioHdr{flags: 1, gsoType: virtioGSOTCPv4, hdrLen: 5040, gsoSize: 1448, csumStart: 20, csumOffs: 16},
			GSO{GSOTCP, 1448}, virtioHdr{flags: 1, gsoType: virtioGSOTCPv4, hdrLen: 40, gsoSize: 1448, csumStart: 20, csumOffs: 16}},
		{"tcp6", tcpPacket(src6, dst6, 5000),
			virtioHdr{flags: 1, gsoType: virtioGSOTCPv6, hdrLen: 60, gsoSize: 1428, csumStart: 40, csumOffs: 16},
			GSO{GSOTCP, 1428}, virtioHdr{flags: 1, gsoType: virtioGSOTCPv6, hdrLen: 60, gsoSize: 1428, csumStart: 40, csumOffs: 16}},
		{"udp6", udpPacket(src6, dst6, 4000),
			virtioHdr{flags: 1, gsoType: virtioGSOUDPL4, hdrLen: 48, gsoSize: 1200, csumStart: 40, csumOffs: 6},
			GSO{GSOUDP, 1200}, virtioHdr{flags: 1, gsoType: virtioGSOUDPL4, hdrLen: 48, gsoSize: 1200, csumStart: 40, csumOffs: 6}},
		{"partial checksum", tcpPacket(src4, dst4, 100),
			virtioHdr{flags: 1, csumStart: 20, csumOffs: 16},
			GSO{Kind: GSOChecksum}, virtioHdr{flags: 1, csumStart: 20, csumOffs: 16}},
		{"one segment is no superpacket", tcpPacket(src4, dst4, 1000),
			virtioHdr{flags: 1, gsoType: virtioGSOTCPv4, gsoSize: 1448, csumStart: 20, csumOffs: 16},
			GSO{GSOTCP, 1448}, virtioHdr{flags: 1, csumStart: 20, csumOffs: 16}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			buf := withVirtio(tc.pkt, tc.in)
			if err := fromVirtio(buf, Offset, len(tc.pkt)); err != nil {
				t.Fatal(err)
			}
			if g := GetGSO(buf, Offset); g != tc.want {
				t.Fatalf("descriptor %+v, want %+v", g, tc.want)
			}
			if !bytes.Equal(buf[Offset:], tc.pkt) {
				t.Fatal("packet changed")
			}
			if err := toVirtio(buf, Offset, len(tc.pkt)); err != nil {
				t.Fatal(err)
			}
			var h virtioHdr
			h.decode(buf[Offset-virtioHdrLen:])
			if h != tc.out {
				t.Fatalf("virtio header %+v, want %+v", h, tc.out)
			}
		})
	}
}

// A pending checksum the descriptor cannot express (not TCP or UDP) is
// finished on the way in, to the value a full computation gives.
func TestGSOFinishesOtherChecksums(t *testing.T) {
	// ICMPv6 echo: its checksum covers a pseudo-header like TCP's.
	l4 := []byte{128, 0, 0, 0, 0, 1, 0, 1, 'p', 'i', 'n', 'g', '!'}
	pkt := ipPacket(src6, dst6, 58, l4, 2)
	want := binary.BigEndian.Uint16(pkt[42:])
	// Partial, as a kernel leaves it: the pseudo-header sum, folded.
	binary.BigEndian.PutUint16(pkt[42:], uint16(pseudoSum(src6, dst6, 58, len(l4))))
	buf := withVirtio(pkt, virtioHdr{flags: 1, csumStart: 40, csumOffs: 2})
	if err := fromVirtio(buf, Offset, len(pkt)); err != nil {
		t.Fatal(err)
	}
	if g := GetGSO(buf, Offset); g != (GSO{}) {
		t.Fatalf("descriptor %+v, want a finished packet", g)
	}
	if got := binary.BigEndian.Uint16(buf[Offset+42:]); got != want {
		t.Fatalf("checksum %#04x, want %#04x", got, want)
	}
	// A checksum field past the end is refused, not written.
	buf = withVirtio(pkt, virtioHdr{flags: 1, csumStart: 40, csumOffs: 200})
	if err := fromVirtio(buf, Offset, len(pkt)); !errors.Is(err, ErrBadGSO) {
		t.Fatalf("checksum beyond the packet: %v, want ErrBadGSO", err)
	}
}

// A descriptor from a peer that does not fit its packet never reaches the
// kernel, and neither does a kernel header that makes no sense.
func TestGSORefusals(t *testing.T) {
	tcp, udp := tcpPacket(src4, dst4, 3000), udpPacket(src4, dst4, 3000)
	frag := tcpPacket(src4, dst4, 3000)
	frag[6] = 0x20 // more fragments
	ext6 := tcpPacket(src6, dst6, 3000)
	ext6[6] = 0 // hop-by-hop options first
	icmp := ipPacket(src4, dst4, 1, make([]byte, 100), -1)
	for _, tc := range []struct {
		name string
		pkt  []byte
		g    GSO
	}{
		{"tcp descriptor on udp", udp, GSO{GSOTCP, 1000}},
		{"udp descriptor on tcp", tcp, GSO{GSOUDP, 1000}},
		{"segment size 0", tcp, GSO{GSOTCP, 0}},
		{"tcp segments below 48 bytes", tcp, GSO{GSOTCP, 47}},
		{"udp segments of 1 byte", udp, GSO{GSOUDP, 1}},
		{"unknown kind", tcp, GSO{Kind: 9}},
		{"checksum on icmp", icmp, GSO{Kind: GSOChecksum}},
		{"ipv4 fragment", frag, GSO{GSOTCP, 1000}},
		{"ipv6 extension header", ext6, GSO{GSOTCP, 1000}},
		{"truncated tcp header", tcp[:30], GSO{Kind: GSOChecksum}},
		{"not ip", append([]byte{0x20}, tcp[1:]...), GSO{Kind: GSOChecksum}},
	} {
		if err := CheckGSO(tc.pkt, tc.g); !errors.Is(err, ErrBadGSO) {
			t.Errorf("%s: %v, want ErrBadGSO", tc.name, err)
		}
	}
	if err := CheckGSO(icmp, GSO{}); err != nil {
		t.Errorf("finished icmp: %v", err)
	}
	if err := CheckGSO(tcp, GSO{GSOTCP, 48}); err != nil {
		t.Errorf("48-byte segments: %v", err)
	}

	for _, tc := range []struct {
		name string
		pkt  []byte
		h    virtioHdr
	}{
		{"ecn", tcp, virtioHdr{flags: 1, gsoType: virtioGSOTCPv4 | virtioGSOECN, gsoSize: 1000, csumStart: 20, csumOffs: 16}},
		{"tcp6 type on ipv4", tcp, virtioHdr{flags: 1, gsoType: virtioGSOTCPv6, gsoSize: 1000, csumStart: 20, csumOffs: 16}},
		{"udp type on tcp", tcp, virtioHdr{flags: 1, gsoType: virtioGSOUDPL4, gsoSize: 1000, csumStart: 20, csumOffs: 6}},
		{"size 0", tcp, virtioHdr{flags: 1, gsoType: virtioGSOTCPv4, csumStart: 20, csumOffs: 16}},
		{"wrong checksum start", tcp, virtioHdr{flags: 1, gsoType: virtioGSOTCPv4, gsoSize: 1000, csumStart: 24, csumOffs: 16}},
	} {
		buf := withVirtio(tc.pkt, tc.h)
		if err := fromVirtio(buf, Offset, len(tc.pkt)); !errors.Is(err, ErrBadGSO) {
			t.Errorf("kernel header %s: %v, want ErrBadGSO", tc.name, err)
		}
	}
}

func TestChecksum(t *testing.T) {
	// RFC 1071's example: 0001 f203 f4f5 f6f7 sums to ddf2.
	if got := Checksum([]byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}, 0); got != 0xddf2 {
		t.Fatalf("Checksum = %#04x, want 0xddf2", got)
	}
	// Any length, any alignment: equal to the 16-bit-at-a-time sum.
	b := make([]byte, 1501)
	for i := range b {
		b[i] = byte(i*7 + 3)
	}
	for _, n := range []int{0, 1, 2, 7, 8, 9, 63, 1500, 1501} {
		var s uint64
		for i := 0; i+1 < n; i += 2 {
			s += uint64(b[i])<<8 | uint64(b[i+1])
		}
		if n%2 == 1 {
			s += uint64(b[n-1]) << 8
		}
		for s > 0xffff {
			s = s>>16 + s&0xffff
		}
		if got := Checksum(b[:n], 0); got != uint16(s) {
			t.Errorf("n=%d: %#04x, want %#04x", n, got, s)
		}
	}
}
