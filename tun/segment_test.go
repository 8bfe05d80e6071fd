package tun_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"

	"github.com/twoway/twoway/tun"
	"github.com/twoway/twoway/tun/tuntest"
)

// asSuperpacket makes pkt look like what a kernel hands over for GSO: the
// checksum field holds junk (the kernel leaves a partial sum there), which
// Segment must not rely on.
func asSuperpacket(pkt []byte, csumAt int) []byte {
	binary.BigEndian.PutUint16(pkt[csumAt:], 0x1234)
	return pkt
}

// Cutting a superpacket gives packets that a full check accepts (lengths,
// IPv4 header checksum, TCP/UDP checksums, via tuntest.Parse), whose payloads
// put together are the original, with sequence numbers, IPv4 ids and flags
// as the kernel would set them.
func TestSegment(t *testing.T) {
	src4, dst4 := netip.MustParseAddrPort("198.18.100.7:40000"), netip.MustParseAddrPort("198.18.0.10:80")
	src6, dst6 := netip.MustParseAddrPort("[2001:db8:100::7]:40000"), netip.MustParseAddrPort("[2001:db8:1::10]:80")
	payload := make([]byte, 10001)
	for i := range payload {
		payload[i] = byte(i * 31)
	}
	for _, tc := range []struct {
		name  string
		pkt   []byte
		g     tun.GSO
		segs  int
		csum  int // offset of the transport checksum
		isTCP bool
	}{
		{"tcp4", tuntest.TCP(src4, dst4, tuntest.TCPSegment{Seq: 0xfffff000, Ack: 9, Flags: 0x19, Payload: payload}), tun.GSO{Kind: tun.GSOTCP, Size: 1448}, 7, 20 + 16, true},
		{"tcp6", tuntest.TCP(src6, dst6, tuntest.TCPSegment{Seq: 1, Ack: 9, Flags: 0x18, Payload: payload}), tun.GSO{Kind: tun.GSOTCP, Size: 1000}, 11, 40 + 16, true},
		{"udp4", tuntest.UDP(src4, dst4, payload), tun.GSO{Kind: tun.GSOUDP, Size: 1200}, 9, 20 + 6, false},
		{"udp6", tuntest.UDP(src6, dst6, payload), tun.GSO{Kind: tun.GSOUDP, Size: 5000}, 3, 40 + 6, false},
		{"checksum only", tuntest.TCP(src4, dst4, tuntest.TCPSegment{Seq: 5, Flags: 0x18, Payload: payload[:100]}), tun.GSO{Kind: tun.GSOChecksum}, 1, 20 + 16, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig, _ := tuntest.Parse(tc.pkt)
			origTCP := orig.TCP
			pkt := asSuperpacket(bytes.Clone(tc.pkt), tc.csum)
			var got []tuntest.Packet
			var joined []byte
			var ids []uint16
			err := tun.Segment(pkt, tc.g, make([]byte, tun.MaxPacketSize), func(seg []byte) {
				p, err := tuntest.Parse(bytes.Clone(seg))
				if err != nil {
					t.Fatalf("segment %d: %v", len(got), err)
				}
				got = append(got, p)
				joined = append(joined, p.Payload...)
				if seg[0]>>4 == 4 {
					ids = append(ids, binary.BigEndian.Uint16(seg[4:]))
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tc.segs {
				t.Fatalf("%d segments, want %d", len(got), tc.segs)
			}
			if !bytes.Equal(joined, orig.Payload) {
				t.Fatal("payloads put together differ from the original")
			}
			off := uint32(0)
			for i, p := range got {
				if p.Src != orig.Src || p.Dst != orig.Dst || p.Proto != orig.Proto {
					t.Fatalf("segment %d: %v -> %v proto %d", i, p.Src, p.Dst, p.Proto)
				}
				if i < len(got)-1 && len(p.Payload) != int(tc.g.Size) {
					t.Fatalf("segment %d: %d payload bytes, want %d", i, len(p.Payload), tc.g.Size)
				}
				if len(ids) > 0 && ids[i] != ids[0]+uint16(i) {
					t.Fatalf("IPv4 ids %v do not count up", ids)
				}
				if tc.isTCP {
					if p.TCP.Seq != origTCP.Seq+off || p.TCP.Ack != origTCP.Ack {
						t.Fatalf("segment %d: seq %d ack %d, want %d %d", i, p.TCP.Seq, p.TCP.Ack, origTCP.Seq+off, origTCP.Ack)
					}
					wantFlags := origTCP.Flags
					if i < len(got)-1 {
						wantFlags &^= 0x01 | 0x08
					}
					if p.TCP.Flags != wantFlags {
						t.Fatalf("segment %d: flags %#x, want %#x", i, p.TCP.Flags, wantFlags)
					}
				}
				off += uint32(len(p.Payload))
			}
		})
	}

	// A finished packet passes untouched; a descriptor that does not fit
	// is refused before anything is emitted.
	ping := tuntest.ICMPEcho(src4.Addr(), dst4.Addr(), 1, 1, []byte("x"))
	n := 0
	if err := tun.Segment(ping, tun.GSO{}, nil, func(b []byte) { n++ }); err != nil || n != 1 {
		t.Fatalf("finished packet: %v, %d emitted", err, n)
	}
	udp := tuntest.UDP(src4, dst4, payload)
	if err := tun.Segment(udp, tun.GSO{Kind: tun.GSOTCP, Size: 1000}, make([]byte, tun.MaxPacketSize), func(b []byte) { n++ }); !errors.Is(err, tun.ErrBadGSO) || n != 1 {
		t.Fatalf("tcp descriptor on udp: %v, %d emitted", err, n)
	}
	if err := tun.Segment(udp[:500], tun.GSO{Kind: tun.GSOUDP, Size: 100}, make([]byte, tun.MaxPacketSize), func(b []byte) { n++ }); !errors.Is(err, tun.ErrBadGSO) || n != 1 {
		t.Fatalf("truncated superpacket: %v, %d emitted", err, n)
	}
}
