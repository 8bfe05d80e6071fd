package tun

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var netshOutputs = map[string]string{
	"netsh interface ipv4 show route": `
Publish  Type      Met  Prefix                    Idx  Gateway/Interface Name
-------  --------  ---  ------------------------  ---  ------------------------
No       Manual    25   0.0.0.0/0                  12  192.168.1.1
No       Manual    5    0.0.0.0/0                  14  10.0.0.1
No       System    256  127.0.0.0/8                 1  Loopback Pseudo-Interface 1
No       System    256  192.168.1.0/24             12  Wi-Fi
`,
	"netsh interface ipv6 show route": `
Publish  Type      Met  Prefix                    Idx  Gateway/Interface Name
-------  --------  ---  ------------------------  ---  ------------------------
No       Manual    256  ::/0                       12  fe80::1
No       System    256  ::1/128                     1  Loopback Pseudo-Interface 1
`,
}

func planStrings(cmds []plannedCommand) (do, undo []string) {
	for _, c := range cmds {
		do = append(do, c.Do.String())
		if c.Undo != nil {
			undo = append([]string{c.Undo.String()}, undo...)
		}
	}
	return do, undo
}

func TestWindowsFullTunnelCommands(t *testing.T) {
	rec := &recorder{outputs: netshOutputs}
	cfg := fullConfig()
	cfg.DNS = addrs("198.18.0.53", "198.18.0.54", "2001:db8::53")
	cmds, err := windowsPlan(context.Background(), rec.run, "twoway", cfg)
	if err != nil {
		t.Fatal(err)
	}
	assertCommands(t, "discovery", rec.take(), []string{
		"netsh interface ipv4 show route",
		"netsh interface ipv6 show route",
	})
	do, undo := planStrings(cmds)
	assertCommands(t, "apply", do, []string{
		"netsh interface ipv4 set subinterface interface=twoway mtu=1400 store=active",
		"netsh interface ipv6 set subinterface interface=twoway mtu=1400 store=active",
		"netsh interface ipv4 add address name=twoway address=198.18.0.2 mask=255.255.255.0 store=active",
		"netsh interface ipv6 add address interface=twoway address=2001:db8::2/64 store=active",
		"netsh interface ipv4 add route prefix=203.0.113.7/32 interface=14 nexthop=10.0.0.1 store=active",
		"netsh interface ipv6 add route prefix=2001:db8:ffff::7/128 interface=12 nexthop=fe80::1 store=active",
		"netsh interface ipv4 add route prefix=0.0.0.0/1 interface=twoway nexthop=0.0.0.0 store=active",
		"netsh interface ipv4 add route prefix=128.0.0.0/1 interface=twoway nexthop=0.0.0.0 store=active",
		"netsh interface ipv6 add route prefix=::/1 interface=twoway nexthop=:: store=active",
		"netsh interface ipv6 add route prefix=8000::/1 interface=twoway nexthop=:: store=active",
		"netsh interface ipv4 set dnsservers name=twoway source=static address=198.18.0.53 register=none validate=no",
		"netsh interface ipv4 add dnsservers name=twoway address=198.18.0.54 index=2 validate=no",
		"netsh interface ipv6 set dnsservers name=twoway source=static address=2001:db8::53 register=none validate=no",
		"powershell.exe -NoProfile -NonInteractive -Command Add-DnsClientNrptRule -Namespace '.' -NameServers '198.18.0.53','198.18.0.54','2001:db8::53' -Comment 'twoway twoway'",
		"powershell.exe -NoProfile -NonInteractive -Command Set-DnsClient -InterfaceAlias 'twoway' -ConnectionSpecificSuffix 'corp.example'",
	})
	assertCommands(t, "undo", undo, []string{
		"powershell.exe -NoProfile -NonInteractive -Command Get-DnsClientNrptRule | Where-Object { $_.Comment -eq 'twoway twoway' } | Remove-DnsClientNrptRule -Force",
		"netsh interface ipv6 set dnsservers name=twoway source=static address=none register=none validate=no",
		"netsh interface ipv4 set dnsservers name=twoway source=static address=none register=none validate=no",
		"netsh interface ipv6 delete route prefix=8000::/1 interface=twoway nexthop=:: store=active",
		"netsh interface ipv6 delete route prefix=::/1 interface=twoway nexthop=:: store=active",
		"netsh interface ipv4 delete route prefix=128.0.0.0/1 interface=twoway nexthop=0.0.0.0 store=active",
		"netsh interface ipv4 delete route prefix=0.0.0.0/1 interface=twoway nexthop=0.0.0.0 store=active",
		"netsh interface ipv6 delete route prefix=2001:db8:ffff::7/128 interface=12 nexthop=fe80::1 store=active",
		"netsh interface ipv4 delete route prefix=203.0.113.7/32 interface=14 nexthop=10.0.0.1 store=active",
		"netsh interface ipv6 delete address interface=twoway address=2001:db8::2",
		"netsh interface ipv4 delete address name=twoway address=198.18.0.2",
	})
	// Only what outlives the adapter must succeed on undo.
	for _, c := range cmds {
		if c.Undo == nil {
			continue
		}
		outlives := strings.Contains(c.Do.String(), "203.0.113.7") || strings.Contains(c.Do.String(), "2001:db8:ffff::7") || strings.Contains(c.Do.String(), "Nrpt")
		if c.BestEffort == outlives {
			t.Errorf("%s: BestEffort=%v", c.Do, c.BestEffort)
		}
	}
}

