package tun

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Windows configuration as command lists, pure and tested on every OS;
// configure_windows.go only selects it.
//
//   - MTU, addresses, routes: netsh interface ipv4|ipv6 with store=active, so
//     nothing survives a reboot; the wintun adapter takes them with it when
//     it is closed;
//   - Bypass host routes: via the default route with the lowest metric that
//     `netsh interface ipvX show route` lists before the tunnel;
//   - DNS: the interface's servers (full tunnel), and a Name Resolution
//     Policy Table rule tagged "twoway DEV" that sends the search domains
//     (split) or everything (namespace ".") to the tunnel's servers. Windows
//     has one connection-specific suffix per interface: the first search
//     domain; names under the others resolve when fully qualified.

// winHop is a default route netsh listed.
type winHop struct {
	Index   int
	Gateway netip.Addr
	Metric  int
}

// netshGone is what netsh says when asked to delete something that is not
// there (a route that left with its network adapter).
const netshGone = "Element not found"

// windowsPlan inspects the system through r and plans cfg for dev.
func windowsPlan(ctx context.Context, r Runner, dev string, cfg Config) ([]plannedCommand, error) {
	hops := make(map[int]winHop) // by IP version
	for _, a := range cfg.BypassRoutes() {
		v := ipVersion(a)
		if _, ok := hops[v]; ok {
			continue
		}
		out, err := output(ctx, r, Command{Name: "netsh", Args: []string{"interface", "ipv" + strconv.Itoa(v), "show", "route"}})
		if err != nil {
			return nil, err
		}
		h, err := parseNetshDefaultRoute(out, v)
		if err != nil {
			return nil, fmt.Errorf("bypass %s: %w", a, err)
		}
		hops[v] = h
	}
	return planWindows(dev, cfg, hops)
}

