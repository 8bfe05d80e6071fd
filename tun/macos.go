package tun

import (
	"bufio"
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// macOS configuration as command lists. Everything here is pure or takes
// the Runner, so it compiles and is tested on every OS; configure_darwin.go
// only selects it.
//
//   - addresses, MTU, link: ifconfig (utun is point-to-point, so an IPv4
//     address is given with itself as destination plus a route for its
//     subnet);
//   - routes: route add -interface utunN; Bypass host routes via the gateway
//     `route -n get` reports for that address before the tunnel;
//   - split DNS: a per-tunnel scutil key with SupplementalMatchDomains, so only
//     names under the search domains go to the tunnel's servers;
//   - DNS for everything: networksetup on each enabled network service, the
//     previous servers and domains put back on undo (as wg-quick does).

// macHop is a path `route -n get` reported.
type macHop struct {
	Gateway   netip.Addr // invalid for an interface route
	Interface string
}

// macService is a network service with its DNS settings before the tunnel
// (nil: none set, which networksetup calls "Empty").
type macService struct {
	Name   string
	DNS    []string
	Search []string
}

// macDiscovery is what planMacOS needs to know about the system.
type macDiscovery struct {
	Hops     map[netip.Addr]macHop // for cfg.BypassRoutes()
	Services []macService          // when cfg.dnsGetsAll()
}

// macOSPlan inspects the system through r and plans cfg for dev.
func macOSPlan(ctx context.Context, r Runner, dev string, cfg Config) ([]plannedCommand, error) {
	var d macDiscovery
	for _, a := range cfg.BypassRoutes() {
		fam := "-inet"
		if a.Is6() {
			fam = "-inet6"
		}
		out, err := output(ctx, r, Command{Name: "route", Args: []string{"-n", "get", fam, a.String()}})
		if err != nil {
			return nil, fmt.Errorf("bypass %s: no route to it to keep outside the tunnel: %w", a, err)
		}
		h, err := parseMacRouteGet(out)
		if err != nil {
			return nil, fmt.Errorf("bypass %s: %w", a, err)
		}
		if h.Interface == dev {
			return nil, fmt.Errorf("bypass %s: already routed through %s", a, dev)
		}
		if d.Hops == nil {
			d.Hops = make(map[netip.Addr]macHop)
		}
		d.Hops[a] = h
	}
	if cfg.dnsGetsAll() {
		out, err := output(ctx, r, Command{Name: "networksetup", Args: []string{"-listallnetworkservices"}})
		if err != nil {
			return nil, err
		}
		for _, name := range parseMacServices(out) {
			s := macService{Name: name}
			if out, err = output(ctx, r, Command{Name: "networksetup", Args: []string{"-getdnsservers", name}}); err != nil {
				return nil, err
			}
			if s.DNS, err = parseMacList(out, true); err != nil {
				return nil, fmt.Errorf("dns servers of %q: %w", name, err)
			}
			if out, err = output(ctx, r, Command{Name: "networksetup", Args: []string{"-getsearchdomains", name}}); err != nil {
				return nil, err
			}
			if s.Search, err = parseMacList(out, false); err != nil {
				return nil, fmt.Errorf("search domains of %q: %w", name, err)
			}
			d.Services = append(d.Services, s)
		}
	}
	return planMacOS(dev, cfg, d)
}

// macRouteGone is what route(8) says when asked to delete a route that is
// not there.
const macRouteGone = "not in table"

// planMacOS returns the commands that apply cfg to dev given d. cfg must be
// valid.
func planMacOS(dev string, cfg Config, d macDiscovery) ([]plannedCommand, error) {
	ifconfig := func(args ...string) Command { return Command{Name: "ifconfig", Args: append([]string{dev}, args...)} }
	route := func(args ...string) Command {
		return Command{Name: "route", Args: append([]string{"-q", "-n"}, args...)}
	}
	// An undo runs without -q, which would hide the "not in table" that
	// tells a route already gone from a real failure.
	unroute := func(args ...string) *Command {
		return &Command{Name: "route", Args: append([]string{"-n", "delete"}, args...)}
	}
	fam := func(a netip.Addr) string {
		if a.Is4() {
			return "-inet"
		}
		return "-inet6"
	}

	var out []plannedCommand
	out = append(out, plannedCommand{Do: ifconfig("mtu", strconv.Itoa(cfg.MTU))})
	for _, p := range cfg.Addresses {
		a := p.Addr().String()
		if p.Addr().Is4() {
			out = append(out, plannedCommand{
				Do:         ifconfig("inet", p.String(), a, "alias"),
				Undo:       ptr(ifconfig("inet", a, "-alias")),
				BestEffort: true,
			})
			if p.Bits() < 32 {
				n := p.Masked().String()
				out = append(out, plannedCommand{
					Do:         route("add", "-inet", n, "-interface", dev),
					Undo:       unroute("-inet", n, "-interface", dev),
					BestEffort: true,
				})
			}
			continue
		}
		out = append(out, plannedCommand{
			Do:         ifconfig("inet6", a, "prefixlen", strconv.Itoa(p.Bits()), "alias"),
			Undo:       ptr(ifconfig("inet6", a, "-alias")),
			BestEffort: true,
		})
	}
	out = append(out, plannedCommand{Do: ifconfig("up")})

	for _, a := range cfg.BypassRoutes() {
		h, ok := d.Hops[a]
		if !ok {
			return nil, fmt.Errorf("bypass %s: no route to it known", a)
		}
		host := netip.PrefixFrom(a, a.BitLen()).String()
		via := []string{"-interface", h.Interface}
		if h.Gateway.IsValid() {
			via = []string{h.Gateway.String()}
		}
		out = append(out, plannedCommand{
			Do:   route(append([]string{"add", fam(a), host}, via...)...),
			Undo: unroute(append([]string{fam(a), host}, via...)...),
			Gone: []string{macRouteGone},
		})
	}
	for _, r := range cfg.KernelRoutes() {
		out = append(out, plannedCommand{
			Do:         route("add", fam(r.Addr()), r.String(), "-interface", dev),
			Undo:       unroute(fam(r.Addr()), r.String(), "-interface", dev),
			BestEffort: true,
		})
	}

	if len(cfg.DNS) == 0 {
		return out, nil
	}
	var servers []string
	for _, s := range cfg.DNS {
		servers = append(servers, s.String())
	}
	domains := cfg.dnsDomains()
	if !cfg.dnsGetsAll() {
		key := "State:/Network/Service/twoway-" + dev + "/DNS"
		var in strings.Builder
		in.WriteString("d.init\n")
		in.WriteString("d.add ServerAddresses * " + strings.Join(servers, " ") + "\n")
		in.WriteString("d.add SearchDomains * " + strings.Join(domains, " ") + "\n")
		in.WriteString("d.add SupplementalMatchDomains * " + strings.Join(domains, " ") + "\n")
		in.WriteString("set " + key + "\nquit\n")
		out = append(out, plannedCommand{
			Do:   Command{Name: "scutil", Stdin: in.String()},
			Undo: &Command{Name: "scutil", Stdin: "remove " + key + "\nquit\n"},
		})
		return out, nil
	}
	if len(d.Services) == 0 {
		return nil, fmt.Errorf("no enabled network service to set DNS servers on")
	}
	orEmpty := func(v []string) []string {
		if len(v) == 0 {
			return []string{"Empty"}
		}
		return v
	}
	for _, s := range d.Services {
		ns := func(args ...string) Command { return Command{Name: "networksetup", Args: args} }
		out = append(out, plannedCommand{
			Do:   ns(append([]string{"-setdnsservers", s.Name}, servers...)...),
			Undo: ptr(ns(append([]string{"-setdnsservers", s.Name}, orEmpty(s.DNS)...)...)),
		})
		if len(domains) > 0 {
			out = append(out, plannedCommand{
				Do:   ns(append([]string{"-setsearchdomains", s.Name}, domains...)...),
				Undo: ptr(ns(append([]string{"-setsearchdomains", s.Name}, orEmpty(s.Search)...)...)),
			})
		}
	}
	return out, nil
}

// parseMacRouteGet reads the gateway and interface from `route -n get`.
func parseMacRouteGet(out string) (macHop, error) {
	var h macHop
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "gateway":
			a, err := netip.ParseAddr(v)
			if err != nil {
				// "link#12" and the like: an interface route.
				continue
			}
			h.Gateway = a
		case "interface":
			h.Interface = v
		}
	}
	if h.Interface == "" {
		return h, fmt.Errorf("route -n get: no interface in output %q", strings.TrimSpace(out))
	}
	if err := ValidateName("", h.Interface); err != nil {
		return h, fmt.Errorf("route -n get: %w", err)
	}
	return h, nil
}

// parseMacServices reads `networksetup -listallnetworkservices`: a header
// line, then one service per line, disabled ones starting with '*'.
func parseMacServices(out string) []string {
	var names []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if line == "" || strings.HasPrefix(line, "*") || strings.HasPrefix(line, "An asterisk") {
			continue
		}
		names = append(names, line)
	}
	return names
}

// parseMacList reads `networksetup -getdnsservers` or -getsearchdomains: one
// value per line, or a "There aren't any ..." sentence for none.
func parseMacList(out string, addrs bool) ([]string, error) {
	var vals []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "":
		case strings.HasPrefix(line, "There aren't any"):
			return nil, nil
		case addrs:
			if _, err := netip.ParseAddr(line); err != nil {
				return nil, fmt.Errorf("unexpected line %q", line)
			}
			vals = append(vals, line)
		default:
			if strings.ContainsAny(line, " \t") {
				return nil, fmt.Errorf("unexpected line %q", line)
			}
			vals = append(vals, line)
		}
	}
	return vals, nil
}

func ptr[T any](v T) *T { return &v }
