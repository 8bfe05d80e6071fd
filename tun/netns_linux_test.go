package tun_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/twoway/twoway/internal/nstest"
	"github.com/twoway/twoway/tun"
	"github.com/twoway/twoway/tun/tuntest"
)

// The tests in this file create real TUN devices, addresses, routes and a
// resolv.conf, so they run in a network namespace of their own: TestNetns
// re-executes the test binary in a new namespace (directly as root, else
// inside a new user namespace) and the child runs the subtests. Nothing
// touches the host's interfaces, routes or DNS; addresses come from
// 198.18.0.0/15 and 2001:db8::/32 only, and the resolv.conf is a temp file.

// waitLimit bounds every wait for the kernel; it only matters when a test is
// failing anyway.
const waitLimit = 10 * time.Second

func TestNetns(t *testing.T) {
	if !nstest.Inside() {
		runInNewNetns(t)
		return
	}
	requireFreshNetns(t)
	if f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0); err != nil {
		// Typically a 0600 /dev/net/tun seen from an unprivileged user
		// namespace.
		t.Skipf("cannot open /dev/net/tun here (%v); run the tests as root", err)
	} else {
		f.Close()
	}
	t.Run("DeviceAndSplitConfig", testDeviceAndSplitConfig)
	t.Run("FullTunnelBypassAndCrashCleanup", testFullTunnelBypassAndCrashCleanup)
	t.Run("UnrecordedBypassRoute", testUnrecordedBypassRoute)
	t.Run("ForgedStateFile", testForgedStateFile)
	t.Run("RollbackOnConflict", testRollbackOnConflict)
	t.Run("NoOffload", testNoOffload)
	t.Run("FailedOpenLeavesNothing", testFailedOpenLeavesNothing)
	t.Run("CloseUnblocksRead", testCloseUnblocksRead)
	t.Run("Resolved", testResolved)
}

func runInNewNetns(t *testing.T) {
	if testing.Short() {
		t.Skip("network namespace tests are skipped with -short")
	}
	flags := uintptr(syscall.CLONE_NEWNET)
	if os.Geteuid() != 0 {
		flags |= syscall.CLONE_NEWUSER
	}
	nstest.Rerun(t, "TestNetns", flags)
}

// requireFreshNetns refuses to go on unless this process is in a namespace
// holding nothing but a loopback interface, so a mistake cannot reach the
// host's network configuration.
func requireFreshNetns(t *testing.T) {
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range ifs {
		if i.Name != "lo" {
			t.Fatalf("refusing to run: interface %s exists, so this is not a fresh network namespace", i.Name)
		}
	}
	// Loopback is down in a new namespace; local sockets need it.
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		t.Fatal(err)
	}
}

// --- helpers -----------------------------------------------------------------

func mustPrefixes(s ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(s))
	for i, v := range s {
		out[i] = netip.MustParsePrefix(v)
	}
	return out
}

func mustAddrs(s ...string) []netip.Addr {
	out := make([]netip.Addr, len(s))
	for i, v := range s {
		out[i] = netip.MustParseAddr(v)
	}
	return out
}

// env is one subtest's files and configurator.
type env struct {
	dir, stateFile, resolvConf string
	conf                       tun.Configurator
}

const originalResolvConf = "nameserver 192.0.2.1\noptions edns0\n"

func newEnv(t *testing.T, opts tun.ConfiguratorOptions) *env {
	t.Helper()
	e := &env{dir: t.TempDir()}
	e.stateFile = filepath.Join(e.dir, "state.json")
	e.resolvConf = filepath.Join(e.dir, "resolv.conf")
	if err := os.WriteFile(e.resolvConf, []byte(originalResolvConf), 0o644); err != nil {
		t.Fatal(err)
	}
	opts.StateFile, opts.ResolvConf = e.stateFile, e.resolvConf
	if opts.Resolved == nil {
		opts.Resolved = func() bool { return false }
	}
	if opts.Run == nil {
		opts.Run = func(_ context.Context, c tun.Command) ([]byte, error) {
			t.Errorf("unexpected command %s", c)
			return nil, errors.New("no commands expected")
		}
	}
	var err error
	if e.conf, err = tun.NewConfigurator(opts); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *env) assertRestored(t *testing.T) {
	t.Helper()
	if b, err := os.ReadFile(e.resolvConf); err != nil || string(b) != originalResolvConf {
		t.Errorf("resolv.conf = %q, %v; want the original", b, err)
	}
	if _, err := os.Stat(e.stateFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state file still there: %v", err)
	}
}

