package tunnel

import (
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/twoway/twoway/policy"
)

// TestRealPolicy runs the tunnel with package policy itself, to hold both
// sides of the contract to it.
func TestRealPolicy(t *testing.T) {
	f := newFixture(t)
	allowed := startTarget(t, echo)
	denied := startTarget(t, echo)
	pol, err := policy.New(policy.Config{
		Admit: policy.Admission{Groups: []string{"eng"}},
		Rules: []policy.Rule{{
			Name:    "eng-echo",
			Groups:  []string{"eng"},
			Targets: []string{allowed.addr()},
			Binds:   []string{"127.0.0.1"},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, f.serverConfig(pol))

	remote := make(chan error, 1)
	ccfg := f.clientConfig(srv.Addr().String(),
		mustForward(t, ForwardLocal, "127.0.0.1:0", allowed.addr()),
		mustForward(t, ForwardLocal, "127.0.0.1:0", denied.addr()),
		mustForward(t, ForwardRemote, "127.0.0.1:0", allowed.addr()))
	ccfg.OnRemoteListen = func(_ Forward, _ string, err error) { remote <- err }
	var ev sessionEvents
	ev.hook(&ccfg)
	c := startClient(t, ccfg)
	si := waitFor(t, ev.up, "session")
	if len(si.Grants) != 1 || !strings.Contains(si.Grants[0], "eng-echo") {
		t.Fatalf("grants %q", si.Grants)
	}
	if err := waitFor(t, remote, "remote listen"); err != nil {
		t.Fatalf("-R on 127.0.0.1: %v", err)
	}

	fw := c.Forwards()
	conn, err := net.Dial("tcp", fw[0].Local.String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	roundTrip(t, conn, "allowed by eng-echo")

	// The gateway's refusal comes back fast on loopback and the client
	// resets the connection: the reset can even beat the dialer's own
	// check of its connect.
	conn2, err := net.Dial("tcp", fw[1].Local.String())
	if err == nil {
		defer conn2.Close()
		_, err = conn2.Read(make([]byte, 1))
	}
	if !isRefusedLocally(err) {
		t.Fatalf("denied target: %v", err)
	}
	host, port, _ := net.SplitHostPort(denied.addr())
	if _, _, _, err := c.open(host, mustPort(t, port)); !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), policy.DefaultDeny) {
		t.Fatalf("denied target: %v", err)
	}

	// Not in group eng: no session at all.
	carol := f.h.ClientCA.Client(t, "carol", "sales")
	cc := f.clientConfig(srv.Addr().String())
	cc.Credentials = newCreds(t, carol, f.h.ServerBundle())
	c2, _ := NewClient(cc, testLogger())
	c2.ctx, c2.cancel = contextWithCancel()
	defer c2.cancel()
	if _, err := c2.connect(srv.Addr().String()); !errors.Is(err, ErrDenied) {
		t.Fatalf("carol: %v", err)
	}
}
