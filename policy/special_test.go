package policy

import (
	"github.com/twoway/twoway/pki"
	"net/netip"
	"testing"
)

// TestDialSpecialAddresses: "any", wide CIDRs and host names never grant
// loopback, link-local (metadata), multicast or the gateway's own
// addresses; a rule that names them does; unspecified addresses are never
// dialed; deny rules still match them.
func TestDialSpecialAddresses(t *testing.T) {
	p := mustNew(t, Config{
		Admit: Admission{Groups: []string{"*"}},
		Rules: []Rule{
			{Name: "no-lo", Groups: []string{"*"}, Action: "deny", Targets: []string{"127.0.0.2"}},
			{Name: "ops-lo", Groups: []string{"ops"}, Targets: []string{"127.0.0.0/8:9100", "[::1]:9100", "169.254.169.254:80", "198.19.1.1:22"}},
			{Name: "names", Groups: []string{"*"}, Targets: []string{"*.corp.example", "metadata.google.internal"}},
			{Name: "wide", Groups: []string{"*"}, Targets: []string{"0.0.0.0/0", "::/0", "126.0.0.0/7"}},
			{Name: "any", Groups: []string{"*"}, Targets: []string{"any"}},
		},
	})
	eng, ops := ident("eve", "eng"), ident("oscar", "ops")
	special := Decision{Rule: DefaultDeny, Reason: SpecialAddress}
	tcp := func(host, addr string, port uint16, local bool) Target {
		return Target{Host: host, Addr: netip.MustParseAddr(addr), Port: port, Proto: "tcp", Local: local}
	}
	tests := []struct {
		name string
		id   *pki.Identity
		t    Target
		want Decision
	}{
		{"any does not reach loopback", eng, tcp("", "127.0.0.1", 9100, false), special},
		{"nor IPv6 loopback", eng, tcp("", "::1", 9100, false), special},
		{"nor a mapped loopback", eng, tcp("", "::ffff:127.0.0.1", 9100, false), special},
		{"nor cloud metadata", eng, tcp("", "169.254.169.254", 80, false), special},
		{"nor IPv6 link-local", eng, tcp("", "fe80::1", 22, false), special},
		{"nor multicast", eng, tcp("", "239.1.2.3", 5000, false), special},
		{"nor broadcast", eng, tcp("", "255.255.255.255", 5000, false), special},
		{"nor the gateway's own address", eng, tcp("", "198.19.1.1", 22, true), special},
		{"a name resolving to loopback", eng, tcp("localhost.corp.example", "127.0.0.1", 80, false), special},
		{"a name resolving to metadata", eng, tcp("metadata.google.internal", "169.254.169.254", 80, false), special},
		{"unspecified, even for ops", ops, tcp("", "0.0.0.0", 9100, false), special},
		{"IPv6 unspecified", ops, tcp("", "::", 9100, false), special},
		{"named loopback range", ops, tcp("", "127.0.0.1", 9100, false), Decision{Allow: true, Rule: `rule "ops-lo" (#2)`}},
		{"named IPv6 loopback", ops, tcp("", "::1", 9100, false), Decision{Allow: true, Rule: `rule "ops-lo" (#2)`}},
		{"named metadata", ops, tcp("", "169.254.169.254", 80, false), Decision{Allow: true, Rule: `rule "ops-lo" (#2)`}},
		{"named own address", ops, tcp("", "198.19.1.1", 22, true), Decision{Allow: true, Rule: `rule "ops-lo" (#2)`}},
		{"own address on another port", ops, tcp("", "198.19.1.1", 23, true), special},
		{"named range, other port", ops, tcp("", "127.0.0.1", 22, false), special},
		{"deny rules still match", ops, tcp("", "127.0.0.2", 9100, false), Decision{Rule: `rule "no-lo" (#1)`}},
		{"ordinary addresses unaffected", eng, tcp("", "198.19.1.10", 22, false), Decision{Allow: true, Rule: `rule "wide" (#4)`}},
	}
	for _, tt := range tests {
		if got := p.Dial(tt.id, tt.t); got != tt.want {
			t.Errorf("%s: Dial(%s, %+v) = %+v, want %+v", tt.name, tt.id.Name(), tt.t, got, tt.want)
		}
	}
}
