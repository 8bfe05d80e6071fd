// Package policy is twoway's authorization model: which verified identities
// may connect at all (admission), and which targets each may reach and which
// addresses each may have the gateway listen on. The same compiled Policy
// answers for port forwards today and per IP packet in VPN mode, so the
// checks are allocation-free and precompiled.
//
// Rules are evaluated in order and the first rule that applies to the
// identity and matches the target decides; when none does the answer is
// "default deny".
package policy

import (
	"net/netip"
	"strconv"
	"strings"

	"github.com/twoway/twoway/pki"
)

// Config is the policy as written in server.toml under [policy]. It is
// plain data; New validates and compiles it.
type Config struct {
	// Admit lists who may hold a session at all.
	Admit Admission `toml:"admit"`
	// Rules are evaluated in order; the first matching rule decides.
	Rules []Rule `toml:"rule"`
	// CAs say which groups certificates under each CA may carry. With
	// none, a certificate's groups count only when the CA that issued it
	// is itself in the client CA bundle (a sub-CA below it grants none).
	// With any, only they grant groups: a group counts when the entry for
	// the CA that signed the certificate lists it (or "*").
	CAs []CAGroups `toml:"ca"`
}

// CAGroups is one [[policy.ca]] entry.
type CAGroups struct {
	// Issuer names the CA: its subject common name, or the SHA-256
	// fingerprint of its certificate (as "twoway pki show" prints it,
	// with or without colons, optionally after "sha256:").
	Issuer string `toml:"issuer"`
	// Groups the CA may grant in the certificates it signs; "*" for
	// every group. A CA below it needs an entry of its own.
	Groups []string `toml:"groups"`
}

// Admission lists the identities and groups that may connect. Empty admits
// nobody; the entry "*" admits any identity whose certificate verified.
type Admission struct {
	// Identities are certificate names: the subject CN or any SAN (DNS
	// name, email, URI, IP address).
	Identities []string `toml:"identities"`
	// Groups are subject OU values.
	Groups []string `toml:"groups"`
	// Issuers, if set, admit only certificates signed by one of these CAs
	// (by name or fingerprint, as CAGroups.Issuer).
	Issuers []string `toml:"issuers"`
}

// Rule is one ordered authorization rule.
type Rule struct {
	// Name appears in decisions and logs; optional but recommended.
	Name string `toml:"name"`
	// Identities and Groups say whom the rule applies to, as in Admission;
	// "*" in either means every identity. A rule must name at least one.
	Identities []string `toml:"identities"`
	Groups     []string `toml:"groups"`
	// Issuers, if set, limit the rule to certificates signed by one of
	// these CAs: a sub-CA may issue any name, so a rule for "ceo" should
	// say which CA vouches for it.
	Issuers []string `toml:"issuers"`
	// Action is "allow" (the default) or "deny".
	Action string `toml:"action"`
	// Targets are what Dial matches: "any", "198.18.0.0/15",
	// "198.19.1.10:22", "db.corp.example:5432",
	// "*.corp.example:80,443,8000-8999", "[2001:db8::]/32:443",
	// "any:443". A target without a port matches every port.
	Targets []string `toml:"targets"`
	// Protocols limits Targets to "tcp", "udp" and/or "icmp"; empty means
	// every protocol.
	Protocols []string `toml:"protocols"`
	// Binds are the addresses Bind matches for remote (-R) listeners:
	// "127.0.0.1:8080", "0.0.0.0:9000-9100", "[::1]:8080". The address is
	// compared with the one the client asks for, so "0.0.0.0:9000" allows
	// the wildcard listener only, not 127.0.0.1:9000.
	Binds []string `toml:"binds"`
}

// Decision is the outcome of a check and the rule that decided it
// ("default deny" when none matched).
type Decision struct {
	Allow bool
	Rule  string
	// Reason, when set, says why beyond the rule: SpecialAddress for a
	// special address no rule named explicitly.
	Reason string
}

// Target is what a peer wants to reach. Host is the name as requested
// (empty for packets or IP literals); Addr is the address that will
// actually be dialed (the tunnel resolves names first and checks every
// resolved address, then dials only an allowed one, so DNS cannot widen a
// rule). Proto is "tcp", "udp" or "icmp".
type Target struct {
	Host  string
	Addr  netip.Addr
	Port  uint16
	Proto string
	// Local says Addr is one of the gateway's own addresses: like the
	// special ranges (see SpecialAddress), only a rule that names it
	// exactly grants it.
	Local bool
}

// DefaultDeny is the Decision.Rule reported when no rule matched.
const DefaultDeny = "default deny"

