package tun

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// linuxPlatform configures links, addresses and routes over rtnetlink, and
// DNS through systemd-resolved or resolv.conf. It works on the network
// namespace of the calling thread, which for twoway is the process's.
type linuxPlatform struct {
	c *configurator
}

func newPlatform(c *configurator) (platform, error) {
	return &linuxPlatform{c: c}, nil
}

// bypassHop is where a Bypass address was routed before the tunnel.
type bypassHop struct {
	addr    netip.Addr
	gw      netip.Addr // invalid when the address is on-link
	link    int
	linkDev string
}

func (p *linuxPlatform) plan(ctx context.Context, dev string, cfg Config) ([]change, error) {
	link, err := netlink.LinkByName(dev)
	if err != nil {
		return nil, fmt.Errorf("interface %s: %w", dev, err)
	}
	tunIndex := link.Attrs().Index

	// Look the bypass paths up before any change, while the routing table
	// still shows the pre-tunnel path.
	var hops []bypassHop
	for _, a := range cfg.BypassRoutes() {
		h, err := lookupHop(a, tunIndex, dev)
		if err != nil {
			return nil, err
		}
		hops = append(hops, h)
	}

	var changes []change
	changes = append(changes, change{
		what: fmt.Sprintf("set mtu %d", cfg.MTU),
		do: func(context.Context) (*step, error) {
			l, err := netlink.LinkByName(dev)
			if err != nil {
				return nil, err
			}
			old := l.Attrs().MTU
			if old == cfg.MTU {
				return nil, nil
			}
			if err := netlink.LinkSetMTU(l, cfg.MTU); err != nil {
				return nil, err
			}
			return &step{Kind: stepMTU, Dev: dev, MTU: old, BestEffort: true}, nil
		},
	})
	for _, a := range cfg.Addresses {
		changes = append(changes, change{
			what: "add address " + a.String(),
			do: func(context.Context) (*step, error) {
				addr := &netlink.Addr{IPNet: ipNet(a.Addr(), a.Bits())}
				if a.Addr().Is6() {
					// A TUN is point-to-point without neighbours:
					// duplicate address detection would only delay
					// the address becoming usable.
					addr.Flags = unix.IFA_F_NODAD
				}
				if err := netlink.AddrAdd(link, addr); err != nil {
					if errors.Is(err, unix.EEXIST) {
						return nil, nil // someone else's: not ours to remove
					}
					return nil, err
				}
				return &step{Kind: stepAddr, Dev: dev, Prefix: a, BestEffort: true}, nil
			},
		})
	}
	changes = append(changes, change{
		what: "set link up",
		do: func(context.Context) (*step, error) {
			l, err := netlink.LinkByName(dev)
			if err != nil {
				return nil, err
			}
			if l.Attrs().Flags&net.FlagUp != 0 {
				return nil, nil
			}
			if err := netlink.LinkSetUp(l); err != nil {
				return nil, err
			}
			return &step{Kind: stepLinkDown, Dev: dev, BestEffort: true}, nil
		},
	})
	// Bypass routes go in before the tunnel routes, so there is no moment
	// in which the gateway's address points into the tunnel.
	for _, h := range hops {
		changes = append(changes, change{
			what: fmt.Sprintf("add bypass route %s via %s dev %s", h.addr, h.gw, h.linkDev),
			do: func(context.Context) (*step, error) {
				r := &netlink.Route{
					LinkIndex: h.link,
					Dst:       ipNet(h.addr, h.addr.BitLen()),
					Protocol:  RouteProtocol,
				}
				if h.gw.IsValid() {
					r.Gw = h.gw.AsSlice()
				} else if h.addr.Is4() {
					r.Scope = netlink.SCOPE_LINK // on-link, as `ip route add ... dev` does
				}
				st := &step{Kind: stepRoute, Dev: h.linkDev, Prefix: netip.PrefixFrom(h.addr, h.addr.BitLen()), Via: h.gw}
				if err := netlink.RouteAdd(r); err != nil {
					if errors.Is(err, unix.EEXIST) {
						// Ours if it carries our protocol: a run that
						// crashed before recording it. Anyone else's
						// stays theirs.
						if ownRoute(r) {
							return st, nil
						}
						return nil, nil
					}
					return nil, err
				}
				return st, nil
			},
		})
	}
	for _, r := range cfg.KernelRoutes() {
		changes = append(changes, change{
			what: "add route " + r.String(),
			do: func(context.Context) (*step, error) {
				route := &netlink.Route{
					LinkIndex: tunIndex,
					Dst:       ipNet(r.Addr(), r.Bits()),
					Protocol:  RouteProtocol,
				}
				if r.Addr().Is4() {
					route.Scope = netlink.SCOPE_LINK
				}
				if err := netlink.RouteAdd(route); err != nil {
					if errors.Is(err, unix.EEXIST) {
						return nil, fmt.Errorf("a route to %s exists already: %w", r, err)
					}
					return nil, err
				}
				return &step{Kind: stepRoute, Dev: dev, Prefix: r, BestEffort: true}, nil
			},
		})
	}
	if len(cfg.DNS) > 0 {
		if p.c.opts.Resolved() {
			changes = append(changes, execChanges(p.c.opts.Run, resolvedPlan(dev, cfg))...)
		} else {
			changes = append(changes, resolvConfChanges(p.c.opts.ResolvConf, dev, cfg)...)
		}
	}
	return changes, nil
}

