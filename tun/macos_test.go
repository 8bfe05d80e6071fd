package tun

import (
	"context"
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fullConfig is a dual-stack full tunnel with both gateway addresses
// bypassed and DNS for everything.
func fullConfig() Config {
	return Config{
		Addresses:     pfx("198.18.0.2/24", "2001:db8::2/64"),
		MTU:           1400,
		Routes:        pfx("0.0.0.0/0", "::/0"),
		Bypass:        addrs("203.0.113.7", "2001:db8:ffff::7"),
		DNS:           addrs("198.18.0.53"),
		SearchDomains: []string{"corp.example"},
	}
}

// macOutputs is what a Mac with Wi-Fi and a USB Ethernet adapter prints.
var macOutputs = map[string]string{
	"route -n get -inet 203.0.113.7": `   route to: 203.0.113.7
destination: default
       mask: default
    gateway: 192.168.1.1
  interface: en0
      flags: <UP,GATEWAY,DONE,STATIC,PRFCLONING>
 recvpipe  sendpipe  ssthresh  rtt,msec    rttvar  hopcount      mtu     expire
       0         0         0         0         0         0      1500         0
`,
	"route -n get -inet6 2001:db8:ffff::7": `   route to: 2001:db8:ffff::7
destination: default
       mask: default
    gateway: fe80::1%en0
  interface: en0
`,
	"networksetup -listallnetworkservices": `An asterisk (*) denotes that a network service is disabled.
Wi-Fi
USB 10/100/1000 LAN
*Bluetooth PAN
`,
	"networksetup -getdnsservers Wi-Fi":                  "192.168.1.1\n2001:db8:aaaa::1\n",
	"networksetup -getsearchdomains Wi-Fi":               "There aren't any Search Domains set on Wi-Fi.\n",
	"networksetup -getdnsservers USB 10/100/1000 LAN":    "There aren't any DNS Servers set on USB 10/100/1000 LAN.\n",
	"networksetup -getsearchdomains USB 10/100/1000 LAN": "lan.example\nhome.example\n",
}

var macFullApply = []string{
	// discovery
	"route -n get -inet 203.0.113.7",
	"route -n get -inet6 2001:db8:ffff::7",
	"networksetup -listallnetworkservices",
	"networksetup -getdnsservers Wi-Fi",
	"networksetup -getsearchdomains Wi-Fi",
	"networksetup -getdnsservers USB 10/100/1000 LAN",
	"networksetup -getsearchdomains USB 10/100/1000 LAN",
	// changes
	"ifconfig utun9 mtu 1400",
	"ifconfig utun9 inet 198.18.0.2/24 198.18.0.2 alias",
	"route -q -n add -inet 198.18.0.0/24 -interface utun9",
	"ifconfig utun9 inet6 2001:db8::2 prefixlen 64 alias",
	"ifconfig utun9 up",
	"route -q -n add -inet 203.0.113.7/32 192.168.1.1",
	"route -q -n add -inet6 2001:db8:ffff::7/128 fe80::1%en0",
	"route -q -n add -inet 0.0.0.0/1 -interface utun9",
	"route -q -n add -inet 128.0.0.0/1 -interface utun9",
	"route -q -n add -inet6 ::/1 -interface utun9",
	"route -q -n add -inet6 8000::/1 -interface utun9",
	"networksetup -setdnsservers Wi-Fi 198.18.0.53",
	"networksetup -setsearchdomains Wi-Fi corp.example",
	"networksetup -setdnsservers USB 10/100/1000 LAN 198.18.0.53",
	"networksetup -setsearchdomains USB 10/100/1000 LAN corp.example",
}

var macFullUndo = []string{
	"networksetup -setsearchdomains USB 10/100/1000 LAN lan.example home.example",
	"networksetup -setdnsservers USB 10/100/1000 LAN Empty",
	"networksetup -setsearchdomains Wi-Fi Empty",
	"networksetup -setdnsservers Wi-Fi 192.168.1.1 2001:db8:aaaa::1",
	"route -n delete -inet6 8000::/1 -interface utun9",
	"route -n delete -inet6 ::/1 -interface utun9",
	"route -n delete -inet 128.0.0.0/1 -interface utun9",
	"route -n delete -inet 0.0.0.0/1 -interface utun9",
	"route -n delete -inet6 2001:db8:ffff::7/128 fe80::1%en0",
	"route -n delete -inet 203.0.113.7/32 192.168.1.1",
	"ifconfig utun9 inet6 2001:db8::2 -alias",
	"route -n delete -inet 198.18.0.0/24 -interface utun9",
	"ifconfig utun9 inet 198.18.0.2 -alias",
}

func newMacConfigurator(t *testing.T, stateFile string, rec *recorder) *configurator {
	t.Helper()
	c := newTestConfigurator(t, stateFile, &execPlatform{run: rec.run, planCmds: macOSPlan})
	c.opts.Run = rec.run
	return c
}

func assertCommands(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s ran:\n  %s\nwant:\n  %s", what, strings.Join(got, "\n  "), strings.Join(want, "\n  "))
	}
}