func openTUN(t *testing.T, name string, opts tun.Options) tun.Device {
	t.Helper()
	dev, err := tun.OpenWith(name, 1500, opts)
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	t.Cleanup(func() { dev.Close() })
	if got, err := dev.Name(); err != nil || got != name {
		t.Fatalf("Name = %q, %v", got, err)
	}
	return dev
}

func link(t *testing.T, name string) netlink.Link {
	t.Helper()
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func linkAddrs(t *testing.T, name string) []netip.Prefix {
	t.Helper()
	list, err := netlink.AddrList(link(t, name), netlink.FAMILY_ALL)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		t.Fatal(err)
	}
	var out []netip.Prefix
	for _, a := range list {
		ip, _ := netip.AddrFromSlice(a.IP)
		ones, _ := a.Mask.Size()
		out = append(out, netip.PrefixFrom(ip.Unmap(), ones))
	}
	return out
}

// linkRoutes lists the destinations routed to the interface in the main
// table, the default route as 0.0.0.0/0 or ::/0.
func linkRoutes(t *testing.T, name string) []netip.Prefix {
	t.Helper()
	list, err := netlink.RouteList(link(t, name), netlink.FAMILY_ALL)
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		t.Fatal(err)
	}
	var out []netip.Prefix
	for _, r := range list {
		if r.Dst == nil {
			if r.Family == netlink.FAMILY_V6 {
				out = append(out, netip.MustParsePrefix("::/0"))
			} else {
				out = append(out, netip.MustParsePrefix("0.0.0.0/0"))
			}
			continue
		}
		ip, _ := netip.AddrFromSlice(r.Dst.IP)
		ones, _ := r.Dst.Mask.Size()
		out = append(out, netip.PrefixFrom(ip.Unmap(), ones))
	}
	return out
}

// routeVia reports the interface and gateway the kernel picks for a.
func routeVia(t *testing.T, a string) (dev string, gw netip.Addr) {
	t.Helper()
	rs, err := netlink.RouteGet(net.ParseIP(a))
	if err != nil || len(rs) == 0 {
		t.Fatalf("route get %s: %v", a, err)
	}
	l, err := netlink.LinkByIndex(rs[0].LinkIndex)
	if err != nil {
		t.Fatal(err)
	}
	gw, _ = netip.AddrFromSlice(rs[0].Gw)
	return l.Attrs().Name, gw.Unmap()
}

// reader is the one goroutine reading a device; it hands over every packet
// it can parse until the device is closed.
type reader struct {
	pkts chan tuntest.Packet
	done chan error
}

func startReader(t *testing.T, dev tun.Device) *reader {
	r := &reader{pkts: make(chan tuntest.Packet, 256), done: make(chan error, 1)}
	go func() {
		bufs := make([][]byte, dev.BatchSize())
		for i := range bufs {
			bufs[i] = make([]byte, tun.BufferSize)
		}
		sizes := make([]int, len(bufs))
		for {
			n, err := dev.Read(bufs, sizes, tun.Offset)
			for i := range n {
				pkt := bytes.Clone(bufs[i][tun.Offset : tun.Offset+sizes[i]])
				if p, perr := tuntest.Parse(pkt); perr == nil {
					select {
					case r.pkts <- p:
					default: // nobody is waiting for this much
					}
				}
			}
			if errors.Is(err, tun.ErrClosed) {
				r.done <- err
				return
			}
			if err != nil && !errors.Is(err, tun.ErrTooManySegments) {
				r.done <- err
				return
			}
		}
	}()
	t.Cleanup(func() {
		dev.Close()
		if err := <-r.done; !errors.Is(err, tun.ErrClosed) {
			t.Errorf("reader ended with %v, want ErrClosed", err)
		}
	})
	return r
}

