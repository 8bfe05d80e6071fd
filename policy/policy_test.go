package policy

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/twoway/twoway/pki"
)

func ident(cn string, groups ...string) *pki.Identity {
	return &pki.Identity{CommonName: cn, Groups: groups}
}

func mustNew(t testing.TB, cfg Config) *Policy {
	t.Helper()
	p, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return p
}

func TestParseTarget(t *testing.T) {
	type probe struct {
		host  string
		addr  string
		port  uint16
		match bool
	}
	tests := []struct {
		in     string
		text   string
		probes []probe
	}{
		{"any", "any", []probe{{"", "198.18.0.1", 1, true}, {"x.example", "", 0, true}}},
		{"*", "any", []probe{{"", "2001:db8::1", 443, true}}},
		{"any:443", "any:443", []probe{{"", "198.18.0.1", 443, true}, {"", "198.18.0.1", 444, false}}},
		{"198.18.0.0/15", "198.18.0.0/15", []probe{
			{"", "198.19.255.255", 9, true}, {"", "198.20.0.0", 9, false}, {"", "::ffff:198.18.0.1", 9, true},
			{"db.corp.example", "", 80, false}, // a prefix needs an address
		}},
		{"198.19.1.10:22", "198.19.1.10:22", []probe{
			{"", "198.19.1.10", 22, true}, {"", "198.19.1.10", 23, false}, {"", "198.19.1.11", 22, false},
		}},
		{"198.19.1.10", "198.19.1.10", []probe{{"", "198.19.1.10", 0, true}, {"", "198.19.1.10", 65535, true}}},
		{"db.corp.example:5432", "db.corp.example:5432", []probe{
			{"db.corp.example", "198.18.0.1", 5432, true}, {"DB.Corp.Example.", "198.18.0.1", 5432, true},
			{"db.corp.example", "198.18.0.1", 5433, false}, {"x.db.corp.example", "", 5432, false},
			{"", "198.18.0.1", 5432, false},
		}},
		{"DB.corp.example", "db.corp.example", []probe{{"db.CORP.example", "", 1, true}}},
		{"*.corp.example:80,443,8000-8999", "*.corp.example:80,443,8000-8999", []probe{
			{"web.corp.example", "", 80, true}, {"a.b.corp.example", "", 443, true},
			{"web.corp.example", "", 8000, true}, {"web.corp.example", "", 8999, true},
			{"web.corp.example", "", 9000, false}, {"web.corp.example", "", 81, false},
			{"corp.example", "", 80, false}, {"xcorp.example", "", 80, false}, {"web.corp.example.org", "", 80, false},
		}},
		{"[2001:db8::]/32:443", "[2001:db8::]/32:443", []probe{
			{"", "2001:db8:ffff::1", 443, true}, {"", "2001:db9::1", 443, false}, {"", "2001:db8::1", 80, false},
		}},
		{"2001:db8::/32", "2001:db8::/32", []probe{{"", "2001:db8::5", 1, true}, {"", "198.18.0.1", 1, false}}},
		{"2001:db8::/32:443", "[2001:db8::]/32:443", []probe{{"", "2001:db8::5", 443, true}}},
		{"2001:db8::1", "2001:db8::1", []probe{{"", "2001:db8::1", 7, true}, {"", "2001:db8::2", 7, false}}},
		{"[2001:db8::1]", "2001:db8::1", []probe{{"", "2001:db8::1", 7, true}}},
		{"[2001:db8::1]:22", "[2001:db8::1]:22", []probe{{"", "2001:db8::1", 22, true}, {"", "2001:db8::1", 23, false}}},
		{"198.18.0.0/16:*", "198.18.0.0/16", []probe{{"", "198.18.3.4", 12345, true}}},
		{"::ffff:198.18.0.0/112", "198.18.0.0/16", []probe{{"", "198.18.3.4", 1, true}}},
		{"svc_x.corp.example:1-65535", "svc_x.corp.example:1-65535", []probe{{"svc_x.corp.example", "", 65535, true}, {"svc_x.corp.example", "", 0, false}}},
	}
	for _, tt := range tests {
		tg, err := parseTarget(tt.in)
		if err != nil {
			t.Errorf("parseTarget(%q): %v", tt.in, err)
			continue
		}
		if tg.text != tt.text {
			t.Errorf("parseTarget(%q).text = %q, want %q", tt.in, tg.text, tt.text)
		}
		for _, p := range tt.probes {
			var a netip.Addr
			if p.addr != "" {
				a = netip.MustParseAddr(p.addr).Unmap()
			}
			if got := tg.match(strings.TrimSuffix(p.host, "."), a, p.port); got != p.match {
				t.Errorf("%q.match(%q, %s, %d) = %v, want %v", tt.in, p.host, p.addr, p.port, got, p.match)
			}
		}
	}
}

func TestParseTargetErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", "empty entry"},
		{" 10.0.0.0/8", "surrounding spaces"},
		{"10.0.0/8", `invalid CIDR "10.0.0/8"`},
		{"10.0.0.1/8", `host bits set (did you mean 10.0.0.0/8?)`},
		{"10.0.0.0/33", `invalid CIDR "10.0.0.0/33"`},
		{"10.0.0.0/8:", "empty port list"},
		{"10.0.0.0/8:http", `invalid port "http"`},
		{"10.0.0", `invalid IP address "10.0.0"`},
		{"300.1.1.1:80", `invalid IP address "300.1.1.1"`},
		{"2001:db8::1:443x", "put an IPv6 address in brackets"},
		{"[2001:db8::1", "missing ]"},
		{"[2001:db8::1]x", "want [ADDR]:PORTS"},
		{"[2001:db8::1]:", "want [ADDR]:PORTS"},
		{"[198.18.0.1]:80", "invalid IPv6 address"},
		{"[fe80::1%eth0]:80", "invalid IPv6 address"},
		{"host:0", `invalid port "0"`},
		{"host:65536", `invalid port "65536"`},
		{"host:080", `invalid port "080"`},
		{"host:90-80", `invalid port range "90-80"`},
		{"host:80,,443", `invalid port ""`},
		{"host:", "empty port list"},
		{"*.", `invalid host name "*."`},
		{"a.*.example", `invalid host name`},
		{"-bad.example", `invalid host name`},
		{"bad..example", `invalid host name`},
		{"sp ace.example", `invalid host name`},
		{"::ffff:10.0.0.0/90", "host bits set"},
	}
	for _, tt := range tests {
		_, err := parseTarget(tt.in)
		if err == nil {
			t.Errorf("parseTarget(%q) succeeded, want error containing %q", tt.in, tt.want)
			continue
		}
		if !strings.Contains(err.Error(), tt.want) {
			t.Errorf("parseTarget(%q) = %q, want it to contain %q", tt.in, err, tt.want)
		}
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("parseTarget(%q) error does not wrap ErrInvalid", tt.in)
		}
	}
}

