package tuntest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// IP protocol numbers the builders and Parse know.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// TCP flags for TCPSegment.Flags.
const (
	FIN = 0x01
	SYN = 0x02
	RST = 0x04
	PSH = 0x08
	ACK = 0x10
)

// ICMP echo types, per family.
const (
	ICMPv4EchoRequest = 8
	ICMPv4EchoReply   = 0
	ICMPv6EchoRequest = 128
	ICMPv6EchoReply   = 129
)

const (
	ipv4HeaderLen = 20
	ipv6HeaderLen = 40
	udpHeaderLen  = 8
	tcpHeaderLen  = 20
	icmpHeaderLen = 8
	defaultTTL    = 64
)

// The builders below return a complete IP packet with correct IP, TCP, UDP
// and ICMP checksums and TTL/hop limit 64. Like netip.MustParseAddr they
// panic on a programming error: src and dst of different families.

// UDP builds a UDP datagram from src to dst.
func UDP(src, dst netip.AddrPort, payload []byte) []byte {
	l4 := make([]byte, udpHeaderLen+len(payload))
	binary.BigEndian.PutUint16(l4[0:], src.Port())
	binary.BigEndian.PutUint16(l4[2:], dst.Port())
	binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
	copy(l4[udpHeaderLen:], payload)
	return ipPacket(src.Addr(), dst.Addr(), ProtoUDP, l4, 6)
}

// TCPSegment is the TCP part of a packet for TCP.
type TCPSegment struct {
	Seq, Ack uint32
	Flags    uint8
	Window   uint16 // 0 means 65535
	Payload  []byte
}

// TCP builds a TCP segment from src to dst (no options).
func TCP(src, dst netip.AddrPort, seg TCPSegment) []byte {
	l4 := make([]byte, tcpHeaderLen+len(seg.Payload))
	binary.BigEndian.PutUint16(l4[0:], src.Port())
	binary.BigEndian.PutUint16(l4[2:], dst.Port())
	binary.BigEndian.PutUint32(l4[4:], seg.Seq)
	binary.BigEndian.PutUint32(l4[8:], seg.Ack)
	l4[12] = tcpHeaderLen / 4 << 4
	l4[13] = seg.Flags
	w := seg.Window
	if w == 0 {
		w = 65535
	}
	binary.BigEndian.PutUint16(l4[14:], w)
	copy(l4[tcpHeaderLen:], seg.Payload)
	return ipPacket(src.Addr(), dst.Addr(), ProtoTCP, l4, 16)
}

// ICMPEcho builds an ICMP (IPv4) or ICMPv6 echo request.
func ICMPEcho(src, dst netip.Addr, id, seq uint16, payload []byte) []byte {
	typ := uint8(ICMPv4EchoRequest)
	if dst.Is6() {
		typ = ICMPv6EchoRequest
	}
	return icmpEcho(src, dst, typ, id, seq, payload)
}

// ICMPEchoReply builds an ICMP (IPv4) or ICMPv6 echo reply.
func ICMPEchoReply(src, dst netip.Addr, id, seq uint16, payload []byte) []byte {
	typ := uint8(ICMPv4EchoReply)
	if dst.Is6() {
		typ = ICMPv6EchoReply
	}
	return icmpEcho(src, dst, typ, id, seq, payload)
}

func icmpEcho(src, dst netip.Addr, typ uint8, id, seq uint16, payload []byte) []byte {
	l4 := make([]byte, icmpHeaderLen+len(payload))
	l4[0] = typ
	binary.BigEndian.PutUint16(l4[4:], id)
	binary.BigEndian.PutUint16(l4[6:], seq)
	copy(l4[icmpHeaderLen:], payload)
	proto := uint8(ProtoICMP)
	if dst.Is6() {
		proto = ProtoICMPv6
	}
	return ipPacket(src, dst, proto, l4, 2)
}

