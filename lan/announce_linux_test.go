package lan

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// proxyEntries lists the proxy neighbour entries on link.
func proxyEntries(t *testing.T, link netlink.Link) []netip.Addr {
	t.Helper()
	var out []netip.Addr
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		ns, err := netlink.NeighProxyList(link.Attrs().Index, fam)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range ns {
			a, _ := netip.AddrFromSlice(n.IP)
			out = append(out, a.Unmap())
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// capture opens a packet socket on the interface with index ifindex for
// ethertype proto; it returns frames' payloads (after the Ethernet
// header) with the sender's MAC.
func capture(t *testing.T, ifindex int, proto uint16) func() (payload []byte, from net.HardwareAddr) {
	t.Helper()
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(proto)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(proto), Ifindex: ifindex}); err != nil {
		t.Fatal(err)
	}
	tv := unix.NsecToTimeval(int64(2 * time.Second))
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}
	return func() ([]byte, net.HardwareAddr) {
		buf := make([]byte, 2048)
		n, from, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			t.Fatalf("no frame on the wire: %v", err)
		}
		ll := from.(*unix.SockaddrLinklayer)
		return buf[:n], net.HardwareAddr(ll.Addr[:ll.Halen])
	}
}

// TestNeighbours: on a LAN interface (one end of a veth pair), proxy
// entries for the pools inside its subnets come and go with the sessions
// holding the addresses, counted per address; each takeover goes out as a
// gratuitous ARP (IPv4) and an unsolicited neighbour advertisement with
// the override flag (IPv6) from the interface's MAC; entries a crashed run
// left are removed at Start; the proxy sysctls are set while running and
// restored by Stop.
func TestNeighbours(t *testing.T) {
	inNewNetns(t, func() {
		if err := os.WriteFile("/proc/sys/net/ipv6/conf/default/accept_dad", []byte("0"), 0o644); err != nil {
			t.Fatal(err)
		}
		la := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "lan0"}, PeerName: "peer0"}
		if err := netlink.LinkAdd(la); err != nil {
			t.Fatal(err)
		}
		lan0, _ := netlink.LinkByName("lan0")
		peer, _ := netlink.LinkByName("peer0")
		for _, a := range []string{"198.18.0.1/16", "2001:db8:1::1/64"} {
			addr, _ := netlink.ParseAddr(a)
			addr.Flags = unix.IFA_F_NODAD
			if err := netlink.AddrAdd(lan0, addr); err != nil {
				t.Fatal(err)
			}
		}
		for _, l := range []netlink.Link{lan0, peer} {
			if err := netlink.LinkSetUp(l); err != nil {
				t.Fatal(err)
			}
		}
		pool4, pool6 := netip.MustParsePrefix("198.18.100.0/24"), netip.MustParsePrefix("2001:db8:1::100:0/112")
		alice4, alice6 := netip.MustParseAddr("198.18.100.7"), netip.MustParseAddr("2001:db8:1::100:7")
		stale := netip.MustParseAddr("198.18.100.99")

		// A pool outside every subnet of the interface has nobody to
		// answer.
		n, err := NewNeighbours("lan0", []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Start(); !errors.Is(err, ErrNoLANSubnet) {
			t.Fatalf("Start with a pool outside the LAN: %v, want ErrNoLANSubnet", err)
		}

		if err := netlink.NeighAdd(&netlink.Neigh{LinkIndex: lan0.Attrs().Index, Family: netlink.FAMILY_V4, Flags: netlink.NTF_PROXY, IP: stale.AsSlice()}); err != nil {
			t.Fatal(err)
		}
		delay4, delay6, ndp := "/proc/sys/net/ipv4/neigh/lan0/proxy_delay", "/proc/sys/net/ipv6/neigh/lan0/proxy_delay", "/proc/sys/net/ipv6/conf/lan0/proxy_ndp"
		before := []string{readSysctl(t, delay4), readSysctl(t, delay6), readSysctl(t, ndp)}
		if before[0] == "0" || before[2] != "0" {
			t.Skipf("unexpected defaults in a fresh namespace: %v", before)
		}

		n, err = NewNeighbours("lan0", []netip.Prefix{pool4, pool6}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Start(); err != nil {
			t.Fatal(err)
		}
		if got := proxyEntries(t, lan0); len(got) != 0 {
			t.Fatalf("entries after Start: %v, want the stale one gone", got)
		}
		if got := []string{readSysctl(t, delay4), readSysctl(t, delay6), readSysctl(t, ndp)}; !slices.Equal(got, []string{"0", "0", "1"}) {
			t.Fatalf("proxy_delay (v4, v6), proxy_ndp while running: %v", got)
		}

		arp := capture(t, peer.Attrs().Index, unix.ETH_P_ARP)
		ip6 := capture(t, peer.Attrs().Index, unix.ETH_P_IPV6)
		n.Add([]netip.Addr{alice4, alice6, netip.MustParseAddr("198.51.100.1")}) // the last: not in a pool
		if got := proxyEntries(t, lan0); !slices.Equal(got, []netip.Addr{alice4, alice6}) {
			t.Fatalf("entries after Add: %v", got)
		}

		// The gratuitous ARP: a request from lan0's MAC whose sender
		// and target are alice's address.
		mac := lan0.Attrs().HardwareAddr
		p, from := arp()
		want := binary.BigEndian.AppendUint32(nil, 0x0001_0800)
		want = append(want, 6, 4, 0, 1)
		want = append(append(want, mac...), alice4.AsSlice()...)
		want = append(append(want, make([]byte, 6)...), alice4.AsSlice()...)
		if !bytes.Equal(from, mac) || !bytes.Equal(p[:28], want) {
			t.Fatalf("gratuitous ARP from %v: % x, want from %v: % x", from, p[:28], mac, want)
		}
		// The advertisement: ICMPv6 type 136, hop limit 255, to all
		// nodes, override set, alice's address at lan0's MAC. Other
		// IPv6 frames (MLD, router solicitations) are skipped.
		deadline := time.Now().Add(2 * time.Second)
		for {
			p, _ := ip6()
			if len(p) >= 40+32 && p[6] == unix.IPPROTO_ICMPV6 && p[40] == 136 {
				if p[7] != 255 || !bytes.Equal(p[24:40], net.IPv6linklocalallnodes) {
					t.Fatalf("advertisement: hop limit %d, to %v", p[7], net.IP(p[24:40]))
				}
				na := p[40:]
				if na[4] != 0x20 || !bytes.Equal(na[8:24], alice6.AsSlice()) || na[24] != 2 || na[25] != 1 || !bytes.Equal(na[26:32], mac) {
					t.Fatalf("advertisement: % x", na)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("no neighbour advertisement on the wire")
			}
		}

		// A second session of the same identity, then both end.
		n.Add([]netip.Addr{alice4})
		n.Remove([]netip.Addr{alice4, alice6})
		if got := proxyEntries(t, lan0); !slices.Equal(got, []netip.Addr{alice4}) {
			t.Fatalf("entries with alice's second session left: %v", got)
		}
		n.Remove([]netip.Addr{alice4})
		if got := proxyEntries(t, lan0); len(got) != 0 {
			t.Fatalf("entries after every session ended: %v", got)
		}

		n.Add([]netip.Addr{alice4})
		if err := n.Stop(); err != nil {
			t.Fatal(err)
		}
		if err := n.Stop(); err != nil {
			t.Fatal(err)
		}
		if got := proxyEntries(t, lan0); len(got) != 0 {
			t.Fatalf("entries after Stop: %v", got)
		}
		if got := []string{readSysctl(t, delay4), readSysctl(t, delay6), readSysctl(t, ndp)}; !slices.Equal(got, before) {
			t.Fatalf("sysctls after Stop: %v, want %v", got, before)
		}
		n.Add([]netip.Addr{alice4}) // after Stop: nothing
		if got := proxyEntries(t, lan0); len(got) != 0 {
			t.Fatalf("entries after an Add after Stop: %v", got)
		}
	})
}
