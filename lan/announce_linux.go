package lan

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// neighSys is the Linux side of Neighbours: proxy neighbour entries over
// netlink, gratuitous ARP on a packet socket, unsolicited neighbour
// advertisements on an ICMPv6 socket.
type neighSys struct {
	link    netlink.Link
	mac     net.HardwareAddr
	pools   []netip.Prefix // the pools inside a subnet of the interface
	logger  *slog.Logger
	arp     int              // AF_PACKET socket for ARP; -1 without an IPv4 pool
	icmp6   *icmp.PacketConn // nil without an IPv6 pool
	restore []func() error   // sysctls to put back
}

func startNeighSys(iface string, pools []netip.Prefix, logger *slog.Logger) (_ *neighSys, err error) {
	link, err := netlink.LinkByName(iface)
	if err != nil {
		return nil, fmt.Errorf("lan: LAN interface %s: %w", iface, err)
	}
	mac := link.Attrs().HardwareAddr
	if len(mac) != 6 {
		return nil, fmt.Errorf("lan: LAN interface %s has no Ethernet address: proxy ARP needs one", iface)
	}
	addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("lan: addresses of %s: %w", iface, err)
	}
	s := &neighSys{link: link, mac: mac, logger: logger, arp: -1}
	var subnets []netip.Prefix
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			ones, _ := a.Mask.Size()
			subnets = append(subnets, netip.PrefixFrom(ip.Unmap(), ones).Masked())
		}
	}
	for _, p := range pools {
		inside := false
		for _, sn := range subnets {
			inside = inside || sn.Bits() <= p.Bits() && sn.Contains(p.Addr())
		}
		if !inside {
			logger.Warn("client pool is not inside a subnet of the LAN interface: not answering ARP/NDP for it; route it to the gateways", "pool", p, "interface", iface, "subnets", subnets)
			continue
		}
		s.pools = append(s.pools, p)
	}
	if len(s.pools) == 0 {
		return nil, fmt.Errorf("lan: %w (%s: %v; pools %v)", ErrNoLANSubnet, iface, subnets, pools)
	}
	defer func() {
		if err != nil {
			_ = s.close()
		}
	}()
	// Broadcast ARP requests and multicast solicitations for proxied
	// addresses are answered after a random delay of up to proxy_delay
	// (0.8 s by default, to let a real owner answer first); here there is
	// no other owner, and the delay would add to every failover.
	for _, p := range s.pools {
		family, extra := "ipv4", ""
		if p.Addr().Is6() {
			family, extra = "ipv6", filepath.Join(sysctlConf6, iface, "proxy_ndp")
		}
		undo, err := setSysctl(filepath.Join("/proc/sys/net", family, "neigh", iface, "proxy_delay"), "0", nil)
		if err != nil {
			return nil, err
		}
		s.restore = append(s.restore, undo)
		if extra != "" {
			if undo, err = setSysctl(extra, "1", nil); err != nil {
				return nil, err
			}
			s.restore = append(s.restore, undo)
		}
	}
	// A crashed run's entries would answer for clients this gateway no
	// longer holds.
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		stale, err := netlink.NeighProxyList(link.Attrs().Index, fam)
		if err != nil {
			return nil, fmt.Errorf("lan: list proxy neighbours on %s: %w", iface, err)
		}
		for _, e := range stale {
			if a, ok := netip.AddrFromSlice(e.IP); ok && s.covers(a.Unmap()) {
				if err := netlink.NeighDel(&e); err != nil {
					return nil, fmt.Errorf("lan: remove stale proxy neighbour %s on %s: %w", a, iface, err)
				}
				logger.Info("removed a proxy neighbour entry left by an earlier run", "address", a, "interface", iface)
			}
		}
	}
	for _, p := range s.pools {
		if p.Addr().Is4() {
			fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ARP)))
			if err != nil {
				return nil, fmt.Errorf("lan: packet socket for gratuitous ARP: %w", err)
			}
			s.arp = fd
			continue
		}
		c, err := icmp.ListenPacket("ip6:ipv6-icmp", "::")
		if err != nil {
			return nil, fmt.Errorf("lan: ICMPv6 socket for neighbour advertisements: %w", err)
		}
		s.icmp6 = c
		pc := c.IPv6PacketConn()
		ifi := &net.Interface{Index: link.Attrs().Index, Name: iface}
		// RFC 4861 7.1.2: receivers drop advertisements whose hop limit
		// is not 255. Nothing is read from this socket.
		if err := errors.Join(pc.SetMulticastInterface(ifi), pc.SetMulticastHopLimit(255), pc.SetHopLimit(255)); err != nil {
			return nil, fmt.Errorf("lan: ICMPv6 socket for neighbour advertisements: %w", err)
		}
		var f ipv6.ICMPFilter
		f.SetAll(true)
		_ = pc.SetICMPFilter(&f)
	}
	return s, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// covers reports whether a is in a pool this gateway answers for.