func TestMacOSFullTunnelCommands(t *testing.T) {
	rec := &recorder{outputs: macOutputs}
	c := newMacConfigurator(t, filepath.Join(t.TempDir(), "state.json"), rec)
	undo, err := c.Apply(context.Background(), "utun9", fullConfig())
	if err != nil {
		t.Fatal(err)
	}
	assertCommands(t, "apply", rec.take(), macFullApply)
	if err := undo(); err != nil {
		t.Fatal(err)
	}
	assertCommands(t, "undo", rec.take(), macFullUndo)
}

func TestMacOSSplitDNSUsesScutil(t *testing.T) {
	cfg := validConfig()
	cmds, err := planMacOS("utun9", cfg, macDiscovery{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, c := range cmds {
		got = append(got, c.Do.String())
	}
	assertCommands(t, "plan", got, []string{
		"ifconfig utun9 mtu 1400",
		"ifconfig utun9 inet 198.18.0.2/24 198.18.0.2 alias",
		"route -q -n add -inet 198.18.0.0/24 -interface utun9",
		"ifconfig utun9 inet6 2001:db8::2 prefixlen 64 alias",
		"ifconfig utun9 up",
		"route -q -n add -inet 198.19.0.0/16 -interface utun9",
		"route -q -n add -inet6 2001:db8:1::/48 -interface utun9",
		"scutil <<< d.init; d.add ServerAddresses * 198.18.0.53; d.add SearchDomains * corp.example; " +
			"d.add SupplementalMatchDomains * corp.example; set State:/Network/Service/twoway-utun9/DNS; quit",
	})
	last := cmds[len(cmds)-1]
	if last.Undo == nil || last.Undo.Stdin != "remove State:/Network/Service/twoway-utun9/DNS\nquit\n" || last.BestEffort {
		t.Fatalf("scutil undo = %+v", last)
	}
}

// TestMacOSRollbackAndCrashCleanup: a failing route add undoes everything
// before it in reverse; after a crash, the next run undoes what was
// recorded, shrugging off interface-bound steps that vanished with utun but
// keeping a failed DNS restore for the next attempt.
func TestMacOSRollbackAndCrashCleanup(t *testing.T) {
	ctx := context.Background()
	stateFile := filepath.Join(t.TempDir(), "state.json")
	rec := &recorder{outputs: macOutputs, fail: map[string]bool{"route -q -n add -inet6 ::/1 -interface utun9": true}}
	c := newMacConfigurator(t, stateFile, rec)
	if _, err := c.Apply(ctx, "utun9", fullConfig()); err == nil || !strings.Contains(err.Error(), "::/1") {
		t.Fatalf("Apply = %v, want the failed route named", err)
	}
	i := slices.Index(macFullApply, "route -q -n add -inet6 ::/1 -interface utun9")
	want := slices.Clone(macFullApply[:i+1])
	for _, u := range macFullUndo {
		// Undo exactly the changes made before the failure.
		if strings.Contains(u, "::/1") || strings.Contains(u, "8000::/1") || strings.HasPrefix(u, "networksetup") {
			continue
		}
		want = append(want, u)
	}
	assertCommands(t, "failed apply", rec.take(), want)

	rec.fail = nil
	if _, err := c.Apply(ctx, "utun9", fullConfig()); err != nil {
		t.Fatal(err)
	}
	rec.take()
	// Crash. In the next process utun9 is gone and one service refuses.
	rec2 := &recorder{fail: map[string]bool{
		"ifconfig utun9 inet6 2001:db8::2 -alias":                        true,
		"route -n delete -inet6 8000::/1 -interface utun9":               true,
		"networksetup -setdnsservers Wi-Fi 192.168.1.1 2001:db8:aaaa::1": true,
	}}
	next := newMacConfigurator(t, stateFile, rec2)
	err := next.Cleanup(ctx)
	if err == nil || !strings.Contains(err.Error(), "networksetup -setdnsservers Wi-Fi") {
		t.Fatalf("Cleanup = %v, want only the DNS restore reported", err)
	}
	assertCommands(t, "cleanup", rec2.take(), macFullUndo)
	rec2.fail = nil
	if err := next.Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	assertCommands(t, "second cleanup", rec2.take(), []string{"networksetup -setdnsservers Wi-Fi 192.168.1.1 2001:db8:aaaa::1"})
}

func TestMacOSBypassRefusesTunnelRoute(t *testing.T) {
	rec := &recorder{outputs: map[string]string{
		"route -n get -inet 203.0.113.7": "gateway: 198.18.0.1\ninterface: utun9\n",
	}}
	cfg := fullConfig()
	cfg.Bypass = addrs("203.0.113.7")
	if _, err := macOSPlan(context.Background(), rec.run, "utun9", cfg); err == nil || !strings.Contains(err.Error(), "already routed through utun9") {
		t.Fatalf("plan = %v", err)
	}
}

func TestParseMacRouteGet(t *testing.T) {
	h, err := parseMacRouteGet(macOutputs["route -n get -inet 203.0.113.7"])
	if err != nil || h.Gateway.String() != "192.168.1.1" || h.Interface != "en0" {
		t.Fatalf("= %+v, %v", h, err)
	}
	// A point-to-point default route has no gateway address.
	h, err = parseMacRouteGet("   route to: default\n    gateway: link#14\n  interface: ppp0\n")
	if err != nil || h.Gateway.IsValid() || h.Interface != "ppp0" {
		t.Fatalf("ppp = %+v, %v", h, err)
	}
	noDNS := fullConfig()
	noDNS.DNS, noDNS.SearchDomains = nil, nil
	cmds, err := planMacOS("utun9", noDNS, macDiscovery{Hops: map[netip.Addr]macHop{
		addrs("203.0.113.7")[0]:      {Interface: "ppp0"},
		addrs("2001:db8:ffff::7")[0]: {Interface: "ppp0"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(cmds, func(c plannedCommand) bool {
		return c.Do.String() == "route -q -n add -inet 203.0.113.7/32 -interface ppp0"
	}) {
		t.Fatal("no interface bypass route for a gateway-less default")
	}
	if _, err := parseMacRouteGet("route: writing to routing socket: not in table\n"); err == nil {
		t.Fatal("no error for output without interface")
	}
	if _, err := parseMacList("** Error: The parameters were not valid.\n", true); err == nil {
		t.Fatal("no error for networksetup error output")
	}
}

// TestMacOSCleanupShrugsOffVanishedBypassRoute: the host route that keeps
// the gateway outside the tunnel is bound to the physical network, not to
// utun, so a crash followed by a network change leaves nothing to delete.
// route(8) saying "not in table" then counts as undone; any other failure
// is kept for the next attempt, or every later Apply would fail on it.
func TestMacOSCleanupShrugsOffVanishedBypassRoute(t *testing.T) {
	ctx := context.Background()
	const del = "route -n delete -inet 203.0.113.7/32 192.168.1.1"
	for _, tc := range []struct {
		name, out string
		wantErr   bool
	}{
		{"gone", "route: writing to routing socket: not in table\ndelete net 203.0.113.7: gateway 192.168.1.1: not in table", false},
		{"refused", "route: must be root to alter routing table", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stateFile := filepath.Join(t.TempDir(), "state.json")
			c := newMacConfigurator(t, stateFile, &recorder{outputs: macOutputs})
			if _, err := c.Apply(ctx, "utun9", fullConfig()); err != nil {
				t.Fatal(err)
			}
			// Crash; the next process finds the route gone (or cannot touch it).
			rec := &recorder{outputs: map[string]string{del: tc.out}, fail: map[string]bool{del: true}}
			next := newMacConfigurator(t, stateFile, rec)
			err := next.Cleanup(ctx)
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), "203.0.113.7") {
					t.Fatalf("Cleanup = %v, want the failed route delete reported", err)
				}
				rec.take()
				rec.fail = nil
				if err := next.Cleanup(ctx); err != nil {
					t.Fatal(err)
				}
				assertCommands(t, "retry", rec.take(), []string{del})
				return
			}
			if err != nil {
				t.Fatalf("Cleanup = %v, want a route that is not there counted as removed", err)
			}
			if _, err := os.Stat(stateFile); !errors.Is(err, fs.ErrNotExist) {
				t.Fatalf("state file left behind: %v", err)
			}
			if !slices.Contains(rec.take(), del) {
				t.Fatal("the bypass route delete was not attempted")
			}
		})
	}
}
