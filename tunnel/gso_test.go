package tunnel

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"

	"github.com/twoway/twoway/router"
	"github.com/twoway/twoway/tun"
	"github.com/twoway/twoway/tun/tuntest"
)

// superTCP is a TCP "superpacket" from src to dst with n payload bytes, as
// a kernel with TSO hands it over: one header, a payload of many segments.
func superTCP(src, dst netip.AddrPort, n int) []byte {
	return tuntest.TCP(src, dst, tuntest.TCPSegment{Seq: 1, Ack: 1, Flags: 0x18, Payload: bytes.Repeat([]byte{0xa5}, n)})
}

// GSO passthrough end to end: a superpacket read at the client arrives at
// the gateway's LAN whole, with its descriptor; finished packets still flow
// both ways; a descriptor that lies about its packet is refused at the
// gateway and does not end the session.
func TestVPNGSOPassthrough(t *testing.T) {
	f := newFixture(t)
	gw := startVPNGatewayOn(t, f, nil, false, "", "", tuntest.Options{Name: "gw0", GSO: true})
	vc := startVPNClientOn(t, f, f.clientCreds, gw.srv.Addr().String(), tuntest.Options{Name: "tw0", GSO: true})
	up := waitFor(t, vc.up, "VPN up")
	me4, me6 := addrOf(up, false), addrOf(up, true)
	if ss := gw.srv.Sessions(); len(ss) != 1 || !ss[0].GSO {
		t.Fatalf("gateway sessions %+v: want one with GSO", ss)
	}

	// The first packet is read by the Read that was waiting before the
	// session came up, the ordinary way; from then on reads keep
	// superpackets whole.
	for _, tc := range []struct {
		name string
		pkt  []byte
		gso  tun.GSO
	}{
		{"finished ping", tuntest.ICMPEcho(me4, lanHost, 1, 1, []byte("hi")), tun.GSO{}},
		{"tcp4 superpacket", superTCP(netip.AddrPortFrom(me4, 40000), netip.AddrPortFrom(lanHost, 80), 60000), tun.GSO{Kind: tun.GSOTCP, Size: 1348}},
		{"tcp6 superpacket", superTCP(netip.AddrPortFrom(me6, 40000), netip.AddrPortFrom(lanHos6, 80), 30000), tun.GSO{Kind: tun.GSOTCP, Size: 1328}},
		{"udp4 superpacket", tuntest.UDP(netip.AddrPortFrom(me4, 5000), netip.AddrPortFrom(lanHost, 53), make([]byte, 9000)), tun.GSO{Kind: tun.GSOUDP, Size: 1200}},
		{"partial checksum", superTCP(netip.AddrPortFrom(me4, 40001), netip.AddrPortFrom(lanHost, 80), 100), tun.GSO{Kind: tun.GSOChecksum}},
	} {
		item := tuntest.GSOPacket(tc.pkt, tc.gso)
		vc.dev.Inbound <- item
		expectPacket(t, gw.lan.Outbound, item, tc.name+" at the LAN")
	}

	// A burst of superpackets arrives whole and in order.
	var burst [][]byte
	for i := range 12 {
		burst = append(burst, tuntest.GSOPacket(superTCP(netip.AddrPortFrom(me4, 40002), netip.AddrPortFrom(lanHost, 80), 20000+i), tun.GSO{Kind: tun.GSOTCP, Size: 1348}))
	}
	for _, b := range burst {
		vc.dev.Inbound <- b
	}
	for i, b := range burst {
		expectPacket(t, gw.lan.Outbound, b, fmt.Sprintf("superpacket %d of a burst", i))
	}

	// A TCP descriptor on a UDP packet: the LAN device refuses it, the
	// next packet still goes through.
	bad := tuntest.GSOPacket(tuntest.UDP(netip.AddrPortFrom(me4, 5000), netip.AddrPortFrom(lanHost, 53), make([]byte, 3000)), tun.GSO{Kind: tun.GSOTCP, Size: 1000})
	vc.dev.Inbound <- bad
	waitStats(t, gw.srv, func(s router.Stats) bool { return s.LANError >= 1 })
	ok := tuntest.GSOPacket(tuntest.ICMPEcho(me4, lanHost, 1, 2, []byte("still up")), tun.GSO{})
	vc.dev.Inbound <- ok
	expectPacket(t, gw.lan.Outbound, ok, "ping after a refused packet")

	// LAN -> client: finished packets, and superpackets whole.
	pong := tuntest.ICMPEchoReply(lanHost, me4, 1, 1, []byte("hi"))
	gw.lan.Inbound <- tuntest.GSOPacket(pong, tun.GSO{})
	expectPacket(t, vc.dev.Outbound, tuntest.GSOPacket(pong, tun.GSO{}), "reply at the client")
	down := tuntest.GSOPacket(superTCP(netip.AddrPortFrom(lanHos6, 80), netip.AddrPortFrom(me6, 40000), 50000), tun.GSO{Kind: tun.GSOTCP, Size: 1328})
	gw.lan.Inbound <- down
	expectPacket(t, vc.dev.Outbound, down, "superpacket at the client")
}

