package lan

import (
	"bytes"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/twoway/twoway/internal/nstest"
)

// inNewNetns runs f on a thread moved into a fresh network namespace, so
// that nothing of the host's firewall or sysctls is touched. Without root,
// it re-runs the calling test in a new user namespace instead, where f then
// runs as root; a test using it must be nothing but the call.
func inNewNetns(t *testing.T, f func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		// Root of a new user namespace may make network namespaces and
		// nftables tables in them.
		// The test is the whole closure, so the re-run is the test.
		nstest.Rerun(t, t.Name(), syscall.CLONE_NEWUSER|syscall.CLONE_NEWNET)
		return
	}
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	ns, err := netns.New()
	if err != nil {
		runtime.UnlockOSThread()
		t.Skipf("cannot create a network namespace: %v", err)
	}
	defer func() {
		ns.Close()
		if err := netns.Set(orig); err == nil {
			runtime.UnlockOSThread() // else the thread dies with the goroutine
		}
		orig.Close()
	}()
	f()
}

func readSysctl(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestApplyNAT: NAT mode turns forwarding on and installs the table with
// one masquerade rule per pool; undo removes it and restores the sysctls.
// A stale table from a crashed run is replaced.
func TestApplyNAT(t *testing.T) {
	inNewNetns(t, func() {
		if readSysctl(t, sysctlForward4) != "0" {
			t.Skip("a fresh namespace should start with forwarding off")
		}
		cfg := Config{Mode: NAT, TUN: "twoway0", Pools: []netip.Prefix{
			netip.MustParsePrefix("198.18.100.0/24"), netip.MustParsePrefix("2001:db8:100::/64")}}
		stale, err := Apply(cfg, nil) // as if a crashed run had left it
		if err != nil {
			t.Fatal(err)
		}
		undo, err := Apply(cfg, nil)
		if err != nil {
			t.Fatalf("apply over a stale table: %v", err)
		}
		_ = stale
		if readSysctl(t, sysctlForward4) != "1" || readSysctl(t, sysctlForward6) != "1" {
			t.Error("forwarding not on")
		}
		c, err := nftables.New()
		if err != nil {
			t.Fatal(err)
		}
		rules, err := c.GetRules(table, &nftables.Chain{Name: "postrouting", Table: table})
		if err != nil {
			t.Fatal(err)
		}
		if len(rules) != 2 {
			t.Errorf("%d rules, want one per pool", len(rules))
		}
		if err := undo(); err != nil {
			t.Fatal(err)
		}
		if err := undo(); err != nil {
			t.Fatalf("second undo: %v", err)
		}
		tables, _ := c.ListTablesOfFamily(nftables.TableFamilyINet)
		for _, tb := range tables {
			if tb.Name == TableName {
				t.Error("table still there after undo")
			}
		}
		// The second Apply saw forwarding already on, so it restores "1";
		// the first one's undo restores what the namespace started with.
		if err := stale(); err != nil {
			t.Fatal(err)
		}
		if readSysctl(t, sysctlForward4) != "0" || readSysctl(t, sysctlForward6) != "0" {
			t.Error("forwarding not restored")
		}
	})
}

// TestApplyRouted: routed mode with lan_to_clients only turns forwarding on.
func TestApplyRouted(t *testing.T) {
	inNewNetns(t, func() {
		undo, err := Apply(Config{Mode: Routed, TUN: "twoway0", LANToClients: true, Pools: []netip.Prefix{netip.MustParsePrefix("198.18.100.0/24")}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := nftables.New()
		tables, _ := c.ListTablesOfFamily(nftables.TableFamilyINet)
		if len(tables) != 0 {
			t.Errorf("routed mode created tables: %v", tables)
		}
		if readSysctl(t, sysctlForward4) != "1" {
			t.Error("forwarding not on")
		}
		if err := undo(); err != nil {
			t.Fatal(err)
		}
	})
}

func TestValidate(t *testing.T) {
	p := []netip.Prefix{netip.MustParsePrefix("198.18.100.0/24")}
	for name, c := range map[string]Config{
		"mode":       {Mode: "bridge", TUN: "t", Pools: p},
		"no pools":   {Mode: NAT, TUN: "t"},
		"host bits":  {Mode: NAT, TUN: "t", Pools: []netip.Prefix{netip.MustParsePrefix("198.18.100.1/24")}},
		"two v4":     {Mode: NAT, TUN: "t", Pools: append(p, netip.MustParsePrefix("198.18.101.0/24"))},
		"no tun":     {Mode: NAT, Pools: p},
		"long iface": {Mode: NAT, TUN: "t", Interface: "abcdefghijklmnop", Pools: p},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestUndoRestoresWhatForwardingRewrote: flipping the global forwarding
// switch makes the kernel rewrite every interface's and the default
// forwarding flag, and for IPv4 conf/all/accept_redirects; undo must put
// those back too, not leave what the kernel chose when the switch went back
// (accept_redirects on, on a host hardened with it off).
func TestUndoRestoresWhatForwardingRewrote(t *testing.T) {
	inNewNetns(t, func() {
		if readSysctl(t, sysctlForward4) != "0" || readSysctl(t, sysctlForward6) != "0" {
			t.Skip("a fresh namespace should start with forwarding off")
		}
		want := map[string]string{
			"/proc/sys/net/ipv4/conf/all/accept_redirects": "0",
			"/proc/sys/net/ipv4/conf/default/forwarding":   "1",
			"/proc/sys/net/ipv4/conf/lo/forwarding":        "1",
			"/proc/sys/net/ipv6/conf/default/forwarding":   "1",
			"/proc/sys/net/ipv6/conf/lo/forwarding":        "1",
		}
		for path, v := range want {
			if err := os.WriteFile(path, []byte(v), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		undo, err := Apply(Config{Mode: Routed, TUN: "twoway0", Pools: []netip.Prefix{
			netip.MustParsePrefix("198.18.100.0/24"), netip.MustParsePrefix("2001:db8:100::/64")}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := undo(); err != nil {
			t.Fatal(err)
		}
		if readSysctl(t, sysctlForward4) != "0" || readSysctl(t, sysctlForward6) != "0" {
			t.Error("forwarding not restored")
		}
		for path, v := range want {
			if got := readSysctl(t, path); got != v {
				t.Errorf("%s = %s after undo, want %s as before Apply", path, got, v)
			}
		}
	})
}

// TestApplyRoutedRemovesStaleNATTable: a NAT table left by a crashed run in
// NAT mode would masquerade the pools through a whole routed run.
func TestApplyRoutedRemovesStaleNATTable(t *testing.T) {
	inNewNetns(t, func() {
		cfg := Config{Mode: NAT, TUN: "twoway0", Pools: []netip.Prefix{netip.MustParsePrefix("198.18.100.0/24")}}
		if _, err := Apply(cfg, nil); err != nil { // the crashed run
			t.Fatal(err)
		}
		cfg.Mode, cfg.LANToClients = Routed, true
		undo, err := Apply(cfg, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer undo()
		c, err := nftables.New()
		if err != nil {
			t.Fatal(err)
		}
		tables, err := c.ListTablesOfFamily(nftables.TableFamilyINet)
		if err != nil {
			t.Fatal(err)
		}
		for _, tb := range tables {
			if tb.Name == TableName {
				t.Error("stale NAT table still there in routed mode")
			}
		}
	})
}

// TestWarnsAboutRADefaultRoute: turning IPv6 forwarding on makes an
// interface with accept_ra=1 ignore router advertisements; when its default
// route came from one, the gateway says so.
func TestWarnsAboutRADefaultRoute(t *testing.T) {
	inNewNetns(t, func() {
		la := netlink.NewLinkAttrs()
		la.Name = "twup0"
		if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "twup1"}); err != nil {
			t.Fatal(err)
		}
		link, err := netlink.LinkByName("twup0")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile("/proc/sys/net/ipv6/conf/twup0/accept_ra", []byte("1"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := netlink.LinkSetUp(link); err != nil {
			t.Fatal(err)
		}
		addr, _ := netlink.ParseAddr("2001:db8:1::2/64")
		if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: addr.IPNet, Flags: unix.IFA_F_NODAD}); err != nil {
			t.Fatal(err)
		}
		_, any6, _ := net.ParseCIDR("::/0")
		if err := netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: any6, Gw: net.ParseIP("2001:db8:1::1"), Protocol: unix.RTPROT_RA}); err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		logger := slog.New(slog.NewTextHandler(&buf, nil))
		undo, err := Apply(Config{Mode: Routed, TUN: "twoway0", Pools: []netip.Prefix{netip.MustParsePrefix("2001:db8:100::/64")}}, logger)
		if err != nil {
			t.Fatal(err)
		}
		defer undo()
		if out := buf.String(); !strings.Contains(out, "ignore router advertisements") || !strings.Contains(out, "interface=twup0") {
			t.Fatalf("no warning about twup0's advertised default route:\n%s", out)
		}
	})
}
