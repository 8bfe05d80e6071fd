package tunnel

import (
	"context"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/twoway/twoway/tun"
	"github.com/twoway/twoway/tun/tuntest"
)

// TestVPNPersist: with Persist, the device configuration outlives the
// session: a gateway restart that pushes the same configuration changes
// nothing on the host, a different one replaces it, and Stop undoes it.
func TestVPNPersist(t *testing.T) {
	f := newFixture(t)
	dir := t.TempDir()
	state := filepath.Join(dir, "leases.json")
	gw := startVPNGateway(t, f, nil, false, state, "")
	addr := gw.srv.Addr().String()

	// Bob holds the first address, so alice's is not what a fresh pool
	// would give her.
	bob := startVPNClient(t, f, newCreds(t, f.h.ClientCA.Client(t, "bob"), f.h.ServerBundle()), addr)
	waitFor(t, bob.up, "bob up")
	alice := startPersistentClient(t, f, addr)
	first := waitFor(t, alice.up, "alice up")
	bob.c.Stop()

	gw.srv.Stop()
	waitFor(t, alice.down, "alice's VPN down after the gateway stopped")
	if applied, undone, active := alice.conf.state(); applied != 1 || undone != 0 || !active {
		t.Fatalf("while reconnecting: %d applies, %d undos, active %v; want the configuration kept", applied, undone, active)
	}
	if kept, ok := alice.c.KeptVPN(); !ok || !sameConfig(kept, first) {
		t.Fatalf("KeptVPN while reconnecting: %+v, %v; want %+v", kept, ok, first)
	}

	// Same gateway, same lease: the kept configuration is used as it is.
	gw2 := startVPNGateway(t, f, nil, false, state, addr)
	second := waitFor(t, alice.up, "alice up again")
	if !sameConfig(first, second) {
		t.Fatalf("configuration changed across the restart: %+v, then %+v", first, second)
	}
	if applied, undone, _ := alice.conf.state(); applied != 1 || undone != 0 {
		t.Fatalf("same configuration: %d applies, %d undos; want 1, 0", applied, undone)
	}
	if _, ok := alice.c.KeptVPN(); ok {
		t.Fatal("KeptVPN reports a kept configuration while the session uses it")
	}
	ping := tuntest.ICMPEcho(addrOf(second, false), lanHost, 9, 9, nil)
	alice.dev.Inbound <- ping
	expectPacket(t, gw2.lan.Outbound, ping, "packet through the restarted gateway")

	// A gateway with a fresh lease file gives her another address: the
	// kept configuration is replaced.
	gw2.srv.Stop()
	waitFor(t, alice.down, "alice's VPN down again")
	gw3 := startVPNGateway(t, f, nil, false, filepath.Join(dir, "other.json"), addr)
	third := waitFor(t, alice.up, "alice up at the third gateway")
	if addrOf(third, false) == addrOf(first, false) {
		t.Fatalf("the third gateway gave the same address %v", addrOf(third, false))
	}
	if applied, undone, active := alice.conf.state(); applied != 2 || undone != 1 || !active {
		t.Fatalf("different configuration: %d applies, %d undos, active %v; want 2, 1, true", applied, undone, active)
	}
	ping = tuntest.ICMPEcho(addrOf(third, false), lanHost, 9, 10, nil)
	alice.dev.Inbound <- ping
	expectPacket(t, gw3.lan.Outbound, ping, "packet through the third gateway")

	alice.c.Stop()
	if _, undone, active := alice.conf.state(); undone != 2 || active {
		t.Fatalf("after Stop: %d undos, active %v; want the configuration undone", undone, active)
	}
}