// Policy is a compiled Config. It is immutable and safe for concurrent use;
// to change policy, build a new one and swap it in.
type Policy struct {
	admit admission
	rules []rule
	cas   []caGroups
}

type caGroups struct {
	issuer issuerRef
	any    bool
	groups []string
}

// admission is the compiled Admission. Each entry carries its own decision
// text so that Admit allocates nothing.
type admission struct {
	issuers  []issuerRef
	anyLabel string // non-empty when "*" was listed
	names    []labelled
	ips      []labelledAddr
	groups   []labelled
}

type labelled struct{ value, label string }

type labelledAddr struct {
	addr  netip.Addr
	label string
}

// subjects is the compiled identities/groups list of a rule.
type subjects struct {
	issuers []issuerRef // if set, one of these CAs must have signed the certificate
	any     bool
	names   []string
	ips     []netip.Addr
	groups  []string
}

type rule struct {
	label   string // `rule "name" (#n)` or `rule #n`
	allow   bool
	who     subjects
	protos  uint8 // protoAny, or a mask of protoTCP|protoUDP|protoICMP
	targets []target
	binds   []target
	summary string // for Grants
}

const (
	protoTCP uint8 = 1 << iota
	protoUDP
	protoICMP
	protoOther
	protoAny uint8 = 0xff
)

// New validates cfg and compiles it. Errors are *ConfigError and name the
// rule, the field and the entry at fault.
func New(cfg Config) (*Policy, error) {
	p := &Policy{}
	if err := p.admit.compile(cfg.Admit); err != nil {
		return nil, err
	}
	names := make(map[string]int)
	for i, rc := range cfg.Rules {
		r, err := compileRule(i, rc)
		if err != nil {
			return nil, err
		}
		if rc.Name != "" {
			if j, dup := names[rc.Name]; dup {
				return nil, &ConfigError{Rule: i, Name: rc.Name, Field: "name", Entry: -1,
					Err: errorf("duplicate rule name %q (also rule #%d)", rc.Name, j+1)}
			}
			names[rc.Name] = i
		}
		p.rules = append(p.rules, r)
	}
	for i, c := range cfg.CAs {
		ref, err := parseIssuer(c.Issuer)
		if err != nil {
			return nil, &ConfigError{Rule: -2, Entry: i, Field: "issuer", Err: err}
		}
		cg := caGroups{issuer: ref}
		for j, g := range c.Groups {
			switch {
			case g == "*":
				cg.any = true
			case g == "" || strings.TrimSpace(g) != g:
				return nil, &ConfigError{Rule: -2, Entry: i, Field: "groups", Err: errorf("groups[%d]: invalid group %q", j, g)}
			default:
				cg.groups = append(cg.groups, g)
			}
		}
		p.cas = append(p.cas, cg)
	}
	return p, nil
}

// Admit reports whether id may hold a session at all. Dial and Bind do not
// repeat this check: the tunnel calls Admit once per connection.
func (p *Policy) Admit(id *pki.Identity) Decision {
	if id == nil {
		return Decision{Rule: "no identity"}
	}
	a := &p.admit
	if len(a.issuers) > 0 && !issuedBy(id, a.issuers) {
		return Decision{Rule: "admit issuers"}
	}
	if a.anyLabel != "" {
		return Decision{Allow: true, Rule: a.anyLabel}
	}
	for i := range a.names {
		if matchName(id, a.names[i].value) {
			return Decision{Allow: true, Rule: a.names[i].label}
		}
	}
	for i := range a.ips {
		if matchIP(id, a.ips[i].addr) {
			return Decision{Allow: true, Rule: a.ips[i].label}
		}
	}
	for i := range a.groups {
		if id.InGroup(a.groups[i].value) {
			return Decision{Allow: true, Rule: a.groups[i].label}
		}
	}
	return Decision{Rule: DefaultDeny}
}

// Dial reports whether id may reach t. It is called per forwarded
// connection now and per packet in VPN mode, and allocates nothing.
func (p *Policy) Dial(id *pki.Identity, t Target) Decision {
	if id == nil {
		return Decision{Rule: "no identity"}
	}
	proto := protoBit(t.Proto)
	addr := t.Addr.WithZone("").Unmap()
	host := strings.TrimSuffix(t.Host, ".")
	block, never, special := specialBlock(addr)
	if never {
		return Decision{Rule: DefaultDeny, Reason: SpecialAddress}
	}
	guarded := special || t.Local
	for i := range p.rules {
		r := &p.rules[i]
		// Target checks are cheaper than identity checks, so they go first.
		if r.protos&proto == 0 || !matchAny(r.targets, host, addr, t.Port) || !r.who.match(id) {
			continue
		}
		if guarded && r.allow && !namesAny(r.targets, host, addr, t.Port, block, special, t.Local) {
			continue // it allows the address only by accident; see target.names
		}
		return Decision{Allow: r.allow, Rule: r.label}
	}
	if guarded {
		return Decision{Rule: DefaultDeny, Reason: SpecialAddress}
	}
	return Decision{Rule: DefaultDeny}
}

