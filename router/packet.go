package router

import (
	"encoding/binary"
	"net/netip"
)

// Protocol classes: what the policy sees as Target.Proto.
const (
	classIP   uint8 = iota // any protocol policy has no name for
	classTCP               // "tcp"
	classUDP               // "udp"
	classICMP              // "icmp": ICMP over IPv4, ICMPv6 over IPv6
	numClasses
)

// className is the policy.Target.Proto of each class. Protocols policy has
// no name for (GRE, ESP, SCTP, ...) are "ip": only rules without a protocols
// list match them.
var className = [numClasses]string{"ip", "tcp", "udp", "icmp"}

// IP protocol numbers the parser knows.
const (
	protoHopByHop = 0
	protoICMP     = 1
	protoTCP      = 6
	protoUDP      = 17
	protoRouting  = 43
	protoFragment = 44
	protoAH       = 51
	protoICMPv6   = 58
	protoDestOpts = 60
)

// maxExtHeaders bounds the IPv6 extension header walk. Real packets carry
// one or two; the bound keeps a hostile chain from costing more than a few
// dozen steps.
const maxExtHeaders = 8

// flow is what the router needs from a packet: addresses, the upper-layer
// protocol and its ports. Ports are 0 for ICMP, for protocols without ports
// and for non-first fragments.
type flow struct {
	src, dst     netip.Addr
	sport, dport uint16
	proto        uint8 // upper-layer protocol number
	class        uint8
	length       int // packet length per its IP header (trailing bytes ignored)
}

var broadcast4 = netip.AddrFrom4([4]byte{255, 255, 255, 255})

// parse fills f from the IPv4 or IPv6 packet pkt without allocating. It
// reports false for anything a well-behaved client does not send: bad
// version or header lengths, lengths beyond the buffer, truncated transport
// headers, unspecified, loopback, IPv4-mapped or multicast sources, IPv4
// source-route options and IPv6 routing headers with segments left (both
// would make the packet's final destination differ from the one checked).
func parse(pkt []byte, f *flow) bool {
	if len(pkt) == 0 {
		return false
	}
	var ok bool
	switch pkt[0] >> 4 {
	case 4:
		ok = parse4(pkt, f)
	case 6:
		ok = parse6(pkt, f)
	}
	if !ok {
		return false
	}
	s, d := f.src, f.dst
	return !s.IsUnspecified() && !s.IsLoopback() && !s.IsMulticast() && s != broadcast4 &&
		!d.IsUnspecified() && !d.IsLoopback()
}