// ipPacket prepends the IP header to l4 and fills in the checksum at
// l4[csumAt:]: ICMPv4's covers only itself, the others add the pseudo-header.
func ipPacket(src, dst netip.Addr, proto uint8, l4 []byte, csumAt int) []byte {
	src, dst = src.Unmap(), dst.Unmap()
	if src.Is4() != dst.Is4() || !src.IsValid() || !dst.IsValid() {
		panic(fmt.Sprintf("tuntest: source %s and destination %s are not of one IP family", src, dst))
	}
	var pkt []byte
	if src.Is4() {
		pkt = make([]byte, ipv4HeaderLen+len(l4))
		pkt[0] = 0x45
		binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
		binary.BigEndian.PutUint16(pkt[6:], 0x4000) // don't fragment
		pkt[8] = defaultTTL
		pkt[9] = proto
		s, d := src.As4(), dst.As4()
		copy(pkt[12:], s[:])
		copy(pkt[16:], d[:])
		binary.BigEndian.PutUint16(pkt[10:], ^fold(sum(pkt[:ipv4HeaderLen], 0)))
	} else {
		pkt = make([]byte, ipv6HeaderLen+len(l4))
		pkt[0] = 0x60
		binary.BigEndian.PutUint16(pkt[4:], uint16(len(l4)))
		pkt[6] = proto
		pkt[7] = defaultTTL
		s, d := src.As16(), dst.As16()
		copy(pkt[8:], s[:])
		copy(pkt[24:], d[:])
	}
	hdr := len(pkt) - len(l4)
	copy(pkt[hdr:], l4)
	seg := pkt[hdr:]
	var initial uint32
	if proto != ProtoICMP {
		initial = pseudoHeaderSum(src, dst, proto, len(seg))
	}
	c := ^fold(sum(seg, initial))
	if c == 0 && proto == ProtoUDP {
		c = 0xffff // 0 means "no checksum" in UDP
	}
	binary.BigEndian.PutUint16(seg[csumAt:], c)
	return pkt
}

// Packet is a parsed packet, for assertions.
type Packet struct {
	Version  int            // 4 or 6
	Proto    uint8          // ProtoTCP, ProtoUDP, ProtoICMP, ProtoICMPv6
	TTL      uint8          // TTL or hop limit
	Src, Dst netip.AddrPort // ports are 0 for ICMP

	TCP TCPSegment // for TCP, Payload aliases the packet

	ICMPType, ICMPCode uint8  // for ICMP
	ICMPID, ICMPSeq    uint16 // for echo request and reply

	Payload []byte // the transport payload; aliases the packet
}