func TestWindowsSplitDNSUsesNRPT(t *testing.T) {
	cfg := validConfig()
	cfg.SearchDomains = []string{"corp.example", "lab.example"}
	cmds, err := planWindows("twoway", cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	do, _ := planStrings(cmds)
	assertCommands(t, "dns", do[len(do)-2:], []string{
		"powershell.exe -NoProfile -NonInteractive -Command Add-DnsClientNrptRule -Namespace '.corp.example','.lab.example' -NameServers '198.18.0.53' -Comment 'twoway twoway'",
		"powershell.exe -NoProfile -NonInteractive -Command Set-DnsClient -InterfaceAlias 'twoway' -ConnectionSpecificSuffix 'corp.example'",
	})
	for _, s := range do {
		if strings.Contains(s, "dnsservers") {
			t.Errorf("split DNS set interface servers: %s", s)
		}
	}
}

func TestWindowsBypassNeedsDefaultRoute(t *testing.T) {
	rec := &recorder{outputs: map[string]string{"netsh interface ipv4 show route": "No  System  256  127.0.0.0/8  1  Loopback Pseudo-Interface 1\n"}}
	cfg := fullConfig()
	cfg.Addresses, cfg.Routes, cfg.Bypass = pfx("198.18.0.2/24"), pfx("0.0.0.0/0"), addrs("203.0.113.7")
	if _, err := windowsPlan(context.Background(), rec.run, "twoway", cfg); err == nil || !strings.Contains(err.Error(), "no IPv4 default route") {
		t.Fatalf("plan = %v", err)
	}
}

// TestWindowsBypassUndoToleratesVanishedRoute: the bypass route lives on
// the physical adapter; after a crash and a network change netsh answers
// its delete with "Element not found.", which must count as undone.
func TestWindowsBypassUndoToleratesVanishedRoute(t *testing.T) {
	ctx := context.Background()
	rec := &recorder{outputs: netshOutputs}
	stateFile := filepath.Join(t.TempDir(), "state.json")
	c := newTestConfigurator(t, stateFile, &execPlatform{run: rec.run, planCmds: windowsPlan})
	c.opts.Run = rec.run
	if _, err := c.Apply(ctx, "twoway", fullConfig()); err != nil {
		t.Fatal(err)
	}
	const del = "netsh interface ipv4 delete route prefix=203.0.113.7/32 interface=14 nexthop=10.0.0.1 store=active"
	next := &recorder{outputs: map[string]string{del: "Element not found.\r\n"}, fail: map[string]bool{del: true}}
	nc := newTestConfigurator(t, stateFile, &execPlatform{run: next.run, planCmds: windowsPlan})
	nc.opts.Run = next.run
	if err := nc.Cleanup(ctx); err != nil {
		t.Fatalf("Cleanup = %v, want a route that is not there counted as removed", err)
	}
	if !slices.Contains(next.take(), del) {
		t.Fatal("the bypass route delete was not attempted")
	}
	if _, err := os.Stat(stateFile); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("state file left behind: %v", err)
	}
}