func parse4(pkt []byte, f *flow) bool {
	if len(pkt) < 20 {
		return false
	}
	ihl := int(pkt[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(pkt[2:]))
	if ihl < 20 || total < ihl || total > len(pkt) {
		return false
	}
	if ihl > 20 && !options4(pkt[20:ihl]) {
		return false
	}
	frag := binary.BigEndian.Uint16(pkt[6:])
	if frag&0x8000 != 0 { // reserved flag
		return false
	}
	f.length = total
	f.src = netip.AddrFrom4([4]byte(pkt[12:16]))
	f.dst = netip.AddrFrom4([4]byte(pkt[16:20]))
	f.proto = pkt[9]
	return transport(pkt[ihl:total], f, false, frag&0x1fff != 0)
}

// options4 walks IPv4 options, refusing malformed ones and loose or strict
// source routes.
func options4(o []byte) bool {
	for i := 0; i < len(o); {
		switch t := o[i]; t {
		case 0: // end of options
			return true
		case 1: // no-op
			i++
		default:
			if i+1 >= len(o) {
				return false
			}
			l := int(o[i+1])
			if l < 2 || i+l > len(o) || t == 131 || t == 137 {
				return false
			}
			i += l
		}
	}
	return true
}

func parse6(pkt []byte, f *flow) bool {
	if len(pkt) < 40 {
		return false
	}
	// A payload length of 0 means a jumbogram, which no TUN carries.
	end := 40 + int(binary.BigEndian.Uint16(pkt[4:]))
	if end == 40 || end > len(pkt) {
		return false
	}
	f.length = end
	f.src = netip.AddrFrom16([16]byte(pkt[8:24]))
	f.dst = netip.AddrFrom16([16]byte(pkt[24:40]))
	if f.src.Is4In6() || f.dst.Is4In6() {
		// Not valid on the wire (RFC 4291 2.5.5.2), and policy unmaps
		// them, which would let an IPv6 packet match an IPv4 rule.
		return false
	}
	next, off := pkt[6], 40
	for i := 0; ; i++ {
		if i > maxExtHeaders {
			return false
		}
		switch next {
		case protoHopByHop, protoRouting, protoDestOpts:
			if next == protoHopByHop && i != 0 { // RFC 8200 4.1: first only
				return false
			}
			if off+8 > end {
				return false
			}
			hl := (int(pkt[off+1]) + 1) * 8
			if off+hl > end {
				return false
			}
			if next == protoRouting && pkt[off+3] != 0 { // segments left
				return false
			}
			next, off = pkt[off], off+hl
		case protoFragment:
			if off+8 > end {
				return false
			}
			fragOff := binary.BigEndian.Uint16(pkt[off+2:]) &^ 7
			next, off = pkt[off], off+8
			if fragOff != 0 {
				f.proto = next
				return transport(nil, f, true, true)
			}
			// The first fragment (and an atomic fragment) carries
			// the upper-layer header (RFC 7112): keep walking.
		case protoAH:
			if off+8 > end {
				return false
			}
			hl := (int(pkt[off+1]) + 2) * 4
			if off+hl > end {
				return false
			}
			next, off = pkt[off], off+hl
		default:
			f.proto = next
			return transport(pkt[off:end], f, true, false)
		}
	}
}

// transport classifies f.proto and reads the ports from b, the transport
// header onwards. A non-first fragment has no transport header: its ports
// are 0.
func transport(b []byte, f *flow, v6, nonFirst bool) bool {
	f.sport, f.dport = 0, 0
	switch {
	case f.proto == protoTCP:
		f.class = classTCP
		if nonFirst {
			return true
		}
		if len(b) < 20 {
			return false
		}
		if off := int(b[12]>>4) * 4; off < 20 || off > len(b) {
			return false
		}
	case f.proto == protoUDP:
		f.class = classUDP
		if nonFirst {
			return true
		}
		if len(b) < 8 {
			return false
		}
	case f.proto == protoICMP && !v6, f.proto == protoICMPv6 && v6:
		f.class = classICMP
		return nonFirst || len(b) >= 4 // type, code, checksum
	default:
		f.class = classIP
		return true
	}
	f.sport = binary.BigEndian.Uint16(b)
	f.dport = binary.BigEndian.Uint16(b[2:])
	return true
}

// linkScoped reports whether dst never leaves the link it was sent on, so
// a router must not forward it (RFC 4291 2.5.6, RFC 3927 2.6.2, RFC 919):
// client operating systems send such packets (MLD reports, router
// solicitations, mDNS, broadcasts) as soon as the tunnel interface is up.
func linkScoped(dst netip.Addr) bool {
	return dst.IsLinkLocalUnicast() || dst.IsLinkLocalMulticast() || dst.IsInterfaceLocalMulticast() || dst == broadcast4
}

// destination returns the destination address of a packet from the LAN and
// the packet's length per its header.
func destination(pkt []byte) (netip.Addr, int, bool) {
	if len(pkt) == 0 {
		return netip.Addr{}, 0, false
	}
	switch pkt[0] >> 4 {
	case 4:
		if len(pkt) < 20 {
			return netip.Addr{}, 0, false
		}
		ihl := int(pkt[0]&0x0f) * 4
		total := int(binary.BigEndian.Uint16(pkt[2:]))
		if ihl < 20 || total < ihl || total > len(pkt) {
			return netip.Addr{}, 0, false
		}
		return netip.AddrFrom4([4]byte(pkt[16:20])), total, true
	case 6:
		if len(pkt) < 40 {
			return netip.Addr{}, 0, false
		}
		end := 40 + int(binary.BigEndian.Uint16(pkt[4:]))
		if end > len(pkt) {
			return netip.Addr{}, 0, false
		}
		return netip.AddrFrom16([16]byte(pkt[24:40])), end, true
	}
	return netip.Addr{}, 0, false
}