func (s *neighSys) covers(a netip.Addr) bool {
	for _, p := range s.pools {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (s *neighSys) entry(a netip.Addr) *netlink.Neigh {
	fam := netlink.FAMILY_V4
	if a.Is6() {
		fam = netlink.FAMILY_V6
	}
	return &netlink.Neigh{LinkIndex: s.link.Attrs().Index, Family: fam, Flags: netlink.NTF_PROXY, IP: a.AsSlice()}
}

func (s *neighSys) add(a netip.Addr) error {
	if err := netlink.NeighSet(s.entry(a)); err != nil {
		return fmt.Errorf("lan: add proxy neighbour %s: %w", a, err)
	}
	return nil
}

func (s *neighSys) del(a netip.Addr) error {
	if err := netlink.NeighDel(s.entry(a)); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("lan: remove proxy neighbour %s: %w", a, err)
	}
	return nil
}

// announce tells the LAN that a is at this interface's MAC now: a
// gratuitous ARP request (sender and target a) for IPv4, an unsolicited
// neighbour advertisement with the override flag to all nodes for IPv6.
// LAN hosts update an entry they have for a (Linux even one it locked
// moments ago: a gratuitous ARP overrides arp locktime) and create none.
func (s *neighSys) announce(a netip.Addr) {
	var err error
	if a.Is4() {
		if s.arp < 0 {
			return
		}
		ip := a.As4()
		pkt := make([]byte, 0, 28)
		pkt = binary.BigEndian.AppendUint16(pkt, 1)      // Ethernet
		pkt = binary.BigEndian.AppendUint16(pkt, 0x0800) // IPv4
		pkt = append(pkt, 6, 4)
		pkt = binary.BigEndian.AppendUint16(pkt, 1) // request
		pkt = append(append(pkt, s.mac...), ip[:]...)
		pkt = append(append(pkt, make([]byte, 6)...), ip[:]...)
		to := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ARP), Ifindex: s.link.Attrs().Index, Halen: 6}
		copy(to.Addr[:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		err = unix.Sendto(s.arp, pkt, 0, to)
	} else {
		if s.icmp6 == nil {
			return
		}
		target := a.As16()
		body := make([]byte, 0, 28)
		body = append(body, 0x20, 0, 0, 0) // override, not solicited
		body = append(body, target[:]...)
		body = append(body, 2, 1) // target link-layer address, 8 bytes
		body = append(body, s.mac...)
		m := icmp.Message{Type: ipv6.ICMPTypeNeighborAdvertisement, Body: &icmp.RawBody{Data: body}}
		b, merr := m.Marshal(nil) // the kernel fills in the checksum
		if merr == nil {
			_, merr = s.icmp6.WriteTo(b, &net.IPAddr{IP: net.IPv6linklocalallnodes, Zone: s.link.Attrs().Name})
		}
		err = merr
	}
	if err != nil {
		s.logger.Warn("cannot announce a client's address on the LAN", "address", a, "interface", s.link.Attrs().Name, "err", err)
	}
}

func (s *neighSys) close() error {
	var errs []error
	if s.arp >= 0 {
		errs = append(errs, unix.Close(s.arp))
		s.arp = -1
	}
	if s.icmp6 != nil {
		errs = append(errs, s.icmp6.Close())
		s.icmp6 = nil
	}
	for i := len(s.restore) - 1; i >= 0; i-- {
		errs = append(errs, s.restore[i]())
	}
	s.restore = nil
	return errors.Join(errs...)
}
