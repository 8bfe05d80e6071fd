package tun

import (
	"encoding/binary"
	"fmt"
)

// Segment turns the packet pkt described by g into finished packets, for a
// receiver that cannot take superpackets: a superpacket is cut into
// segments of g.Size payload bytes, each with its own headers and
// checksums, and a packet with a pending checksum gets it. It calls emit
// with each packet in order; the slice is valid only until emit returns
// (it lives in scratch, or is pkt itself). scratch must hold the headers
// plus g.Size bytes; MaxPacketSize always does. A finished packet is emitted
// as it is. pkt may be modified.
//
// This is the kernel's segmentation redone for one hop, as wireguard-go's
// Read does it: IPv4 identification counts up per segment, TCP sequence
// numbers advance by the payload, and FIN and PSH stay on the last segment
// only.
func Segment(pkt []byte, g GSO, scratch []byte, emit func([]byte)) error {
	if g.Kind == GSONone {
		emit(pkt)
		return nil
	}
	_, t, err := virtioFor(pkt, g) // the checks WriteGSO makes
	if err != nil {
		return err
	}
	pkt, err = ipLength(pkt, t)
	if err != nil {
		return err
	}
	hl := t.start + t.hdrLen
	if g.Kind == GSOChecksum || len(pkt)-hl <= int(g.Size) {
		fillChecksum(pkt, t)
		emit(pkt)
		return nil
	}
	if len(scratch) < hl+int(g.Size) {
		return fmt.Errorf("%w: scratch of %d bytes for %d-byte segments", ErrBadGSO, len(scratch), hl+int(g.Size))
	}
	payload := pkt[hl:]
	var id uint16
	var seq uint32
	if !t.v6 {
		id = binary.BigEndian.Uint16(pkt[4:])
	}
	if t.proto == protoTCP {
		seq = binary.BigEndian.Uint32(pkt[t.start+4:])
	}
	for i, off := 0, 0; off < len(payload); i++ {
		chunk := min(int(g.Size), len(payload)-off)
		seg := scratch[:hl+chunk]
		copy(seg, pkt[:hl])
		copy(seg[hl:], payload[off:off+chunk])
		last := off+chunk == len(payload)
		if t.v6 {
			binary.BigEndian.PutUint16(seg[4:], uint16(len(seg)-40))
		} else {
			binary.BigEndian.PutUint16(seg[2:], uint16(len(seg)))
			binary.BigEndian.PutUint16(seg[4:], id+uint16(i))
			seg[10], seg[11] = 0, 0
			binary.BigEndian.PutUint16(seg[10:], ^Checksum(seg[:t.start], 0))
		}
		th := seg[t.start:]
		if t.proto == protoTCP {
			binary.BigEndian.PutUint32(th[4:], seq+uint32(off))
			if !last {
				th[13] &^= 0x01 | 0x08 // FIN, PSH
			}
		} else {
			binary.BigEndian.PutUint16(th[4:], uint16(len(th)))
		}
		fillChecksum(seg, t)
		emit(seg)
		off += chunk
	}
	return nil
}

// ipLength trims pkt to the length its IP header gives (a kernel may leave
// padding behind it) and refuses a packet shorter than that.
func ipLength(pkt []byte, t l4) ([]byte, error) {
	var n int
	if t.v6 {
		n = 40 + int(binary.BigEndian.Uint16(pkt[4:]))
	} else {
		n = int(binary.BigEndian.Uint16(pkt[2:]))
	}
	if n > len(pkt) || n < t.start+t.hdrLen {
		return nil, fmt.Errorf("%w: IP length %d, packet %d bytes", ErrBadGSO, n, len(pkt))
	}
	return pkt[:n], nil
}

// fillChecksum computes the TCP or UDP checksum of pkt from scratch:
// pseudo-header, transport header and payload.
func fillChecksum(pkt []byte, t l4) {
	th := pkt[t.start:]
	at := t.csumField()
	th[at], th[at+1] = 0, 0
	var addrs []byte
	if t.v6 {
		addrs = pkt[8:40]
	} else {
		addrs = pkt[12:20]
	}
	s := uint64(Checksum(addrs, 0)) + uint64(t.proto) + uint64(len(th))
	c := ^Checksum(th, s)
	if c == 0 && t.proto == protoUDP {
		c = 0xffff // 0 means "no checksum" in UDP
	}
	binary.BigEndian.PutUint16(th[at:], c)
}