// A client that cannot take superpackets (no GSO on its device) gets the
// gateway's cut into finished packets, which together carry the same bytes.
func TestVPNGSOCutForPlainClient(t *testing.T) {
	f := newFixture(t)
	gw := startVPNGatewayOn(t, f, nil, false, "", "", tuntest.Options{Name: "gw0", GSO: true})
	vc := startVPNClient(t, f, f.clientCreds, gw.srv.Addr().String())
	up := waitFor(t, vc.up, "VPN up")
	me4 := addrOf(up, false)

	super := superTCP(netip.AddrPortFrom(lanHost, 80), netip.AddrPortFrom(me4, 40000), 20000)
	want, _ := tuntest.Parse(super)
	gw.lan.Inbound <- tuntest.GSOPacket(super, tun.GSO{Kind: tun.GSOTCP, Size: 1448})
	var got []byte
	for len(got) < len(want.Payload) {
		p, err := tuntest.Parse(recvPacket(t, vc.dev.Outbound, "segment at the client"))
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Payload) > 1448 || p.TCP.Seq != want.TCP.Seq+uint32(len(got)) {
			t.Fatalf("segment of %d bytes at seq %d after %d bytes", len(p.Payload), p.TCP.Seq, len(got))
		}
		got = append(got, p.Payload...)
	}
	if !bytes.Equal(got, want.Payload) {
		t.Fatal("segments do not add up to the superpacket")
	}
}

// Without GSO at the gateway, or with client-to-client traffic on, the
// session does not agree on GSO: the client reads packets the ordinary way
// (which is where a real device cuts superpackets) and frames them plain.
func TestVPNGSONotAgreed(t *testing.T) {
	for _, tc := range []struct {
		name  string
		gwGSO bool
		c2c   bool
	}{
		{"gateway without GSO", false, false},
		{"client-to-client on", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			gw := startVPNGatewayOn(t, f, nil, tc.c2c, "", "", tuntest.Options{Name: "gw0", GSO: tc.gwGSO})
			vc := startVPNClientOn(t, f, f.clientCreds, gw.srv.Addr().String(), tuntest.Options{Name: "tw0", GSO: true})
			up := waitFor(t, vc.up, "VPN up")
			me4 := addrOf(up, false)
			if ss := gw.srv.Sessions(); len(ss) != 1 || ss[0].GSO {
				t.Fatalf("gateway sessions %+v: want one without GSO", ss)
			}
			form := func(p []byte) []byte {
				if tc.gwGSO {
					return tuntest.GSOPacket(p, tun.GSO{}) // written with Write on a GSO-form device
				}
				return p
			}
			ping1 := tuntest.ICMPEcho(me4, lanHost, 1, 1, []byte("first"))
			vc.dev.Inbound <- tuntest.GSOPacket(ping1, tun.GSO{})
			expectPacket(t, gw.lan.Outbound, form(ping1), "first ping at the LAN")
			// Later reads stay ordinary: the superpacket is refused
			// by Read (a real device would cut it), not passed on.
			vc.dev.Inbound <- tuntest.GSOPacket(superTCP(netip.AddrPortFrom(me4, 40000), netip.AddrPortFrom(lanHost, 80), 5000), tun.GSO{Kind: tun.GSOTCP, Size: 1000})
			ping2 := tuntest.ICMPEcho(me4, lanHost, 1, 2, []byte("second"))
			vc.dev.Inbound <- tuntest.GSOPacket(ping2, tun.GSO{})
			expectPacket(t, gw.lan.Outbound, form(ping2), "second ping at the LAN")
		})
	}
}