// TestVPNPersistFailsClosed: a configuration kept while the client
// reconnects stays in place through a session without VPN (a gateway that
// no longer offers it), and is undone by Stop.
func TestVPNPersistFailsClosed(t *testing.T) {
	f := newFixture(t)
	gw := startVPNGateway(t, f, nil, false, "", "")
	addr := gw.srv.Addr().String()
	alice := startPersistentClient(t, f, addr)
	waitFor(t, alice.up, "alice up")
	gw.srv.Stop()
	waitFor(t, alice.down, "alice's VPN down")

	cfg := f.serverConfig(nil)
	cfg.Listen = addr
	startServer(t, cfg)
	deadline := time.Now().Add(10 * time.Second)
	for {
		cs, err := alice.c.session(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if cs.info.VPN == nil {
			break // the session at the gateway without VPN
		}
		if time.Now().After(deadline) {
			t.Fatal("no session at the gateway without VPN")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if applied, undone, active := alice.conf.state(); applied != 1 || undone != 0 || !active {
		t.Fatalf("at a gateway without VPN: %d applies, %d undos, active %v; want the configuration kept", applied, undone, active)
	}
	alice.c.Stop()
	if applied, undone, active := alice.conf.state(); applied != 1 || undone != 1 || active {
		t.Fatalf("after Stop: %d applies, %d undos, active %v", applied, undone, active)
	}
}

func startPersistentClient(t *testing.T, f *fixture, addr string) *vpnClient {
	t.Helper()
	vc := &vpnClient{dev: tuntest.New(tuntest.Options{Name: "tw0"}), conf: &fakeConfigurator{}, up: make(chan tun.Config, 8), down: make(chan struct{}, 8)}
	cfg := f.clientConfig(addr)
	cfg.VPN = &ClientVPN{
		Device: vc.dev, Configurator: vc.conf, Persist: true,
		OnUp:   func(c tun.Config) { vc.up <- c },
		OnDown: func() { vc.down <- struct{}{} },
	}
	vc.c = startClient(t, cfg)
	return vc
}

// A kept full-tunnel configuration gives way to a dial to a gateway its
// routes would swallow, but not to the gateway it bypasses or to one
// outside its routes.
func TestKeptConfigGivesWayToDial(t *testing.T) {
	undone := 0
	full := tun.Config{
		Routes: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")},
		Bypass: []netip.Addr{netip.MustParseAddr("198.18.0.1")},
	}
	split := tun.Config{Routes: []netip.Prefix{netip.MustParsePrefix("198.19.0.0/16")}}
	c := &Client{cfg: ClientConfig{VPN: &ClientVPN{Persist: true}}, log: testLogger()}
	for _, tc := range []struct {
		cfg     tun.Config
		dial    string
		undoes  bool
		comment string
	}{
		{full, "198.18.0.1:8443", false, "the bypassed gateway"},
		{full, "[::ffff:198.18.0.1]:8443", false, "the bypassed gateway, v4-mapped"},
		{full, "198.18.0.7:8443", true, "another gateway inside the full tunnel"},
		{full, "[2001:db8::7]:8443", false, "an IPv6 gateway: the full tunnel is IPv4 only"},
		{split, "198.18.0.7:8443", false, "a gateway outside the split routes"},
		{split, "198.19.3.3:8443", true, "a gateway inside the split routes"},
	} {
		before := undone
		c.kept = &appliedConfig{cfg: tc.cfg, undo: func() error { undone++; return nil }}
		if err := c.beforeDial(context.Background(), "tcp", tc.dial, nil); err != nil {
			t.Fatal(err)
		}
		if got := undone > before; got != tc.undoes || (c.kept == nil) != tc.undoes {
			t.Errorf("%s (%s): undone %v, kept %v; want undone %v", tc.comment, tc.dial, got, c.kept != nil, tc.undoes)
		}
	}
}

func TestSameConfig(t *testing.T) {
	a := tun.Config{
		Addresses: []netip.Prefix{netip.MustParsePrefix("198.18.100.2/24")}, MTU: 1400,
		Routes: []netip.Prefix{netip.MustParsePrefix("198.18.0.0/24")}, DNS: []netip.Addr{netip.MustParseAddr("198.18.0.53")},
		SearchDomains: []string{"corp.example"}, Bypass: []netip.Addr{netip.MustParseAddr("198.18.0.1")},
	}
	clone := func() tun.Config {
		b := a
		b.Addresses, b.Routes, b.DNS = slices.Clone(a.Addresses), slices.Clone(a.Routes), slices.Clone(a.DNS)
		b.SearchDomains, b.Bypass = slices.Clone(a.SearchDomains), slices.Clone(a.Bypass)
		return b
	}
	if !sameConfig(a, clone()) {
		t.Fatal("a configuration differs from its copy")
	}
	for name, change := range map[string]func(*tun.Config){
		"mtu":     func(c *tun.Config) { c.MTU = 1380 },
		"address": func(c *tun.Config) { c.Addresses[0] = netip.MustParsePrefix("198.18.100.3/24") },
		"route":   func(c *tun.Config) { c.Routes = append(c.Routes, netip.MustParsePrefix("198.18.1.0/24")) },
		"dns":     func(c *tun.Config) { c.DNS = nil },
		"search":  func(c *tun.Config) { c.SearchDomains[0] = "other.example" },
		"bypass":  func(c *tun.Config) { c.Bypass = nil },
	} {
		b := clone()
		change(&b)
		if sameConfig(a, b) {
			t.Errorf("a different %s counts as the same configuration", name)
		}
	}
}
