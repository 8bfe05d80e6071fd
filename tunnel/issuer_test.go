package tunnel

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twoway/twoway/policy"
)

// TestSubCACannotPoseWithGroups: a sub-CA below the client CA (in the
// chain, not in the bundle) issues "ceo" with groups ops and admins. By
// default the gateway honours no groups from it, so admission by group
// fails; the client CA's own admin is admitted.
func TestSubCACannotPoseWithGroups(t *testing.T) {
	f := newFixture(t)
	branch := f.h.ClientCA.Sub(t, "branch CA")
	pol, err := policy.New(policy.Config{Admit: policy.Admission{Groups: []string{"admins"}},
		Rules: []policy.Rule{{Groups: []string{"admins"}, Targets: []string{"any"}}}})
	if err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, f.serverConfig(pol))

	admin := *f
	admin.clientCreds = newCreds(t, f.h.ClientCA.Client(t, "root-admin", "admins"), f.h.ServerBundle())
	connectSession(t, &admin, srv.Addr().String())

	rogue := *f
	rogue.clientCreds = newCreds(t, branch.Client(t, "ceo", "ops", "admins"), f.h.ServerBundle())
	c, err := NewClient(rogue.clientConfig(srv.Addr().String()), testLogger())
	if err != nil {
		t.Fatal(err)
	}
	c.ctx, c.cancel = contextWithCancel()
	defer c.cancel()
	if _, err := c.connect(srv.Addr().String()); !errors.Is(err, ErrDenied) {
		t.Fatalf("the branch CA's ceo with groups admins: %v, want a denial", err)
	}
}

// TestSameNameOtherIssuer: "alice" from the client CA and "alice" from a
// sub-CA are different identities. While one is connected the other is
// refused; when it has gone, the other does not get its VPN address.
func TestSameNameOtherIssuer(t *testing.T) {
	f := newFixture(t)
	gw := startVPNGateway(t, f, nil, false, "", "")
	addr := gw.srv.Addr().String()
	real := startVPNClient(t, f, f.clientCreds, addr)
	realCfg := waitFor(t, real.up, "alice up")

	branch := f.h.ClientCA.Sub(t, "branch CA")
	fakeCreds := newCreds(t, branch.Client(t, "alice", "vpn"), f.h.ServerBundle())
	probe, err := NewClient(f.clientConfig(addr), testLogger())
	if err != nil {
		t.Fatal(err)
	}
	probe.cfg.Credentials = fakeCreds
	probe.ctx, probe.cancel = contextWithCancel()
	defer probe.cancel()
	if _, err := probe.connect(addr); !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), "another CA") {
		t.Fatalf("the branch CA's alice while alice is connected: %v", err)
	}

	real.c.Stop()
	for len(gw.srv.Sessions()) > 0 {
		time.Sleep(5 * time.Millisecond) // polling the session table
	}
	fake := startVPNClient(t, f, fakeCreds, addr)
	fakeCfg := waitFor(t, fake.up, "the other alice up")
	if realCfg.Addresses[0] == fakeCfg.Addresses[0] {
		t.Fatalf("the branch CA's alice got alice's address %v", realCfg.Addresses[0])
	}
}