// next returns the first packet match accepts, skipping others (router
// solicitations and the like).
func (r *reader) next(t *testing.T, what string, match func(tuntest.Packet) bool) tuntest.Packet {
	t.Helper()
	timeout := time.NewTimer(waitLimit)
	defer timeout.Stop()
	for {
		select {
		case p := <-r.pkts:
			if match(p) {
				return p
			}
		case err := <-r.done:
			t.Fatalf("waiting for %s: reader ended: %v", what, err)
		case <-timeout.C:
			t.Fatalf("no %s from the device within %v", what, waitLimit)
		}
	}
}

func writePackets(t *testing.T, dev tun.Device, pkts ...[]byte) {
	t.Helper()
	bufs := make([][]byte, len(pkts))
	for i, p := range pkts {
		b := make([]byte, tun.BufferSize)
		copy(b[tun.Offset:], p)
		bufs[i] = b[:tun.Offset+len(p)]
	}
	n, err := dev.Write(bufs, tun.Offset)
	if err != nil || n != len(pkts) {
		t.Fatalf("Write = %d, %v; want %d packets", n, err, len(pkts))
	}
}

// --- subtests ----------------------------------------------------------------

func splitConfig() tun.Config {
	return tun.Config{
		Addresses:     mustPrefixes("198.18.0.1/24", "2001:db8::1/64"),
		MTU:           1400,
		Routes:        mustPrefixes("198.19.0.0/16", "2001:db8:1::/48"),
		DNS:           mustAddrs("198.18.0.53", "2001:db8::53"),
		SearchDomains: []string{"test.example"},
	}
}