// namesAny reports whether one of ts matches and names addr explicitly.
func namesAny(ts []target, host string, addr netip.Addr, port uint16, block netip.Prefix, special, local bool) bool {
	for i := range ts {
		if ts[i].match(host, addr, port) && ts[i].names(addr, block, special, local) {
			return true
		}
	}
	return false
}

// Bind reports whether id may have the gateway listen on addr:port for it.
// Port 0 (let the system choose) matches only entries without a port.
func (p *Policy) Bind(id *pki.Identity, addr netip.Addr, port uint16) Decision {
	if id == nil {
		return Decision{Rule: "no identity"}
	}
	addr = addr.WithZone("").Unmap()
	for i := range p.rules {
		r := &p.rules[i]
		if !matchAny(r.binds, "", addr, port) || !r.who.match(id) {
			continue
		}
		return Decision{Allow: r.allow, Rule: r.label}
	}
	return Decision{Rule: DefaultDeny}
}

// Grants summarises, one line per rule, what applies to id, in evaluation
// order; the client shows it after the hello. It returns nil when no rule
// applies.
func (p *Policy) Grants(id *pki.Identity) []string {
	if id == nil {
		return nil
	}
	var out []string
	for i := range p.rules {
		if p.rules[i].who.match(id) {
			out = append(out, p.rules[i].summary)
		}
	}
	return out
}

func protoBit(proto string) uint8 {
	switch proto {
	case "tcp":
		return protoTCP
	case "udp":
		return protoUDP
	case "icmp", "icmpv6":
		return protoICMP
	}
	return protoOther
}

func matchAny(ts []target, host string, addr netip.Addr, port uint16) bool {
	for i := range ts {
		if ts[i].match(host, addr, port) {
			return true
		}
	}
	return false
}

func (s *subjects) match(id *pki.Identity) bool {
	if len(s.issuers) > 0 && !issuedBy(id, s.issuers) {
		return false
	}
	if s.any {
		return true
	}
	for _, g := range s.groups {
		if id.InGroup(g) {
			return true
		}
	}
	for _, n := range s.names {
		if matchName(id, n) {
			return true
		}
	}
	for _, a := range s.ips {
		if matchIP(id, a) {
			return true
		}
	}
	return false
}

// matchName compares a configured name with the certificate's CN and SANs.
// DNS names compare case-insensitively, as DNS does; the rest exactly.
func matchName(id *pki.Identity, name string) bool {
	if id.CommonName == name {
		return true
	}
	for _, d := range id.DNSNames {
		if strings.EqualFold(d, name) {
			return true
		}
	}
	for _, e := range id.Emails {
		if e == name {
			return true
		}
	}
	for _, u := range id.URIs {
		if u == name {
			return true
		}
	}
	return false
}

func matchIP(id *pki.Identity, a netip.Addr) bool {
	for _, ip := range id.IPs {
		if got, ok := netip.AddrFromSlice(ip); ok && got.Unmap() == a {
			return true
		}
	}
	return false
}

func (a *admission) compile(c Admission) error {
	for i, s := range c.Issuers {
		ref, err := parseIssuer(s)
		if err != nil {
			return &ConfigError{Rule: -1, Field: "issuers", Entry: i, Err: err}
		}
		a.issuers = append(a.issuers, ref)
	}
	for i, s := range c.Identities {
		switch {
		case s == "*":
			a.anyLabel = `admit identities "*"`
		case s == "" || strings.TrimSpace(s) != s:
			return &ConfigError{Rule: -1, Field: "identities", Entry: i, Err: errorf("invalid identity %q", s)}
		default:
			label := "admit identity " + strconv.Quote(s)
			// An address names an IP SAN, but it is also a name a CN
			// may carry (and what Identity.Name reports for it), so it
			// is matched as both.
			a.names = append(a.names, labelled{s, label})
			if ip, err := netip.ParseAddr(s); err == nil {
				a.ips = append(a.ips, labelledAddr{ip.Unmap(), label})
			}
		}
	}
	for i, s := range c.Groups {
		switch {
		case s == "*":
			a.anyLabel = `admit groups "*"`
		case s == "" || strings.TrimSpace(s) != s:
			return &ConfigError{Rule: -1, Field: "groups", Entry: i, Err: errorf("invalid group %q", s)}
		default:
			a.groups = append(a.groups, labelled{s, "admit group " + strconv.Quote(s)})
		}
	}
	return nil
}

