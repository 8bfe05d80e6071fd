package policy

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/twoway/twoway/pki"
)

// The randomized test generates structured rules, renders them to the
// strings a config file would hold, and compares the compiled Policy with a
// deliberately naive evaluator working on the structured form with the net
// package (a different address implementation from the netip one Policy
// uses).

type refTarget struct {
	any      bool
	cidr     *net.IPNet // nil unless an address or prefix
	host     string     // lower case, without "*."
	wildcard bool
	ports    [][2]int // nil = any
}

type refRule struct {
	label      string
	allow      bool
	identities []string
	groups     []string
	protocols  []string
	targets    []refTarget
	binds      []refTarget
}

func (r *refRule) applies(id *pki.Identity) bool {
	for _, n := range r.identities {
		if n == "*" || n == id.CommonName {
			return true
		}
		for _, d := range id.DNSNames {
			if strings.ToLower(d) == strings.ToLower(n) {
				return true
			}
		}
		for _, ip := range id.IPs {
			if ip.Equal(net.ParseIP(n)) {
				return true
			}
		}
	}
	for _, g := range r.groups {
		if g == "*" || slices.Contains(id.Groups, g) {
			return true
		}
	}
	return false
}

func (rt *refTarget) matches(host string, ip net.IP, port int) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	switch {
	case rt.any:
	case rt.cidr != nil:
		if ip == nil || !rt.cidr.Contains(ip) {
			return false
		}
	case rt.wildcard:
		if !strings.HasSuffix(host, "."+rt.host) {
			return false
		}
	default:
		if host != rt.host {
			return false
		}
	}
	if rt.ports == nil {
		return true
	}
	for _, pr := range rt.ports {
		if port >= pr[0] && port <= pr[1] {
			return true
		}
	}
	return false
}

func refDial(rules []refRule, id *pki.Identity, host string, ip net.IP, port int, proto string) Decision {
	for _, r := range rules {
		if !r.applies(id) {
			continue
		}
		if len(r.protocols) > 0 && !slices.Contains(r.protocols, proto) {
			continue
		}
		for _, t := range r.targets {
			if t.matches(host, ip, port) {
				return Decision{Allow: r.allow, Rule: r.label}
			}
		}
	}
	return Decision{Rule: DefaultDeny}
}

func refBind(rules []refRule, id *pki.Identity, ip net.IP, port int) Decision {
	for _, r := range rules {
		if !r.applies(id) {
			continue
		}
		for _, t := range r.binds {
			if t.matches("", ip, port) {
				return Decision{Allow: r.allow, Rule: r.label}
			}
		}
	}
	return Decision{Rule: DefaultDeny}
}

var (
	randNames  = []string{"alice", "bob", "carol", "gw.corp.example", "198.18.7.7"}
	randGroups = []string{"eng", "ops", "sales"}
	randHosts  = []string{"db.corp.example", "web.corp.example", "a.b.corp.example", "corp.example", "other.example"}
	randPorts  = []int{22, 53, 80, 443, 5432, 8000, 8999}
	randProtos = []string{"tcp", "udp", "icmp"}
)

func randAddr(r *rand.Rand) netip.Addr {
	if r.IntN(2) == 0 {
		return netip.AddrFrom4([4]byte{198, 18 + byte(r.IntN(2)), byte(r.IntN(3)), byte(r.IntN(4))})
	}
	a := [16]byte{0x20, 0x01, 0x0d, 0xb8}
	a[5] = byte(r.IntN(2))
	a[15] = byte(r.IntN(4))
	return netip.AddrFrom16(a)
}

func randPortSpec(r *rand.Rand) (string, [][2]int) {
	if r.IntN(3) == 0 {
		return "", nil
	}
	var parts []string
	var ranges [][2]int
	for range 1 + r.IntN(3) {
		lo := randPorts[r.IntN(len(randPorts))]
		if r.IntN(3) == 0 {
			hi := lo + r.IntN(1000)
			parts = append(parts, fmt.Sprintf("%d-%d", lo, hi))
			ranges = append(ranges, [2]int{lo, hi})
		} else {
			parts = append(parts, strconv.Itoa(lo))
			ranges = append(ranges, [2]int{lo, lo})
		}
	}
	return strings.Join(parts, ","), ranges
}

// randTarget returns an entry as a config would spell it, in one of the
// accepted notations, and its structured meaning.
func randTarget(r *rand.Rand, hostsOK bool) (string, refTarget) {
	ports, ranges := randPortSpec(r)
	withPorts := func(s string) string {
		if ports == "" {
			return s
		}
		return s + ":" + ports
	}
	kind := r.IntN(4)
	if !hostsOK && kind == 3 {
		kind = 1
	}
	switch kind {
	case 0:
		return withPorts([]string{"any", "*"}[r.IntN(2)]), refTarget{any: true, ports: ranges}
	case 1, 2:
		a := randAddr(r)
		bits := a.BitLen()
		if kind == 2 {
			bits = []int{8, 15, 16, 24, 30, 32, 120, 127}[r.IntN(8)]
			if bits > a.BitLen() {
				bits = a.BitLen() - 2
			}
		}
		p := netip.PrefixFrom(a, bits).Masked()
		_, cidr, err := net.ParseCIDR(p.String())
		if err != nil {
			panic(err)
		}
		var s string
		switch {
		case kind == 1 && a.Is6() && ports != "":
			s = "[" + a.String() + "]:" + ports
		case kind == 1 && a.Is6() && r.IntN(2) == 0:
			s = "[" + a.String() + "]"
		case kind == 1:
			s = withPorts(a.String())
		case a.Is6() && r.IntN(2) == 0:
			s = withPorts("[" + p.Addr().String() + "]/" + strconv.Itoa(bits))
		default:
			s = withPorts(p.String())
		}
		return s, refTarget{cidr: cidr, ports: ranges}
	default:
		h := randHosts[r.IntN(len(randHosts))]
		wild := r.IntN(2) == 0
		s := h
		if r.IntN(3) == 0 {
			s = strings.ToUpper(s)
		}
		if wild {
			s = "*." + s
		}
		return withPorts(s), refTarget{host: h, wildcard: wild, ports: ranges}
	}
}