// Parse decodes an IPv4 or IPv6 packet carrying TCP, UDP, ICMP or ICMPv6,
// and verifies its lengths and every checksum. IPv4 fragments, IPv4 options
// and IPv6 extension headers are reported as errors: twoway's tests do not
// produce them.
func Parse(pkt []byte) (Packet, error) {
	var p Packet
	if len(pkt) < 1 {
		return p, errors.New("empty packet")
	}
	var l4 []byte
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < ipv4HeaderLen {
			return p, errors.New("ipv4: short header")
		}
		if pkt[0]&0x0f != 5 {
			return p, errors.New("ipv4: options not supported")
		}
		total := int(binary.BigEndian.Uint16(pkt[2:]))
		if total != len(pkt) {
			return p, fmt.Errorf("ipv4: total length %d, packet %d bytes", total, len(pkt))
		}
		if binary.BigEndian.Uint16(pkt[6:])&0x3fff != 0 {
			return p, errors.New("ipv4: fragment")
		}
		if fold(sum(pkt[:ipv4HeaderLen], 0)) != 0xffff {
			return p, errors.New("ipv4: bad header checksum")
		}
		p.Version, p.TTL, p.Proto = 4, pkt[8], pkt[9]
		src, dst := netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20]))
		p.Src, p.Dst = netip.AddrPortFrom(src, 0), netip.AddrPortFrom(dst, 0)
		l4 = pkt[ipv4HeaderLen:]
	case 6:
		if len(pkt) < ipv6HeaderLen {
			return p, errors.New("ipv6: short header")
		}
		plen := int(binary.BigEndian.Uint16(pkt[4:]))
		if plen != len(pkt)-ipv6HeaderLen {
			return p, fmt.Errorf("ipv6: payload length %d, packet has %d", plen, len(pkt)-ipv6HeaderLen)
		}
		p.Version, p.Proto, p.TTL = 6, pkt[6], pkt[7]
		src, dst := netip.AddrFrom16([16]byte(pkt[8:24])), netip.AddrFrom16([16]byte(pkt[24:40]))
		p.Src, p.Dst = netip.AddrPortFrom(src, 0), netip.AddrPortFrom(dst, 0)
		l4 = pkt[ipv6HeaderLen:]
	default:
		return p, fmt.Errorf("ip version %d", pkt[0]>>4)
	}

	src, dst := p.Src.Addr(), p.Dst.Addr()
	switch {
	case p.Proto == ProtoUDP:
		if len(l4) < udpHeaderLen || int(binary.BigEndian.Uint16(l4[4:])) != len(l4) {
			return p, errors.New("udp: bad length")
		}
		if binary.BigEndian.Uint16(l4[6:]) == 0 {
			if p.Version == 6 {
				return p, errors.New("udp: zero checksum over IPv6")
			}
		} else if fold(sum(l4, pseudoHeaderSum(src, dst, ProtoUDP, len(l4)))) != 0xffff {
			return p, errors.New("udp: bad checksum")
		}
		p.Src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4[0:]))
		p.Dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:]))
		p.Payload = l4[udpHeaderLen:]
	case p.Proto == ProtoTCP:
		if len(l4) < tcpHeaderLen {
			return p, errors.New("tcp: short header")
		}
		off := int(l4[12]>>4) * 4
		if off < tcpHeaderLen || off > len(l4) {
			return p, errors.New("tcp: bad data offset")
		}
		if fold(sum(l4, pseudoHeaderSum(src, dst, ProtoTCP, len(l4)))) != 0xffff {
			return p, errors.New("tcp: bad checksum")
		}
		p.Src = netip.AddrPortFrom(src, binary.BigEndian.Uint16(l4[0:]))
		p.Dst = netip.AddrPortFrom(dst, binary.BigEndian.Uint16(l4[2:]))
		p.TCP = TCPSegment{
			Seq:     binary.BigEndian.Uint32(l4[4:]),
			Ack:     binary.BigEndian.Uint32(l4[8:]),
			Flags:   l4[13],
			Window:  binary.BigEndian.Uint16(l4[14:]),
			Payload: l4[off:],
		}
		p.Payload = l4[off:]
	case p.Proto == ProtoICMP && p.Version == 4, p.Proto == ProtoICMPv6 && p.Version == 6:
		if len(l4) < icmpHeaderLen {
			return p, errors.New("icmp: short header")
		}
		var initial uint32
		if p.Version == 6 {
			initial = pseudoHeaderSum(src, dst, ProtoICMPv6, len(l4))
		}
		if fold(sum(l4, initial)) != 0xffff {
			return p, errors.New("icmp: bad checksum")
		}
		p.ICMPType, p.ICMPCode = l4[0], l4[1]
		p.ICMPID = binary.BigEndian.Uint16(l4[4:])
		p.ICMPSeq = binary.BigEndian.Uint16(l4[6:])
		p.Payload = l4[icmpHeaderLen:]
	default:
		return p, fmt.Errorf("ipv%d: unsupported protocol %d", p.Version, p.Proto)
	}
	return p, nil
}

// sum adds b as big-endian 16-bit words to initial (RFC 1071), unfolded.
func sum(b []byte, initial uint32) uint32 {
	s := uint64(initial)
	for len(b) >= 2 {
		s += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint64(b[0]) << 8
	}
	for s > 0xffffffff {
		s = s>>32 + s&0xffffffff
	}
	return uint32(s)
}

// fold folds a 32-bit sum to 16 bits with end-around carry.
func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// pseudoHeaderSum is the sum of the TCP/UDP/ICMPv6 pseudo-header.
func pseudoHeaderSum(src, dst netip.Addr, proto uint8, length int) uint32 {
	s := sum(src.AsSlice(), 0)
	s = sum(dst.AsSlice(), s)
	return uint32(fold(s)) + uint32(proto) + uint32(length>>16) + uint32(length&0xffff)
}