func testDeviceAndSplitConfig(t *testing.T) {
	ctx := context.Background()
	const name = "twtest0"
	dev := openTUN(t, name, tun.Options{})
	if bs := dev.BatchSize(); bs != 1 && bs != tun.MaxBatchSize {
		t.Fatalf("BatchSize = %d", bs)
	}
	t.Logf("batch size %d", dev.BatchSize())
	e := newEnv(t, tun.ConfiguratorOptions{})

	undo, err := e.conf.Apply(ctx, name, splitConfig())
	if err != nil {
		t.Fatal(err)
	}
	l := link(t, name)
	if l.Attrs().MTU != 1400 || l.Attrs().Flags&net.FlagUp == 0 {
		t.Fatalf("link mtu %d flags %v", l.Attrs().MTU, l.Attrs().Flags)
	}
	if mtu, err := dev.MTU(); err != nil || mtu != 1400 {
		t.Fatalf("Device.MTU = %d, %v", mtu, err)
	}
	for _, a := range mustPrefixes("198.18.0.1/24", "2001:db8::1/64") {
		if !slices.Contains(linkAddrs(t, name), a) {
			t.Errorf("address %s missing: %v", a, linkAddrs(t, name))
		}
	}
	for _, r := range mustPrefixes("198.19.0.0/16", "2001:db8:1::/48") {
		if !slices.Contains(linkRoutes(t, name), r) {
			t.Errorf("route %s missing: %v", r, linkRoutes(t, name))
		}
	}
	rc, _ := os.ReadFile(e.resolvConf)
	if !strings.Contains(string(rc), "nameserver 198.18.0.53\nnameserver 2001:db8::53\nsearch test.example\n") {
		t.Errorf("resolv.conf:\n%s", rc)
	}
	if fi, err := os.Stat(e.stateFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("state file: %v, %v", fi, err)
	}

	r := startReader(t, dev)

	t.Run("KernelToDevice", func(t *testing.T) {
		for _, dst := range []string{"198.19.1.1:9999", "[2001:db8:1::1]:9999"} {
			c, err := net.Dial("udp", dst)
			if err != nil {
				t.Fatal(err)
			}
			msg := []byte("hello " + dst)
			if _, err := c.Write(msg); err != nil {
				t.Fatal(err)
			}
			c.Close()
			want := netip.MustParseAddrPort(dst)
			p := r.next(t, "udp to "+dst, func(p tuntest.Packet) bool { return p.Proto == tuntest.ProtoUDP && p.Dst == want })
			if !bytes.Equal(p.Payload, msg) {
				t.Errorf("payload %q", p.Payload)
			}
			if wantSrc := map[bool]string{true: "198.18.0.1", false: "2001:db8::1"}[want.Addr().Is4()]; p.Src.Addr().String() != wantSrc {
				t.Errorf("source %s, want the tunnel address %s", p.Src, wantSrc)
			}
		}
	})

	t.Run("DeviceToKernelBatch", func(t *testing.T) {
		for _, network := range []string{"udp4", "udp6"} {
			local := map[string]string{"udp4": "198.18.0.1:0", "udp6": "[2001:db8::1]:0"}[network]
			remote := map[string]string{"udp4": "198.19.1.1:5000", "udp6": "[2001:db8:1::1]:5000"}[network]
			laddr, _ := net.ResolveUDPAddr(network, local)
			conn, err := net.ListenUDP(network, laddr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			dst := conn.LocalAddr().(*net.UDPAddr).AddrPort()
			// Eight equal-sized datagrams of one flow in one Write:
			// what GRO coalesces on kernels with UDP offload.
			var pkts [][]byte
			var want []string
			for i := range 8 {
				msg := fmt.Sprintf("datagram %02d", i)
				want = append(want, msg)
				pkts = append(pkts, tuntest.UDP(netip.MustParseAddrPort(remote), netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port()), []byte(msg)))
			}
			writePackets(t, dev, pkts...)
			var got []string
			buf := make([]byte, 2048)
			for range want {
				conn.SetReadDeadline(time.Now().Add(waitLimit))
				n, from, err := conn.ReadFromUDPAddrPort(buf)
				if err != nil {
					t.Fatalf("%s: got %q, then %v", network, got, err)
				}
				if from.Addr().Unmap().String() != netip.MustParseAddrPort(remote).Addr().String() {
					t.Errorf("from %s", from)
				}
				got = append(got, string(buf[:n]))
			}
			slices.Sort(got)
			if !slices.Equal(got, want) {
				t.Errorf("%s: received %q, want %q", network, got, want)
			}
		}
	})

	t.Run("PingOwnAddress", func(t *testing.T) {
		for _, tc := range []struct{ src, dst string }{
			{"198.19.1.1", "198.18.0.1"},
			{"2001:db8:1::1", "2001:db8::1"},
		} {
			src, dst := netip.MustParseAddr(tc.src), netip.MustParseAddr(tc.dst)
			payload := []byte("ping payload " + tc.dst)
			writePackets(t, dev, tuntest.ICMPEcho(src, dst, 0x7777, 1, payload))
			p := r.next(t, "echo reply from "+tc.dst, func(p tuntest.Packet) bool {
				return (p.ICMPType == tuntest.ICMPv4EchoReply && p.Proto == tuntest.ProtoICMP || p.ICMPType == tuntest.ICMPv6EchoReply) &&
					p.Src.Addr() == dst && p.ICMPID == 0x7777
			})
			if p.Dst.Addr() != src || p.ICMPSeq != 1 || !bytes.Equal(p.Payload, payload) {
				t.Errorf("reply %+v", p)
			}
		}
	})

	t.Run("TCPHandshake", func(t *testing.T) {
		ln, err := net.Listen("tcp4", "198.18.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		port := uint16(ln.Addr().(*net.TCPAddr).Port)
		src := netip.MustParseAddrPort("198.19.1.1:40000")
		dst := netip.AddrPortFrom(netip.MustParseAddr("198.18.0.1"), port)
		writePackets(t, dev, tuntest.TCP(src, dst, tuntest.TCPSegment{Seq: 1000, Flags: tuntest.SYN}))
		p := r.next(t, "SYN-ACK", func(p tuntest.Packet) bool { return p.Proto == tuntest.ProtoTCP && p.Src == dst })
		if p.Dst != src || p.TCP.Flags&(tuntest.SYN|tuntest.ACK) != tuntest.SYN|tuntest.ACK || p.TCP.Ack != 1001 {
			t.Errorf("reply %+v", p)
		}
		writePackets(t, dev, tuntest.TCP(src, dst, tuntest.TCPSegment{Seq: 1001, Flags: tuntest.RST}))
	})

	if err := undo(); err != nil {
		t.Fatal(err)
	}
	l = link(t, name)
	if l.Attrs().MTU != 1500 || l.Attrs().Flags&net.FlagUp != 0 {
		t.Errorf("after undo: mtu %d flags %v; want 1500 and down", l.Attrs().MTU, l.Attrs().Flags)
	}
	if a := linkAddrs(t, name); slices.ContainsFunc(a, func(p netip.Prefix) bool { return !p.Addr().IsLinkLocalUnicast() }) {
		t.Errorf("addresses left: %v", a)
	}
	if rs := linkRoutes(t, name); slices.ContainsFunc(rs, func(p netip.Prefix) bool { return !p.Addr().IsLinkLocalUnicast() && !p.Addr().IsMulticast() }) {
		t.Errorf("routes left: %v", rs)
	}
	e.assertRestored(t)
	if err := undo(); err != nil {
		t.Errorf("second undo: %v", err)
	}
}

// addUplink gives the namespace a stand-in for the physical network: an
// interface with 198.18.200.1/24 and 2001:db8:200::1/64 and default routes
// via .254 and ::fe. A dummy if the kernel has it, else a veth pair.
func addUplink(t *testing.T, name string) {
	t.Helper()
	attrs := netlink.LinkAttrs{Name: name}
	if err := netlink.LinkAdd(&netlink.Dummy{LinkAttrs: attrs}); err != nil {
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: attrs, PeerName: name + "p"}); err != nil {
			t.Skipf("neither dummy nor veth links available: %v", err)
		}
		if err := netlink.LinkSetUp(link(t, name+"p")); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { netlink.LinkDel(link(t, name)) })
	l := link(t, name)
	for _, a := range mustPrefixes("198.18.200.1/24", "2001:db8:200::1/64") {
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.Addr().AsSlice(), Mask: net.CIDRMask(a.Bits(), a.Addr().BitLen())}, Flags: unix.IFA_F_NODAD}
		if err := netlink.AddrAdd(l, addr); err != nil {
			t.Fatal(err)
		}
	}
	if err := netlink.LinkSetUp(l); err != nil {
		t.Fatal(err)
	}
	for _, gw := range mustAddrs("198.18.200.254", "2001:db8:200::fe") {
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: gw.AsSlice()}); err != nil {
			t.Fatalf("default via %s: %v", gw, err)
		}
	}
}

