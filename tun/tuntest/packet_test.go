package tuntest

import (
	"bytes"
	"net/netip"
	"testing"
)

// RFC 1071 section 3's worked example: the words 0001 f203 f4f5 f6f7 sum to
// ddf2 (one's complement, carries folded).
func TestChecksumRFC1071(t *testing.T) {
	b := []byte{0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7}
	if got := fold(sum(b, 0)); got != 0xddf2 {
		t.Fatalf("sum = %#x, want 0xddf2", got)
	}
	// Odd length pads with a zero byte.
	if got := fold(sum([]byte{0x01}, 0)); got != 0x0100 {
		t.Fatalf("odd sum = %#x, want 0x0100", got)
	}
}

func TestBuildersRoundTrip(t *testing.T) {
	v4a, v4b := netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.19.7.9")
	v6a, v6b := netip.MustParseAddr("2001:db8::2"), netip.MustParseAddr("2001:db8:1::9")
	payload := []byte("odd-length payload!")
	for _, tc := range []struct {
		name  string
		pkt   []byte
		check func(t *testing.T, p Packet)
	}{
		{"udp4", UDP(netip.AddrPortFrom(v4a, 4000), netip.AddrPortFrom(v4b, 53), payload), func(t *testing.T, p Packet) {
			if p.Version != 4 || p.Proto != ProtoUDP || p.Src.Port() != 4000 || p.Dst.Port() != 53 || p.TTL != 64 {
				t.Errorf("%+v", p)
			}
		}},
		{"udp6", UDP(netip.AddrPortFrom(v6a, 4000), netip.AddrPortFrom(v6b, 53), payload), func(t *testing.T, p Packet) {
			if p.Version != 6 || p.Proto != ProtoUDP || p.Dst != netip.AddrPortFrom(v6b, 53) {
				t.Errorf("%+v", p)
			}
		}},
		{"tcp4", TCP(netip.AddrPortFrom(v4a, 40000), netip.AddrPortFrom(v4b, 443), TCPSegment{Seq: 7, Ack: 9, Flags: PSH | ACK, Payload: payload}), func(t *testing.T, p Packet) {
			if p.Proto != ProtoTCP || p.TCP.Seq != 7 || p.TCP.Ack != 9 || p.TCP.Flags != PSH|ACK || p.TCP.Window != 65535 {
				t.Errorf("%+v", p)
			}
		}},
		{"tcp6", TCP(netip.AddrPortFrom(v6a, 40000), netip.AddrPortFrom(v6b, 443), TCPSegment{Flags: SYN, Window: 1000}), func(t *testing.T, p Packet) {
			if p.Proto != ProtoTCP || p.TCP.Flags != SYN || p.TCP.Window != 1000 || len(p.Payload) != 0 {
				t.Errorf("%+v", p)
			}
		}},
		{"icmp4", ICMPEcho(v4a, v4b, 0x1234, 3, payload), func(t *testing.T, p Packet) {
			if p.Proto != ProtoICMP || p.ICMPType != ICMPv4EchoRequest || p.ICMPID != 0x1234 || p.ICMPSeq != 3 {
				t.Errorf("%+v", p)
			}
		}},
		{"icmp6", ICMPEchoReply(v6a, v6b, 0x1234, 3, payload), func(t *testing.T, p Packet) {
			if p.Proto != ProtoICMPv6 || p.ICMPType != ICMPv6EchoReply || p.ICMPSeq != 3 {
				t.Errorf("%+v", p)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Parse(tc.pkt)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if tc.name != "tcp6" && !bytes.Equal(p.Payload, payload) {
				t.Errorf("payload %q", p.Payload)
			}
			tc.check(t, p)
			// Every single-bit flip must be caught by a length or
			// checksum check, except in the IPv6 header fields no
			// checksum covers: traffic class, flow label, hop limit.
			for i := range tc.pkt {
				if p.Version == 6 && (i == 1 || i == 2 || i == 3 || i == 7) {
					continue
				}
				c := bytes.Clone(tc.pkt)
				c[i] ^= 0x10
				if _, err := Parse(c); err == nil {
					t.Errorf("flipping a bit in byte %d went unnoticed", i)
				}
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	good := UDP(netip.MustParseAddrPort("198.18.0.2:1"), netip.MustParseAddrPort("198.18.0.3:2"), []byte("x"))
	for name, pkt := range map[string][]byte{
		"empty":     nil,
		"version 5": {0x50},
		"truncated": good[:len(good)-1],
		"trailing":  append(bytes.Clone(good), 0),
	} {
		if _, err := Parse(pkt); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}