func TestNewErrors(t *testing.T) {
	everyone := []string{"*"}
	tests := []struct {
		name  string
		cfg   Config
		rule  int
		field string
		entry int
		msg   string
	}{
		{"bad cidr", Config{Rules: []Rule{
			{Name: "ok", Groups: everyone, Targets: []string{"any"}},
			{Name: "eng", Groups: everyone, Targets: []string{"198.18.0.0/15", "10.0.0/8"}},
		}}, 1, "targets", 1, `policy: rule "eng" (#2): targets[1]: invalid CIDR "10.0.0/8"`},
		{"unnamed rule", Config{Rules: []Rule{{Groups: everyone, Binds: []string{"db.example:80"}}}},
			0, "binds", 0, `policy: rule #1: binds[0]: invalid bind "db.example:80": binds are IP addresses, not host names`},
		{"action", Config{Rules: []Rule{{Groups: everyone, Action: "permit", Targets: []string{"any"}}}},
			0, "action", -1, `invalid action "permit" (want allow or deny)`},
		{"nobody", Config{Rules: []Rule{{Name: "x", Targets: []string{"any"}}}},
			0, "identities", -1, "rule applies to nobody"},
		{"nothing", Config{Rules: []Rule{{Name: "x", Identities: everyone}}},
			0, "targets", -1, "rule has neither targets nor binds"},
		{"protocol", Config{Rules: []Rule{{Groups: everyone, Targets: []string{"any"}, Protocols: []string{"tcp", "sctp"}}}},
			0, "protocols", 1, `invalid protocol "sctp"`},
		{"empty identity", Config{Rules: []Rule{{Identities: []string{"alice", ""}, Targets: []string{"any"}}}},
			0, "identities", 1, `invalid identity ""`},
		{"empty group", Config{Rules: []Rule{{Groups: []string{" eng"}, Targets: []string{"any"}}}},
			0, "groups", 0, `invalid group " eng"`},
		{"duplicate name", Config{Rules: []Rule{
			{Name: "a", Groups: everyone, Targets: []string{"any"}},
			{Name: "a", Groups: everyone, Targets: []string{"any"}},
		}}, 1, "name", -1, `duplicate rule name "a" (also rule #1)`},
		{"admit identity", Config{Admit: Admission{Identities: []string{"alice", ""}}}, -1, "identities", 1, `policy: admit: identities[1]: invalid identity ""`},
		{"admit group", Config{Admit: Admission{Groups: []string{""}}}, -1, "groups", 0, `invalid group ""`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("New = %v, want *ConfigError", err)
			}
			if ce.Rule != tt.rule || ce.Field != tt.field || ce.Entry != tt.entry {
				t.Errorf("ConfigError{Rule:%d Field:%q Entry:%d}, want {%d %q %d}", ce.Rule, ce.Field, ce.Entry, tt.rule, tt.field, tt.entry)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not contain %q", err, tt.msg)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid")
			}
		})
	}
}

func TestAdmit(t *testing.T) {
	p := mustNew(t, Config{Admit: Admission{
		Identities: []string{"alice", "gw.corp.example", "carol@corp.example", "spiffe://corp/bot", "198.18.7.7"},
		Groups:     []string{"eng"},
	}})
	tests := []struct {
		id   *pki.Identity
		want Decision
	}{
		{ident("alice"), Decision{Allow: true, Rule: `admit identity "alice"`}},
		{ident("Alice"), Decision{Allow: false, Rule: DefaultDeny}},
		{&pki.Identity{DNSNames: []string{"GW.corp.example"}}, Decision{Allow: true, Rule: `admit identity "gw.corp.example"`}},
		{&pki.Identity{Emails: []string{"carol@corp.example"}}, Decision{Allow: true, Rule: `admit identity "carol@corp.example"`}},
		{&pki.Identity{URIs: []string{"spiffe://corp/bot"}}, Decision{Allow: true, Rule: `admit identity "spiffe://corp/bot"`}},
		{&pki.Identity{IPs: []net.IP{net.ParseIP("198.18.7.7")}}, Decision{Allow: true, Rule: `admit identity "198.18.7.7"`}},
		{&pki.Identity{IPs: []net.IP{net.ParseIP("198.18.7.8")}}, Decision{Allow: false, Rule: DefaultDeny}},
		{ident("bob", "sales", "eng"), Decision{Allow: true, Rule: `admit group "eng"`}},
		{ident("bob", "sales"), Decision{Allow: false, Rule: DefaultDeny}},
		{nil, Decision{Allow: false, Rule: "no identity"}},
	}
	for _, tt := range tests {
		if got := p.Admit(tt.id); got != tt.want {
			t.Errorf("Admit(%+v) = %+v, want %+v", tt.id, got, tt.want)
		}
	}

	if d := mustNew(t, Config{}).Admit(ident("alice")); d.Allow {
		t.Errorf("empty admission list admitted alice: %+v", d)
	}
	if d := mustNew(t, Config{Admit: Admission{Identities: []string{"*"}}}).Admit(ident("")); !d.Allow || d.Rule != `admit identities "*"` {
		t.Errorf(`"*" did not admit: %+v`, d)
	}
	if d := mustNew(t, Config{Admit: Admission{Groups: []string{"*"}}}).Admit(ident("x")); !d.Allow || d.Rule != `admit groups "*"` {
		t.Errorf(`groups "*" did not admit: %+v`, d)
	}
}