// testUnrecordedBypassRoute: a run that crashed between adding a bypass
// route and recording it left the route behind. The next run finds it in
// place; one carrying twoway's route protocol is taken as its own and
// removed with the rest, one that is not (the admin's) is left alone.
func testUnrecordedBypassRoute(t *testing.T) {
	ctx := context.Background()
	addUplink(t, "twup0")
	up := link(t, "twup0")
	const name = "twtest8"
	openTUN(t, name, tun.Options{})
	for _, r := range []struct {
		dst   string
		proto netlink.RouteProtocol
	}{
		{"198.18.201.10/32", tun.RouteProtocol},  // the crashed run's
		{"198.18.201.11/32", unix.RTPROT_STATIC}, // the admin's
	} {
		p := netip.MustParsePrefix(r.dst)
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: up.Attrs().Index, Dst: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(32, 32)},
			Gw: net.ParseIP("198.18.200.254"), Protocol: r.proto}); err != nil {
			t.Fatal(err)
		}
	}
	e := newEnv(t, tun.ConfiguratorOptions{})
	undo, err := e.conf.Apply(ctx, name, tun.Config{
		Addresses: mustPrefixes("198.18.0.1/24"), MTU: 1400, Routes: mustPrefixes("0.0.0.0/0"),
		Bypass: mustAddrs("198.18.201.10", "198.18.201.11"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := undo(); err != nil {
		t.Fatal(err)
	}
	routes := linkRoutes(t, "twup0")
	if slices.Contains(routes, netip.MustParsePrefix("198.18.201.10/32")) {
		t.Error("the crashed run's bypass route is still there")
	}
	if !slices.Contains(routes, netip.MustParsePrefix("198.18.201.11/32")) {
		t.Error("the admin's host route was removed")
	}
}

// testForgedStateFile: a state file that records changes twoway never
// makes (taking down or unaddressing an interface that is not a TUN
// device, deleting routes twoway did not add) changes nothing when
// replayed.
func testForgedStateFile(t *testing.T) {
	addUplink(t, "twup0")
	up := link(t, "twup0")
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: up.Attrs().Index, Dst: &net.IPNet{IP: net.ParseIP("198.18.201.12").To4(), Mask: net.CIDRMask(32, 32)},
		Gw: net.ParseIP("198.18.200.254"), Protocol: unix.RTPROT_STATIC}); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, tun.ConfiguratorOptions{})
	forged := `{"version":1,"os":"linux","dev":"twtest9","undo":[
		{"kind":"route","dev":"twup0","prefix":"198.18.201.12/32","via":"198.18.200.254"},
		{"kind":"route","dev":"twup0","prefix":"0.0.0.0/0","via":"198.18.200.254"},
		{"kind":"addr","dev":"twup0","prefix":"198.18.200.1/24"},
		{"kind":"linkdown","dev":"twup0"}]}`
	if err := os.WriteFile(e.stateFile, []byte(forged), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.conf.Cleanup(context.Background()); !errors.Is(err, tun.ErrForeignStep) {
		t.Fatalf("Cleanup of a forged state file = %v, want ErrForeignStep", err)
	}
	up = link(t, "twup0")
	if up.Attrs().Flags&net.FlagUp == 0 {
		t.Error("the uplink was taken down")
	}
	routes := linkRoutes(t, "twup0")
	for _, r := range mustPrefixes("198.18.201.12/32", "0.0.0.0/0") {
		if !slices.Contains(routes, r) {
			t.Errorf("route %s was removed: %v", r, routes)
		}
	}
	as, err := netlink.AddrList(up, netlink.FAMILY_V4)
	if err != nil || len(as) != 1 {
		t.Errorf("uplink addresses %v (%v), want 198.18.200.1/24 kept", as, err)
	}
}

