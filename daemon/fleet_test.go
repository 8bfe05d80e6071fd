package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/twoway/twoway/config"
	"github.com/twoway/twoway/fleet"
	"github.com/twoway/twoway/fleet/fleettest"
	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/pki/pkitest"
	"github.com/twoway/twoway/policy"
	"github.com/twoway/twoway/tunnel"
)

// TestFleetFailoverResumesAndRevokes: two gateways of a fleet on a real
// etcd member. The second sees the session the first holds and kicks it
// there; the client moves to the second and resumes its TLS session with
// the ticket the first one issued (shared ticket keys); the second stops
// and the client moves back, resuming again; a policy published to the
// fleet that does not admit it ends its session and keeps it out until
// removed; a CRL published to the fleet then ends its session within a
// second (measured).
func TestFleetFailoverResumesAndRevokes(t *testing.T) {
	etcdDir := t.TempDir()
	c, err := fleettest.StartCluster(etcdDir, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)

	dir := t.TempDir()
	h := pkitest.NewHierarchy(t)
	gw := h.ServerCA.Server(t, "127.0.0.1")
	alice := h.ClientCA.Client(t, "alice", "eng")
	write := func(name string, data []byte) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("gateway.crt", pkitest.PEM(gw.Certs()...))
	write("gateway.key", pkitest.KeyPEM(t, gw.Key))
	write("client-ca.crt", pkitest.PEM(h.ClientBundle()...))
	gateway := func(name string) *Server {
		t.Helper()
		path := write(name+".toml", fmt.Appendf(nil, `listen = "127.0.0.1:0"
[tls]
cert = "gateway.crt"
key = "gateway.key"
client_ca = "client-ca.crt"
[control]
socket = "off"
[policy.admit]
groups = ["eng"]
[fleet]
endpoints = [%q]
name = %q
prefix = "/test/"
lease_ttl = "2s"
`, c.Endpoints[0], name))
		cfg, err := config.LoadServer(path)
		if err != nil {
			t.Fatal(err)
		}
		s, err := NewServer(path, cfg, testLog(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Stop)
		return s
	}
	a, b := gateway("gw1"), gateway("gw2")

	creds, err := pki.NewStore(pki.StoreConfig{
		CertFile: write("alice.crt", pkitest.PEM(alice.Certs()...)),
		KeyFile:  write("alice.key", pkitest.KeyPEM(t, alice.Key)),
		CABundle: write("server-ca.crt", pkitest.PEM(h.ServerBundle()...)),
	})
	if err != nil {
		t.Fatal(err)
	}
	up := make(chan tunnel.SessionInfo, 4)
	down := make(chan error, 4)
	cl, err := tunnel.NewClient(tunnel.ClientConfig{
		Endpoints:    []string{a.Tunnel().Addr().String(), b.Tunnel().Addr().String()},
		ServerName:   "127.0.0.1", // one name for the fleet: tickets resume on either gateway
		Credentials:  creds,
		BackoffMin:   10 * time.Millisecond,
		BackoffMax:   100 * time.Millisecond,
		OnSession:    func(si tunnel.SessionInfo) { up <- si },
		OnDisconnect: func(err error) { down <- err },
	}, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Stop)
	wait := func(ch <-chan tunnel.SessionInfo, what string) tunnel.SessionInfo {
		t.Helper()
		select {
		case si := <-ch:
			return si
		case <-time.After(10 * time.Second):
			t.Fatalf("timed out waiting for %s", what)
		}
		return tunnel.SessionInfo{}
	}
	first := wait(up, "a session on gw1")
	if first.TLS.DidResume {
		t.Fatal("the first session resumed")
	}

	if f := b.Status().Fleet; f == nil || f.Name != "gw2" || !f.Reachable {
		t.Errorf("gw2's status of its fleet link: %+v", f)
	}

	// gw2 sees the session gw1 holds, and kicks it there.
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := b.FleetStatus()
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Sessions) == 1 && st.Sessions[0].Gateway == "gw1" && st.Sessions[0].Identity == "alice" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("gw2's fleet status: %+v, want alice on gw1", st.Sessions)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n, err := b.FleetKick("alice"); err != nil || n != 1 {
		t.Fatalf("fleet kick from gw2: %d sessions, %v; want 1", n, err)
	}
	<-down
	second := wait(up, "a session on gw2")
	if second.Remote.String() != b.Tunnel().Addr().String() {
		t.Fatalf("moved to %v, want gw2 at %v", second.Remote, b.Tunnel().Addr())
	}
	if !second.TLS.DidResume {
		t.Error("the session on gw2 did not resume gw1's TLS session: ticket keys not shared")
	}

	// gw2 stops: the client goes back to gw1, resuming again.
	b.Stop()
	<-down
	third := wait(up, "a session on gw1 again")
	if third.Remote.String() != a.Tunnel().Addr().String() || !third.TLS.DidResume {
		t.Errorf("after gw2 stopped: on %v, resumed %v; want gw1, resumed", third.Remote, third.TLS.DidResume)
	}

	fcfg := a.cfg.Fleet.Config()

	// A policy published to the fleet that admits only ops: alice's
	// session ends and she stays out; removing it lets her back in.
	doc, err := json.Marshal(policy.Config{Admit: policy.Admission{Groups: []string{"ops"}}})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := fleet.PublishPolicyWith(context.Background(), fcfg, doc); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-down:
		t.Logf("published policy to session cut: %v (%v)", time.Since(start), err)
	case <-time.After(5 * time.Second):
		t.Fatal("the session survived a fleet policy that does not admit it")
	}
	select {
	case si := <-up:
		t.Fatalf("alice got a session under the fleet policy: %v", si.Remote)
	case <-time.After(300 * time.Millisecond):
	}
	if err := fleet.PublishPolicyWith(context.Background(), fcfg, nil); err != nil {
		t.Fatal(err)
	}
	wait(up, "a session once the fleet policy is removed")

	crl := h.ClientCA.CRL(t, 1, alice.Cert)
	start = time.Now()
	if err := fleet.Publish(context.Background(), fcfg, crl); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-down:
		took := time.Since(start)
		t.Logf("published CRL to session cut on gw1: %v (%v)", took, err)
		if took > time.Second {
			t.Errorf("revocation took %v fleet-wide, want under 1 s", took)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the revoked session on gw1 survived 5 s")
	}
	// It stays out: the next attempt is refused at verification.
	select {
	case si := <-up:
		t.Fatalf("revoked client got a session again: %v", si.Remote)
	case <-time.After(300 * time.Millisecond):
	}
	if err := fleet.Publish(context.Background(), fcfg, crl); !errors.Is(err, fleet.ErrCRLNotNewer) {
		t.Errorf("publishing the same CRL again: %v, want ErrCRLNotNewer", err)
	}
}

// testLog logs to the test's output.
func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}