var exampleConfig = Config{
	Admit: Admission{Groups: []string{"eng", "ops"}, Identities: []string{"alice"}},
	Rules: []Rule{
		{Name: "no-mgmt", Groups: []string{"*"}, Action: "deny", Targets: []string{"198.19.255.0/24"}},
		{Name: "eng-web", Groups: []string{"eng"}, Targets: []string{"*.corp.example:80,443,8000-8999", "198.18.0.0/16:443"}, Protocols: []string{"tcp"}},
		{Name: "ops-all", Groups: []string{"ops"}, Targets: []string{"any"}},
		{Name: "alice-ssh", Identities: []string{"alice"}, Targets: []string{"198.19.1.10:22", "[2001:db8::]/32:22"}, Binds: []string{"127.0.0.1:8080", "0.0.0.0:9000-9100"}},
		{Identities: []string{"*"}, Targets: []string{"dns.corp.example:53"}, Protocols: []string{"udp", "tcp"}},
	},
}

func TestDial(t *testing.T) {
	p := mustNew(t, exampleConfig)
	eng, ops, alice, bob := ident("eve", "eng"), ident("oscar", "ops"), ident("alice"), ident("bob")
	tgt := func(host, addr string, port uint16, proto string) Target {
		return Target{Host: host, Addr: netip.MustParseAddr(addr), Port: port, Proto: proto}
	}
	tests := []struct {
		id   *pki.Identity
		t    Target
		want Decision
	}{
		{eng, tgt("wiki.corp.example", "198.18.5.5", 443, "tcp"), Decision{Allow: true, Rule: `rule "eng-web" (#2)`}},
		{eng, tgt("wiki.corp.example", "198.18.5.5", 443, "udp"), Decision{Allow: false, Rule: DefaultDeny}},
		{eng, tgt("", "198.18.5.5", 443, "tcp"), Decision{Allow: true, Rule: `rule "eng-web" (#2)`}},
		{eng, tgt("", "198.18.5.5", 80, "tcp"), Decision{Allow: false, Rule: DefaultDeny}},
		{eng, tgt("wiki.corp.example", "198.19.255.3", 443, "tcp"), Decision{Allow: false, Rule: `rule "no-mgmt" (#1)`}}, // DNS cannot widen
		{ops, tgt("", "198.19.255.3", 22, "tcp"), Decision{Allow: false, Rule: `rule "no-mgmt" (#1)`}},
		{ops, tgt("", "2001:db8::9", 0, "icmp"), Decision{Allow: true, Rule: `rule "ops-all" (#3)`}},
		{ops, tgt("", "::ffff:198.19.255.3", 22, "tcp"), Decision{Allow: false, Rule: `rule "no-mgmt" (#1)`}},
		{alice, tgt("", "198.19.1.10", 22, "tcp"), Decision{Allow: true, Rule: `rule "alice-ssh" (#4)`}},
		{alice, tgt("", "2001:db8:1::10", 22, "tcp"), Decision{Allow: true, Rule: `rule "alice-ssh" (#4)`}},
		{alice, tgt("", "fe80::1%eth0", 22, "tcp"), Decision{Allow: false, Rule: DefaultDeny, Reason: SpecialAddress}},
		{alice, tgt("", "198.19.1.10", 0, "icmp"), Decision{Allow: false, Rule: DefaultDeny}}, // port rules never match icmp
		{bob, tgt("dns.corp.example", "198.18.0.53", 53, "udp"), Decision{Allow: true, Rule: "rule #5"}},
		{bob, tgt("dns.corp.example", "198.18.0.53", 53, "icmp"), Decision{Allow: false, Rule: DefaultDeny}},
		{bob, tgt("", "198.18.0.53", 53, "udp"), Decision{Allow: false, Rule: DefaultDeny}},
		{nil, tgt("", "198.18.0.53", 53, "udp"), Decision{Allow: false, Rule: "no identity"}},
	}
	for _, tt := range tests {
		if got := p.Dial(tt.id, tt.t); got != tt.want {
			t.Errorf("Dial(%s, %+v) = %+v, want %+v", tt.id.Name(), tt.t, got, tt.want)
		}
	}
}