func testFullTunnelBypassAndCrashCleanup(t *testing.T) {
	ctx := context.Background()
	addUplink(t, "twup0")
	const name = "twtest1"
	dev := openTUN(t, name, tun.Options{})
	e := newEnv(t, tun.ConfiguratorOptions{})
	cfg := tun.Config{
		Addresses: mustPrefixes("198.18.0.1/24", "2001:db8::1/64"),
		MTU:       1400,
		Routes:    mustPrefixes("0.0.0.0/0", "::/0"),
		// The last one is on the uplink's own subnet: a host route
		// without a gateway.
		Bypass: mustAddrs("198.18.201.10", "2001:db8:201::10", "198.18.200.77"),
		DNS:    mustAddrs("198.18.0.53"),
	}
	if _, err := e.conf.Apply(ctx, name, cfg); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		dst, dev, gw string
	}{
		{"198.18.202.1", name, ""},
		{"198.19.5.5", name, ""},
		{"198.18.201.10", "twup0", "198.18.200.254"},
		{"2001:db8:202::1", name, ""},
		{"2001:db8:201::10", "twup0", "2001:db8:200::fe"},
		{"198.18.200.77", "twup0", ""},
	} {
		dev, gw := routeVia(t, tc.dst)
		if dev != tc.dev || (tc.gw != "" && gw.String() != tc.gw) {
			t.Errorf("route to %s: dev %s via %s; want dev %s via %s", tc.dst, dev, gw, tc.dev, tc.gw)
		}
	}
	for _, r := range mustPrefixes("0.0.0.0/1", "128.0.0.0/1", "::/1", "8000::/1") {
		if !slices.Contains(linkRoutes(t, name), r) {
			t.Errorf("half %s missing", r)
		}
	}
	up := linkRoutes(t, "twup0")
	for _, r := range mustPrefixes("0.0.0.0/0", "::/0", "198.18.201.10/32", "2001:db8:201::10/128", "198.18.200.77/32") {
		if !slices.Contains(up, r) {
			t.Errorf("uplink route %s missing: %v", r, up)
		}
	}

	// Crash: the process dies without undo. Its TUN goes with it...
	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName(name); err == nil {
		t.Fatal("TUN interface still there after Close")
	}
	// ...but the bypass routes and resolv.conf stay until the next start.
	if !slices.Contains(linkRoutes(t, "twup0"), netip.MustParsePrefix("198.18.201.10/32")) {
		t.Fatal("bypass route vanished on its own; the test proves nothing")
	}
	// The next run's configurator: it restores only the resolv.conf it
	// is configured with.
	next, err := tun.NewConfigurator(tun.ConfiguratorOptions{StateFile: e.stateFile, ResolvConf: e.resolvConf})
	if err != nil {
		t.Fatal(err)
	}
	if err := next.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	up = linkRoutes(t, "twup0")
	for _, r := range mustPrefixes("198.18.201.10/32", "2001:db8:201::10/128", "198.18.200.77/32") {
		if slices.Contains(up, r) {
			t.Errorf("bypass route %s left after Cleanup", r)
		}
	}
	for _, r := range mustPrefixes("0.0.0.0/0", "::/0") {
		if !slices.Contains(up, r) {
			t.Errorf("default route %s gone", r)
		}
	}
	e.assertRestored(t)
}

