package lan

import (
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// inNS runs f on a thread in ns and returns to the caller's namespace.
func inNS(t *testing.T, ns netns.NsHandle, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			t.Error(err)
			return
		}
		defer orig.Close()
		if err := netns.Set(ns); err != nil {
			t.Error(err)
			return
		}
		f()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
	}()
	<-done
}

// TestLANCannotReachClients builds gateway, LAN host and client in
// namespaces of their own (a veth stands in for the TUN device, named as
// one): with the default, a LAN host that routes the pool via the gateway
// cannot open a connection to a client, while the client's own connection
// to the LAN gets its replies; with LANToClients both work.
func TestLANCannotReachClients(t *testing.T) {
	inNewNetns(t, func() {
		gw, err := netns.Get()
		if err != nil {
			t.Fatal(err)
		}
		defer gw.Close()
		newNS := func() netns.NsHandle {
			ns, err := netns.New() // moves this thread too: go back
			if err != nil {
				t.Fatal(err)
			}
			if err := netns.Set(gw); err != nil {
				t.Fatal(err)
			}
			return ns
		}
		lanNS, clientNS := newNS(), newNS()
		defer lanNS.Close()
		defer clientNS.Close()

		link := func(name, peer string, peerNS netns.NsHandle, addr, peerAddr string) {
			la := netlink.NewLinkAttrs()
			la.Name = name
			if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: peer}); err != nil {
				t.Fatal(err)
			}
			l, _ := netlink.LinkByName(name)
			p, _ := netlink.LinkByName(peer)
			if err := netlink.LinkSetNsFd(p, int(peerNS)); err != nil {
				t.Fatal(err)
			}
			a, _ := netlink.ParseAddr(addr)
			_ = netlink.AddrAdd(l, a)
			_ = netlink.LinkSetUp(l)
			inNS(t, peerNS, func() {
				p, _ := netlink.LinkByName(peer)
				a, _ := netlink.ParseAddr(peerAddr)
				_ = netlink.AddrAdd(p, a)
				_ = netlink.LinkSetUp(p)
				lo, _ := netlink.LinkByName("lo")
				_ = netlink.LinkSetUp(lo)
				gwAddr := netip.MustParsePrefix(addr).Addr()
				_, all, _ := net.ParseCIDR("0.0.0.0/0")
				if err := netlink.RouteAdd(&netlink.Route{LinkIndex: p.Attrs().Index, Dst: all, Gw: gwAddr.AsSlice()}); err != nil {
					t.Error(err)
				}
			})
		}
		link("gw-lan", "lan0", lanNS, "198.18.1.1/24", "198.18.1.2/24")
		link("tw0", "cl0", clientNS, "198.18.100.1/24", "198.18.100.7/24")

		listen := func(ns netns.NsHandle, addr string) net.Listener {
			var ln net.Listener
			inNS(t, ns, func() {
				var err error
				if ln, err = net.Listen("tcp", addr); err != nil {
					t.Error(err)
				}
			})
			if ln == nil {
				t.FailNow()
			}
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					_, _ = c.Write([]byte("hi"))
					c.Close()
				}
			}()
			return ln
		}
		clientSvc := listen(clientNS, "198.18.100.7:9000")
		defer clientSvc.Close()
		lanSvc := listen(lanNS, "198.18.1.2:9000")
		defer lanSvc.Close()
		reach := func(from netns.NsHandle, addr string) error {
			var err error
			inNS(t, from, func() {
				var c net.Conn
				if c, err = net.DialTimeout("tcp", addr, 2*time.Second); err == nil {
					_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
					_, err = c.Read(make([]byte, 2))
					c.Close()
				}
			})
			return err
		}

		for _, open := range []bool{false, true} {
			undo, err := Apply(Config{Mode: Routed, TUN: "tw0", LANToClients: open, Pools: []netip.Prefix{netip.MustParsePrefix("198.18.100.0/24")}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := reach(clientNS, "198.18.1.2:9000"); err != nil {
				t.Errorf("lan_to_clients=%v: client -> LAN: %v", open, err)
			}
			err = reach(lanNS, "198.18.100.7:9000")
			if open && err != nil {
				t.Errorf("lan_to_clients=true: LAN -> client: %v", err)
			}
			if !open && err == nil {
				t.Error("the LAN opened a connection to a client")
			}
			if err := undo(); err != nil {
				t.Fatal(err)
			}
		}
	})
}