func TestBind(t *testing.T) {
	p := mustNew(t, Config{Rules: []Rule{
		{Name: "deny-9050", Identities: []string{"*"}, Action: "deny", Binds: []string{"0.0.0.0:9050"}},
		{Name: "alice", Identities: []string{"alice"}, Binds: []string{"127.0.0.1:8080", "0.0.0.0:9000-9100", "[::1]:8080"}},
		{Name: "eng", Groups: []string{"eng"}, Binds: []string{"127.0.0.1"}, Targets: []string{"any"}},
	}})
	tests := []struct {
		id   *pki.Identity
		addr string
		port uint16
		want Decision
	}{
		{ident("alice"), "127.0.0.1", 8080, Decision{Allow: true, Rule: `rule "alice" (#2)`}},
		{ident("alice"), "::1", 8080, Decision{Allow: true, Rule: `rule "alice" (#2)`}},
		{ident("alice"), "0.0.0.0", 9100, Decision{Allow: true, Rule: `rule "alice" (#2)`}},
		{ident("alice"), "0.0.0.0", 9050, Decision{Allow: false, Rule: `rule "deny-9050" (#1)`}},
		{ident("alice"), "127.0.0.1", 9000, Decision{Allow: false, Rule: DefaultDeny}}, // 0.0.0.0 is not "any address"
		{ident("alice"), "127.0.0.1", 0, Decision{Allow: false, Rule: DefaultDeny}},
		{ident("eve", "eng"), "127.0.0.1", 0, Decision{Allow: true, Rule: `rule "eng" (#3)`}},
		{ident("eve", "eng"), "127.0.0.1", 22, Decision{Allow: true, Rule: `rule "eng" (#3)`}},
		{ident("eve", "eng"), "127.0.0.2", 22, Decision{Allow: false, Rule: DefaultDeny}},
		{nil, "127.0.0.1", 22, Decision{Allow: false, Rule: "no identity"}},
	}
	for _, tt := range tests {
		if got := p.Bind(tt.id, netip.MustParseAddr(tt.addr), tt.port); got != tt.want {
			t.Errorf("Bind(%s, %s, %d) = %+v, want %+v", tt.id.Name(), tt.addr, tt.port, got, tt.want)
		}
	}
	// A rule with binds only is not a dial permission.
	if d := p.Dial(ident("alice"), Target{Addr: netip.MustParseAddr("127.0.0.1"), Port: 8080, Proto: "tcp"}); d.Allow {
		t.Errorf("binds granted a dial: %+v", d)
	}
}