func testRollbackOnConflict(t *testing.T) {
	addUplink(t, "twup1")
	// Someone else routes 198.19.0.0/16 already.
	if err := netlink.RouteAdd(&netlink.Route{
		LinkIndex: link(t, "twup1").Attrs().Index,
		Dst:       &net.IPNet{IP: net.ParseIP("198.19.0.0").To4(), Mask: net.CIDRMask(16, 32)},
		Gw:        net.ParseIP("198.18.200.254"),
	}); err != nil {
		t.Fatal(err)
	}
	const name = "twtest2"
	openTUN(t, name, tun.Options{})
	e := newEnv(t, tun.ConfiguratorOptions{})
	_, err := e.conf.Apply(context.Background(), name, splitConfig())
	if err == nil || !strings.Contains(err.Error(), "198.19.0.0/16") {
		t.Fatalf("Apply = %v, want the conflicting route named", err)
	}
	l := link(t, name)
	if l.Attrs().MTU != 1500 || l.Attrs().Flags&net.FlagUp != 0 {
		t.Errorf("after rollback: mtu %d flags %v", l.Attrs().MTU, l.Attrs().Flags)
	}
	if a := linkAddrs(t, name); slices.ContainsFunc(a, func(p netip.Prefix) bool { return !p.Addr().IsLinkLocalUnicast() }) {
		t.Errorf("addresses left after rollback: %v", a)
	}
	if !slices.Contains(linkRoutes(t, "twup1"), netip.MustParsePrefix("198.19.0.0/16")) {
		t.Error("the pre-existing route was removed")
	}
	e.assertRestored(t)
}