// planWindows returns the commands that apply cfg to dev, given the
// pre-existing default route per IP version. cfg must be valid.
func planWindows(dev string, cfg Config, hops map[int]winHop) ([]plannedCommand, error) {
	netsh := func(v int, args ...string) Command {
		return Command{Name: "netsh", Args: append([]string{"interface", "ipv" + strconv.Itoa(v)}, args...)}
	}
	has := map[int]bool{}
	for _, p := range cfg.Addresses {
		has[ipVersion(p.Addr())] = true
	}

	var out []plannedCommand
	for _, v := range []int{4, 6} {
		if has[v] {
			out = append(out, plannedCommand{Do: netsh(v, "set", "subinterface", "interface="+dev, "mtu="+strconv.Itoa(cfg.MTU), "store=active")})
		}
	}
	for _, p := range cfg.Addresses {
		a := p.Addr().String()
		if p.Addr().Is4() {
			mask := net.IP(net.CIDRMask(p.Bits(), 32)).String()
			out = append(out, plannedCommand{
				Do:         netsh(4, "add", "address", "name="+dev, "address="+a, "mask="+mask, "store=active"),
				Undo:       ptr(netsh(4, "delete", "address", "name="+dev, "address="+a)),
				BestEffort: true,
			})
			continue
		}
		out = append(out, plannedCommand{
			Do:         netsh(6, "add", "address", "interface="+dev, "address="+p.String(), "store=active"),
			Undo:       ptr(netsh(6, "delete", "address", "interface="+dev, "address="+a)),
			BestEffort: true,
		})
	}
	for _, a := range cfg.BypassRoutes() {
		v := ipVersion(a)
		h, ok := hops[v]
		if !ok {
			return nil, fmt.Errorf("bypass %s: no IPv%d default route to keep it outside the tunnel", a, v)
		}
		args := []string{"prefix=" + netip.PrefixFrom(a, a.BitLen()).String(), "interface=" + strconv.Itoa(h.Index), "nexthop=" + h.Gateway.String(), "store=active"}
		out = append(out, plannedCommand{
			Do:   netsh(v, append([]string{"add", "route"}, args...)...),
			Undo: ptr(netsh(v, append([]string{"delete", "route"}, args...)...)),
			Gone: []string{netshGone},
		})
	}
	for _, r := range cfg.KernelRoutes() {
		v := ipVersion(r.Addr())
		nexthop := "0.0.0.0"
		if v == 6 {
			nexthop = "::"
		}
		args := []string{"prefix=" + r.String(), "interface=" + dev, "nexthop=" + nexthop, "store=active"}
		out = append(out, plannedCommand{
			Do:         netsh(v, append([]string{"add", "route"}, args...)...),
			Undo:       ptr(netsh(v, append([]string{"delete", "route"}, args...)...)),
			BestEffort: true,
		})
	}

	if len(cfg.DNS) == 0 {
		return out, nil
	}
	all := cfg.dnsGetsAll()
	if all {
		// The interface's own servers; the NRPT rule below is what
		// makes Windows prefer them over other interfaces'.
		idx := map[int]int{}
		for _, s := range cfg.DNS {
			v := ipVersion(s)
			idx[v]++
			if idx[v] == 1 {
				out = append(out, plannedCommand{
					Do:         netsh(v, "set", "dnsservers", "name="+dev, "source=static", "address="+s.String(), "register=none", "validate=no"),
					Undo:       ptr(netsh(v, "set", "dnsservers", "name="+dev, "source=static", "address=none", "register=none", "validate=no")),
					BestEffort: true,
				})
				continue
			}
			out = append(out, plannedCommand{Do: netsh(v, "add", "dnsservers", "name="+dev, "address="+s.String(), "index="+strconv.Itoa(idx[v]), "validate=no")})
		}
	}
	domains := cfg.dnsDomains()
	namespaces := []string{"'.'"}
	if !all {
		namespaces = namespaces[:0]
		for _, d := range domains {
			namespaces = append(namespaces, "'."+d+"'")
		}
	}
	var servers []string
	for _, s := range cfg.DNS {
		servers = append(servers, "'"+s.String()+"'")
	}
	comment := "'twoway " + dev + "'"
	out = append(out, plannedCommand{
		Do: powershell("Add-DnsClientNrptRule -Namespace " + strings.Join(namespaces, ",") +
			" -NameServers " + strings.Join(servers, ",") + " -Comment " + comment),
		Undo: ptr(powershell("Get-DnsClientNrptRule | Where-Object { $_.Comment -eq " + comment +
			" } | Remove-DnsClientNrptRule -Force")),
	})
	if len(domains) > 0 {
		out = append(out, plannedCommand{
			Do: powershell("Set-DnsClient -InterfaceAlias '" + dev + "' -ConnectionSpecificSuffix '" + domains[0] + "'"),
		})
	}
	return out, nil
}

// powershell runs script; its inputs are validated names and IP literals, so
// single quotes are safe.
func powershell(script string) Command {
	return Command{Name: "powershell.exe", Args: []string{"-NoProfile", "-NonInteractive", "-Command", script}}
}

// parseNetshDefaultRoute picks the default route (0.0.0.0/0 or ::/0) with the
// lowest metric and a gateway from `netsh interface ipvX show route`:
//
//	Publish  Type      Met  Prefix                    Idx  Gateway/Interface Name
//	-------  --------  ---  ------------------------  ---  ------------------------
//	No       Manual    0    0.0.0.0/0                  12  192.168.1.1
func parseNetshDefaultRoute(out string, v int) (winHop, error) {
	want := "0.0.0.0/0"
	if v == 6 {
		want = "::/0"
	}
	var best winHop
	found := false
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 6 || f[3] != want {
			continue
		}
		metric, err1 := strconv.Atoi(f[2])
		idx, err2 := strconv.Atoi(f[4])
		gw, err3 := netip.ParseAddr(f[5])
		if err1 != nil || err2 != nil || err3 != nil || gw.IsUnspecified() {
			continue // an on-link default (no gateway) or a header
		}
		if !found || metric < best.Metric {
			best, found = winHop{Index: idx, Gateway: gw, Metric: metric}, true
		}
	}
	if !found {
		return best, fmt.Errorf("no IPv%d default route with a gateway in netsh output", v)
	}
	return best, nil
}

func ipVersion(a netip.Addr) int {
	if a.Is4() {
		return 4
	}
	return 6
}