func TestGrants(t *testing.T) {
	p := mustNew(t, exampleConfig)
	got := p.Grants(ident("alice"))
	want := []string{
		`rule "no-mgmt" (#1): deny to 198.19.255.0/24`,
		`rule "alice-ssh" (#4): allow to 198.19.1.10:22, [2001:db8::]/32:22; bind 127.0.0.1:8080, 0.0.0.0:9000-9100`,
		`rule #5: allow udp,tcp to dns.corp.example:53`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Grants(alice) =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if g := mustNew(t, Config{}).Grants(ident("alice")); g != nil {
		t.Errorf("Grants with no rules = %q", g)
	}
}

func TestNoAllocs(t *testing.T) {
	p := mustNew(t, exampleConfig)
	id := &pki.Identity{CommonName: "zed", DNSNames: []string{"zed.corp.example"}, IPs: []net.IP{net.ParseIP("198.18.9.9")}, Groups: []string{"sales", "eng"}}
	tg := Target{Host: "WIKI.corp.example.", Addr: netip.MustParseAddr("198.18.5.5"), Port: 8443, Proto: "tcp"}
	deny := Target{Addr: netip.MustParseAddr("2001:db8::1"), Port: 1, Proto: "udp"}
	var sink Decision
	if n := testing.AllocsPerRun(100, func() {
		sink = p.Dial(id, tg)
		sink = p.Dial(id, deny)
		sink = p.Bind(id, netip.MustParseAddr("127.0.0.1"), 8080)
		sink = p.Admit(id)
	}); n != 0 {
		t.Errorf("Dial/Bind/Admit allocate %v times per call", n)
	}
	_ = sink
}

// benchPolicy has enough rules that a default-deny walks a realistic list.
func benchPolicy(b *testing.B) *Policy {
	cfg := exampleConfig
	var rules []Rule
	for i := 0; i < 20; i++ {
		rules = append(rules, Rule{Groups: []string{"team" + string(rune('a'+i))}, Targets: []string{"198.18.0.0/24:443", "*.team.corp.example:80"}})
	}
	cfg.Rules = append(rules, cfg.Rules...)
	return mustNew(b, cfg)
}

func BenchmarkDial(b *testing.B) {
	p := benchPolicy(b)
	id := ident("eve", "sales", "eng")
	allow := Target{Addr: netip.MustParseAddr("198.18.5.5"), Port: 443, Proto: "tcp"}
	deny := Target{Addr: netip.MustParseAddr("2001:db8::1"), Port: 5, Proto: "udp"}
	b.Run("allow", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !p.Dial(id, allow).Allow {
				b.Fatal("denied")
			}
		}
	})
	b.Run("default-deny", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if p.Dial(id, deny).Allow {
				b.Fatal("allowed")
			}
		}
	})
}

// TestAddressIdentityMatchesCommonName: an identity entry that is an IP
// address names a certificate whose IP SAN or CN is that address (a CN-only
// certificate for a host is common, and Identity.Name reports the CN).
func TestAddressIdentityMatchesCommonName(t *testing.T) {
	p := mustNew(t, Config{
		Admit: Admission{Identities: []string{"198.18.7.7"}},
		Rules: []Rule{{Name: "host", Identities: []string{"198.18.7.7"}, Targets: []string{"any"}}},
	})
	for _, id := range []*pki.Identity{
		{CommonName: "198.18.7.7"},
		{CommonName: "h", IPs: []net.IP{net.ParseIP("198.18.7.7")}},
	} {
		if d := p.Admit(id); !d.Allow {
			t.Errorf("Admit(%+v) = %+v", id, d)
		}
		if d := p.Dial(id, Target{Addr: netip.MustParseAddr("198.19.0.1"), Port: 22, Proto: "tcp"}); !d.Allow {
			t.Errorf("Dial(%+v) = %+v", id, d)
		}
		if g := p.Grants(id); len(g) != 1 {
			t.Errorf("Grants(%+v) = %q", id, g)
		}
	}
	if d := p.Admit(&pki.Identity{CommonName: "198.18.7.8"}); d.Allow {
		t.Errorf("other address admitted: %+v", d)
	}
	// A deny rule naming the address must not be skipped for a CN-only
	// certificate, letting a later allow rule decide.
	p = mustNew(t, Config{Rules: []Rule{
		{Name: "deny-host", Identities: []string{"198.18.7.7"}, Action: "deny", Targets: []string{"198.19.0.0/16"}},
		{Name: "all", Identities: []string{"*"}, Targets: []string{"any"}},
	}})
	if d := p.Dial(&pki.Identity{CommonName: "198.18.7.7"}, Target{Addr: netip.MustParseAddr("198.19.0.1"), Port: 22, Proto: "tcp"}); d.Allow {
		t.Errorf("deny rule skipped: %+v", d)
	}
}