// testFailedOpenLeavesNothing: a device the wireguard package refuses after
// the kernel made it (here: an MTU no link takes) must not keep its
// /dev/net/tun descriptor open, which would keep the interface alive.
// (wireguard-go itself leaks a pipe and two goroutines on that path.)
func testFailedOpenLeavesNothing(t *testing.T) {
	const name = "twtest9"
	tunFDs := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range ents {
			if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && target == "/dev/net/tun" {
				n++
			}
		}
		return n
	}
	before := tunFDs()
	if dev, err := tun.CreateWithoutOffload(name, 1<<20); err == nil {
		dev.Close()
		t.Fatal("a TUN device with a 1 MiB MTU was created")
	}
	if after := tunFDs(); after != before {
		t.Fatalf("/dev/net/tun descriptors %d -> %d after a failed open", before, after)
	}
	if _, err := netlink.LinkByName(name); err == nil {
		t.Fatalf("%s still exists after a failed open", name)
	}
}

func testNoOffload(t *testing.T) {
	const name = "twtest3"
	dev := openTUN(t, name, tun.Options{DisableOffload: true})
	if bs := dev.BatchSize(); bs != 1 {
		t.Fatalf("BatchSize without offload = %d, want 1", bs)
	}
	e := newEnv(t, tun.ConfiguratorOptions{})
	undo, err := e.conf.Apply(context.Background(), name, tun.Config{Addresses: mustPrefixes("198.18.0.1/24"), MTU: 1400})
	if err != nil {
		t.Fatal(err)
	}
	r := startReader(t, dev)
	src, dst := netip.MustParseAddr("198.18.0.2"), netip.MustParseAddr("198.18.0.1")
	// Several packets in one Write go out one by one.
	writePackets(t, dev,
		tuntest.ICMPEcho(src, dst, 9, 1, []byte("a")),
		tuntest.ICMPEcho(src, dst, 9, 2, []byte("b")),
		tuntest.ICMPEcho(src, dst, 9, 3, []byte("c")))
	seen := map[uint16]bool{}
	for len(seen) < 3 {
		p := r.next(t, "echo reply", func(p tuntest.Packet) bool {
			return p.Proto == tuntest.ProtoICMP && p.ICMPType == tuntest.ICMPv4EchoReply && p.ICMPID == 9
		})
		seen[p.ICMPSeq] = true
	}
	if err := undo(); err != nil {
		t.Fatal(err)
	}
	e.assertRestored(t)
}

func testCloseUnblocksRead(t *testing.T) {
	const name = "twtest4"
	dev, err := tun.Open(name, 1500)
	if err != nil {
		t.Fatal(err)
	}
	readErr := make(chan error, 1)
	go func() {
		bufs := [][]byte{make([]byte, tun.BufferSize)}
		_, err := dev.Read(bufs, make([]int, 1), tun.Offset)
		readErr <- err
	}()
	if err := dev.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-readErr:
		if !errors.Is(err, os.ErrClosed) || !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read after Close = %v, want ErrClosed", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("Close did not unblock Read")
	}
	if _, err := dev.Write([][]byte{make([]byte, tun.Offset+20)}, tun.Offset); !errors.Is(err, tun.ErrClosed) {
		t.Errorf("Write after Close = %v", err)
	}
	if err := dev.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if _, err := netlink.LinkByName(name); err == nil {
		t.Error("interface still there after Close")
	}
	// The name is free again.
	dev, err = tun.Open(name, 1500)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	dev.Close()
}

func testResolved(t *testing.T) {
	const name = "twtest5"
	openTUN(t, name, tun.Options{})
	var mu sync.Mutex
	var cmds []string
	e := newEnv(t, tun.ConfiguratorOptions{
		Resolved: func() bool { return true },
		Run: func(_ context.Context, c tun.Command) ([]byte, error) {
			mu.Lock()
			defer mu.Unlock()
			cmds = append(cmds, c.String())
			return nil, nil
		},
	})
	undo, err := e.conf.Apply(context.Background(), name, splitConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := undo(); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"resolvectl dns twtest5 198.18.0.53 2001:db8::53",
		"resolvectl domain twtest5 test.example",
		"resolvectl revert twtest5",
	}
	if !slices.Equal(cmds, want) {
		t.Fatalf("commands %q, want %q", cmds, want)
	}
	e.assertRestored(t) // resolv.conf untouched under resolved
}
