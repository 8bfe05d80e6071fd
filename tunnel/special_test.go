package tunnel

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/twoway/twoway/policy"
)

// TestForwardSpecialAddresses is the attack list: with a policy
// that denies loopback and then allows "any", or allows a domain by name,
// no forward reaches the gateway itself, its metadata service or its own
// addresses; a rule naming an address explicitly still works.
func TestForwardSpecialAddresses(t *testing.T) {
	f := newFixture(t)
	svc := startTarget(t, echo) // a loopback-only service on the gateway
	_, svcPort, _ := net.SplitHostPort(svc.addr())
	port := mustPort(t, svcPort)
	pol, err := policy.New(policy.Config{
		Admit: policy.Admission{Groups: []string{"*"}},
		Rules: []policy.Rule{
			{Name: "no-loopback", Groups: []string{"*"}, Action: "deny", Targets: []string{"127.0.0.0/8", "[::1]"}},
			{Name: "corp", Groups: []string{"*"}, Targets: []string{"*.corp.example"}},
			{Name: "everything", Groups: []string{"*"}, Targets: []string{"any"}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	cfg := f.serverConfig(pol)
	cfg.Resolver = fakeResolver{
		"own.corp.example":  {netip.MustParseAddr("198.18.0.99")},
		"meta.corp.example": {netip.MustParseAddr("169.254.169.254")},
	}
	own := netip.MustParseAddr("198.18.0.99")
	cfg.LocalAddrs = func() ([]netip.Addr, error) { return []netip.Addr{own}, nil }
	srv := startServer(t, cfg)
	c := startClient(t, f.clientConfig(srv.Addr().String()))

	for _, host := range []string{"0.0.0.0", "::", "own.corp.example", "meta.corp.example", "169.254.169.254", own.String(), "224.0.0.251"} {
		_, _, _, err := c.open(host, port)
		if !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), policy.SpecialAddress) {
			t.Errorf("forward to %s:%d: %v, want a denial for a special address", host, port, err)
		}
	}

	// An explicit rule for the loopback service is honoured.
	pol2, err := policy.New(policy.Config{
		Admit: policy.Admission{Groups: []string{"*"}},
		Rules: []policy.Rule{{Name: "metrics", Groups: []string{"*"}, Targets: []string{"127.0.0.1/32:" + svcPort}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv.SetPolicy(pol2)
	_, st, _, err := c.open("127.0.0.1", port)
	if err != nil {
		t.Fatalf("explicitly allowed loopback target: %v", err)
	}
	st.Close()
}

// TestForwardToOtherClientRefused: with client_to_client off, a forward
// through the gateway to an address of its VPN pools (another client) is
// refused, whatever the policy allows; with it on, the policy decides.
func TestForwardToOtherClientRefused(t *testing.T) {
	for _, c2c := range []bool{false, true} {
		f := newFixture(t)
		gw := startVPNGateway(t, f, nil, c2c, "", "")
		cs := connectSession(t, f, gw.srv.Addr().String())
		_, _, err := cs.openConnect("198.18.100.7", 9000)
		refused := errors.Is(err, ErrDenied) && strings.Contains(err.Error(), "client-to-client")
		if refused == c2c {
			t.Errorf("client_to_client=%v: forward to a pool address: %v", c2c, err)
		}
	}
}