func pick[T any](r *rand.Rand, from []T, max int) []T {
	var out []T
	for range r.IntN(max + 1) {
		out = append(out, from[r.IntN(len(from))])
	}
	return out
}

func randPolicy(r *rand.Rand) (Config, []refRule) {
	var cfg Config
	var ref []refRule
	for i := range 1 + r.IntN(8) {
		var rc Rule
		rr := refRule{allow: true}
		if r.IntN(2) == 0 {
			rc.Name = "r" + strconv.Itoa(i)
		}
		rr.label = ruleLabel(i, rc.Name)
		if r.IntN(3) == 0 {
			rc.Action, rr.allow = "deny", false
		} else if r.IntN(2) == 0 {
			rc.Action = "allow"
		}
		rc.Identities = pick(r, append(randNames, "*"), 2)
		rc.Groups = pick(r, append(randGroups, "*"), 2)
		if len(rc.Identities)+len(rc.Groups) == 0 {
			rc.Groups = []string{randGroups[r.IntN(len(randGroups))]}
		}
		rr.identities, rr.groups = rc.Identities, rc.Groups
		rc.Protocols = pick(r, randProtos, 2)
		rr.protocols = rc.Protocols
		for range r.IntN(4) {
			s, t := randTarget(r, true)
			rc.Targets = append(rc.Targets, s)
			rr.targets = append(rr.targets, t)
		}
		for range r.IntN(3) {
			s, t := randTarget(r, false)
			rc.Binds = append(rc.Binds, s)
			rr.binds = append(rr.binds, t)
		}
		if len(rc.Targets)+len(rc.Binds) == 0 {
			rc.Targets, rr.targets = []string{"any"}, []refTarget{{any: true}}
		}
		cfg.Rules = append(cfg.Rules, rc)
		ref = append(ref, rr)
	}
	return cfg, ref
}

func randIdentity(r *rand.Rand) *pki.Identity {
	id := &pki.Identity{Groups: pick(r, randGroups, 2)}
	switch r.IntN(4) {
	case 0:
		id.CommonName = randNames[r.IntN(len(randNames))]
	case 1:
		id.CommonName = "nobody"
		id.DNSNames = []string{"GW.corp.example"}
	case 2:
		id.IPs = []net.IP{net.ParseIP("198.18.7.7")}
	}
	return id
}

func TestRandomAgainstReference(t *testing.T) {
	seed := rand.Uint64()
	r := rand.New(rand.NewPCG(seed, 1))
	protos := append(randProtos, "gre")
	var allowed, deniedByRule, bindAllowed int
	for round := range 300 {
		cfg, ref := randPolicy(r)
		p, err := New(cfg)
		if err != nil {
			t.Fatalf("seed %d round %d: New(%+v): %v", seed, round, cfg, err)
		}
		for range 200 {
			id := randIdentity(r)
			addr := randAddr(r)
			host := ""
			if r.IntN(2) == 0 {
				host = randHosts[r.IntN(len(randHosts))]
				if r.IntN(2) == 0 {
					host = strings.ToUpper(host) + "."
				}
			}
			port := []int{0, 22, 53, 80, 443, 999, 5432, 8000, 8500, 9999}[r.IntN(10)]
			proto := protos[r.IntN(len(protos))]
			query := addr
			if addr.Is4() && r.IntN(4) == 0 {
				query = netip.AddrFrom16(addr.As16()) // the v4-mapped form a dual-stack socket reports
			}
			got := p.Dial(id, Target{Host: host, Addr: query, Port: uint16(port), Proto: proto})
			want := refDial(ref, id, host, net.IP(addr.AsSlice()), port, proto)
			if got != want {
				t.Fatalf("seed %d round %d: Dial(%+v, %q %s:%d/%s) = %+v, reference says %+v\nconfig: %+v",
					seed, round, id, host, query, port, proto, got, want, cfg.Rules)
			}
			if got.Allow {
				allowed++
			} else if got.Rule != DefaultDeny {
				deniedByRule++
			}
			got = p.Bind(id, query, uint16(port))
			if got.Allow {
				bindAllowed++
			}
			want = refBind(ref, id, net.IP(addr.AsSlice()), port)
			if got != want {
				t.Fatalf("seed %d round %d: Bind(%+v, %s:%d) = %+v, reference says %+v\nconfig: %+v",
					seed, round, id, query, port, got, want, cfg.Rules)
			}
		}
	}
	// Guard against a generator that only ever exercises default deny.
	t.Logf("dial allowed %d, denied by a rule %d, bind allowed %d of %d", allowed, deniedByRule, bindAllowed, 300*200)
	if allowed < 1000 || deniedByRule < 500 || bindAllowed < 100 {
		t.Errorf("generator too narrow: allowed %d, denied by rule %d, bind allowed %d", allowed, deniedByRule, bindAllowed)
	}
}
