package policy

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/twoway/twoway/pki"
)

func issued(name string, byBundle bool, issuer, fp string, groups ...string) *pki.Identity {
	return &pki.Identity{CommonName: name, Groups: groups, IssuedByBundle: byBundle,
		CAs: []pki.CARef{{Name: issuer, Fingerprint: fp}, {Name: "root", Fingerprint: "00"}}}
}

const branchFP = "AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99"

// TestHonourGroups: by default only a CA of the bundle grants groups; with
// [[policy.ca]] entries, each CA grants what its entry lists.
func TestHonourGroups(t *testing.T) {
	rules := []Rule{{Name: "admins", Groups: []string{"admins"}, Targets: []string{"198.18.9.9"}}}
	def := mustNew(t, Config{Admit: Admission{Groups: []string{"*"}}, Rules: rules})
	corp := issued("alice", true, "client CA", "11", "ops", "admins")
	rogue := issued("ceo", false, "branch CA", branchFP, "ops", "admins")

	if got := def.Honour(corp); len(got.Groups) != 2 || len(got.DroppedGroups) != 0 {
		t.Errorf("default, bundle CA: %+v", got)
	}
	got := def.Honour(rogue)
	if len(got.Groups) != 0 || len(got.DroppedGroups) != 2 {
		t.Errorf("default, sub-CA: kept %v dropped %v", got.Groups, got.DroppedGroups)
	}
	if len(rogue.Groups) != 2 {
		t.Error("Honour changed its argument")
	}
	tgt := Target{Addr: mustAddr("198.18.9.9"), Port: 22, Proto: "tcp"}
	if d := def.Dial(got, tgt); d.Allow {
		t.Errorf("the sub-CA's admins group was honoured: %+v", d)
	}

	scoped := mustNew(t, Config{Admit: Admission{Groups: []string{"*"}}, Rules: rules, CAs: []CAGroups{
		{Issuer: "client CA", Groups: []string{"*"}},
		{Issuer: "sha256:" + branchFP, Groups: []string{"ops"}},
	}})
	if g := scoped.Honour(rogue); len(g.Groups) != 1 || g.Groups[0] != "ops" || len(g.DroppedGroups) != 1 {
		t.Errorf("branch CA may grant ops only: kept %v dropped %v", g.Groups, g.DroppedGroups)
	}
	if g := scoped.Honour(corp); len(g.Groups) != 2 {
		t.Errorf(`client CA grants "*": %v`, g.Groups)
	}
	if g := scoped.Honour(issued("x", true, "other CA", "22", "ops")); len(g.Groups) != 0 {
		t.Errorf("a CA without an entry granted %v", g.Groups)
	}
}

// TestIssuers: rules and admission scoped by issuer, by name or
// fingerprint, match only certificates that CA signed.
func TestIssuers(t *testing.T) {
	p := mustNew(t, Config{
		Admit: Admission{Identities: []string{"ceo", "alice"}, Issuers: []string{"client CA", branchFP}},
		Rules: []Rule{
			{Name: "ceo", Identities: []string{"ceo"}, Issuers: []string{"client CA"}, Targets: []string{"any"}},
			{Name: "branch", Identities: []string{"*"}, Issuers: []string{"sha256:" + branchFP}, Targets: []string{"198.18.7.0/24"}},
		},
	})
	real := issued("ceo", true, "client CA", "11")
	fake := issued("ceo", false, "branch CA", branchFP)
	tgt := Target{Addr: mustAddr("198.18.1.1"), Port: 443, Proto: "tcp"}
	if d := p.Dial(real, tgt); !d.Allow {
		t.Errorf("the client CA's ceo: %+v", d)
	}
	if d := p.Dial(fake, tgt); d.Allow {
		t.Errorf("the branch CA's ceo reached %v: %+v", tgt.Addr, d)
	}
	if d := p.Dial(fake, Target{Addr: mustAddr("198.18.7.5"), Port: 443, Proto: "tcp"}); !d.Allow || d.Rule != `rule "branch" (#2)` {
		t.Errorf("branch rule by fingerprint: %+v", d)
	}
	if d := p.Admit(issued("alice", true, "elsewhere CA", "33")); d.Allow {
		t.Errorf("admitted from an unlisted issuer: %+v", d)
	}
	if d := p.Admit(fake); !d.Allow {
		t.Errorf("admission by fingerprint: %+v", d)
	}
	for _, bad := range []string{"", " client CA", "sha256:abcd"} {
		_, err := New(Config{Admit: Admission{Groups: []string{"*"}}, CAs: []CAGroups{{Issuer: bad, Groups: []string{"*"}}}})
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Rule != -2 || ce.Field != "issuer" {
			t.Errorf("issuer %q: %v", bad, err)
		}
	}
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