// lookupHop asks the kernel how it routes a now.
func lookupHop(a netip.Addr, tunIndex int, dev string) (bypassHop, error) {
	routes, err := netlink.RouteGet(a.AsSlice())
	if err != nil || len(routes) == 0 {
		return bypassHop{}, fmt.Errorf("bypass %s: no route to it to keep outside the tunnel: %v", a, err)
	}
	r := routes[0]
	if r.LinkIndex == tunIndex {
		return bypassHop{}, fmt.Errorf("bypass %s: already routed through %s", a, dev)
	}
	l, err := netlink.LinkByIndex(r.LinkIndex)
	if err != nil {
		return bypassHop{}, fmt.Errorf("bypass %s: interface %d: %w", a, r.LinkIndex, err)
	}
	if l.Attrs().Name == "lo" {
		return bypassHop{}, fmt.Errorf("bypass %s: it is a local address", a)
	}
	h := bypassHop{addr: a, link: r.LinkIndex, linkDev: l.Attrs().Name}
	if gw, ok := netip.AddrFromSlice(r.Gw); ok && !gw.IsUnspecified() {
		h.gw = gw.Unmap() // netlink may hand IPv4 over in 16 bytes
	}
	return h, nil
}

func (p *linuxPlatform) undo(_ context.Context, s step) error {
	l, err := netlink.LinkByName(s.Dev)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return nil // the interface is gone, and with it the change
		}
		return err
	}
	// A state file changes addresses, MTU and link state of twoway's own
	// TUN devices only: a forged one must not take down the uplink.
	if s.Kind != stepRoute && l.Type() != "tuntap" {
		return fmt.Errorf("%w: %s on %s, a %s device and not a TUN device", ErrForeignStep, s, s.Dev, l.Type())
	}
	switch s.Kind {
	case stepAddr:
		err = netlink.AddrDel(l, &netlink.Addr{IPNet: ipNet(s.Prefix.Addr(), s.Prefix.Bits())})
		if errors.Is(err, unix.EADDRNOTAVAIL) {
			return nil
		}
		return err
	case stepRoute:
		// SCOPE_NOWHERE matches any scope: the kernel deletes only on
		// an exact scope match otherwise, and the zero value (universe)
		// would miss the link-scope routes added above with ESRCH.
		// Protocol: the kernel deletes only a route twoway added, so a
		// forged state file cannot remove anyone else's.
		r := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: ipNet(s.Prefix.Addr(), s.Prefix.Bits()), Scope: netlink.SCOPE_NOWHERE, Protocol: RouteProtocol}
		if s.Via.IsValid() {
			r.Gw = s.Via.AsSlice()
		}
		err = netlink.RouteDel(r)
		if errors.Is(err, unix.ESRCH) {
			return nil
		}
		return err
	case stepMTU:
		return netlink.LinkSetMTU(l, s.MTU)
	case stepLinkDown:
		return netlink.LinkSetDown(l)
	}
	return fmt.Errorf("unknown state file step %q", s.Kind)
}

// ipNet converts an address and prefix length to what netlink takes; the
// address is kept as is (an interface address, not a network).
func ipNet(a netip.Addr, bits int) *net.IPNet {
	return &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(bits, a.BitLen())}
}

// RouteProtocol marks the routes twoway adds (`ip route` shows "proto 116"),
// so that a bypass route a crashed run added but did not record is known as
// twoway's at the next start, and removed with the rest.
const RouteProtocol netlink.RouteProtocol = 116

// ownRoute reports whether a route to r's destination on r's link carrying
// RouteProtocol exists.
func ownRoute(r *netlink.Route) bool {
	family := netlink.FAMILY_V4
	if r.Dst.IP.To4() == nil {
		family = netlink.FAMILY_V6
	}
	routes, err := netlink.RouteListFiltered(family, &netlink.Route{Dst: r.Dst, LinkIndex: r.LinkIndex, Protocol: RouteProtocol},
		netlink.RT_FILTER_DST|netlink.RT_FILTER_OIF|netlink.RT_FILTER_PROTOCOL)
	return err == nil && len(routes) > 0
}