func compileRule(i int, c Rule) (rule, error) {
	bad := func(field string, entry int, err error) (rule, error) {
		return rule{}, &ConfigError{Rule: i, Name: c.Name, Field: field, Entry: entry, Err: err}
	}
	r := rule{label: ruleLabel(i, c.Name), protos: protoAny}
	if strings.TrimSpace(c.Name) != c.Name || strings.ContainsAny(c.Name, "\"\n") {
		return bad("name", -1, errorf("invalid rule name %q", c.Name))
	}
	switch c.Action {
	case "", "allow":
		r.allow = true
	case "deny":
	default:
		return bad("action", -1, errorf("invalid action %q (want allow or deny)", c.Action))
	}
	if len(c.Identities) == 0 && len(c.Groups) == 0 {
		return bad("identities", -1, errorf(`rule applies to nobody: set identities or groups ("*" for everyone)`))
	}
	for j, s := range c.Issuers {
		ref, err := parseIssuer(s)
		if err != nil {
			return bad("issuers", j, err)
		}
		r.who.issuers = append(r.who.issuers, ref)
	}
	for j, s := range c.Identities {
		switch {
		case s == "*":
			r.who.any = true
		case s == "" || strings.TrimSpace(s) != s:
			return bad("identities", j, errorf("invalid identity %q", s))
		default:
			// As in Admission: an address matches a CN or an IP SAN.
			r.who.names = append(r.who.names, s)
			if ip, err := netip.ParseAddr(s); err == nil {
				r.who.ips = append(r.who.ips, ip.Unmap())
			}
		}
	}
	for j, s := range c.Groups {
		switch {
		case s == "*":
			r.who.any = true
		case s == "" || strings.TrimSpace(s) != s:
			return bad("groups", j, errorf("invalid group %q", s))
		default:
			r.who.groups = append(r.who.groups, s)
		}
	}
	if len(c.Targets) == 0 && len(c.Binds) == 0 {
		return bad("targets", -1, errorf("rule has neither targets nor binds"))
	}
	if len(c.Protocols) > 0 {
		r.protos = 0
	}
	var protoNames []string
	for j, s := range c.Protocols {
		var bit uint8
		switch strings.ToLower(s) {
		case "tcp":
			bit = protoTCP
		case "udp":
			bit = protoUDP
		case "icmp":
			bit = protoICMP
		default:
			return bad("protocols", j, errorf("invalid protocol %q (want tcp, udp or icmp)", s))
		}
		if r.protos&bit == 0 {
			protoNames = append(protoNames, strings.ToLower(s))
		}
		r.protos |= bit
	}
	for j, s := range c.Targets {
		t, err := parseTarget(s)
		if err != nil {
			return bad("targets", j, err)
		}
		r.targets = append(r.targets, t)
	}
	for j, s := range c.Binds {
		t, err := parseTarget(s)
		if err == nil && (t.kind == kindHost || t.kind == kindSuffix) {
			err = errorf("invalid bind %q: binds are IP addresses, not host names", s)
		}
		if err != nil {
			return bad("binds", j, err)
		}
		r.binds = append(r.binds, t)
	}
	r.summary = summarize(r, protoNames)
	return r, nil
}

func ruleLabel(i int, name string) string {
	if name == "" {
		return "rule #" + strconv.Itoa(i+1)
	}
	return "rule " + strconv.Quote(name) + " (#" + strconv.Itoa(i+1) + ")"
}

// summarize renders a rule for Grants, e.g.
// `rule "eng" (#2): allow tcp to 198.18.0.0/15, db.corp.example:5432; bind 127.0.0.1:8080`.
func summarize(r rule, protos []string) string {
	var b strings.Builder
	b.WriteString(r.label)
	if r.allow {
		b.WriteString(": allow")
	} else {
		b.WriteString(": deny")
	}
	if len(r.targets) > 0 {
		if len(protos) > 0 {
			b.WriteString(" " + strings.Join(protos, ","))
		}
		b.WriteString(" to ")
		for j, t := range r.targets {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString(t.text)
		}
	}
	if len(r.binds) > 0 {
		if len(r.targets) > 0 {
			b.WriteString(";")
		}
		b.WriteString(" bind ")
		for j, t := range r.binds {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString(t.text)
		}
	}
	return b.String()
}
