package main

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/twoway/twoway/authority"
	"github.com/twoway/twoway/config"
	"github.com/twoway/twoway/enroll"
	"github.com/twoway/twoway/keystore"
	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/policy"
	"github.com/twoway/twoway/tunnel"
)

// enrollTestGateway is an in-process gateway that enrolls laptops, for
// the tests of `twoway enroll --key REFERENCE`.
type enrollTestGateway struct {
	dir, pkiDir string
	res         *authority.InitResult
	srv         *tunnel.Server
	gwUp        chan tunnel.SessionInfo
}

func newEnrollTestGateway(t *testing.T) *enrollTestGateway {
	t.Helper()
	dir := t.TempDir()
	pkiDir := filepath.Join(dir, "pki")
	res, err := authority.Init(pkiDir, authority.InitOptions{Org: "Example Corp"})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := res.ServerCA.Issue(authority.IssueRequest{Kind: authority.KindServer, Name: "127.0.0.1", OutDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	store, err := pki.NewStore(pki.StoreConfig{CertFile: gw.CertFile, KeyFile: gw.KeyFile,
		CABundle: filepath.Join(pkiDir, authority.ClientCADir, "bundle.crt")})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.New(policy.Config{Admit: policy.Admission{Groups: []string{"*"}}})
	if err != nil {
		t.Fatal(err)
	}
	gwUp := make(chan tunnel.SessionInfo, 1)
	srv, err := tunnel.NewServer(tunnel.ServerConfig{Listen: "127.0.0.1:0", Credentials: store, Policy: pol,
		Enroll: enroll.NewHandler(res.ClientCA, nil), OnSession: func(si tunnel.SessionInfo) {
			select {
			case gwUp <- si: // the first session, for connect
			default:
			}
		}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)

	return &enrollTestGateway{dir: dir, pkiDir: pkiDir, res: res, srv: srv, gwUp: gwUp}
}

// connect loads c as `twoway client -c client.toml` would and opens a
// session with it, checking that the gateway sees the enrolled
// certificate and that its key is the store's.
func (g *enrollTestGateway) connect(t *testing.T, c *config.Client) {
	t.Helper()
	srv, gwUp := g.srv, g.gwUp
	// Connect with it, as `twoway client -c client.toml` would load it.
	creds, err := pki.NewStore(pki.StoreConfig{CertFile: c.TLS.Cert, KeyFile: c.TLS.Key, CABundle: c.TLS.ServerCA})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(creds.Close)
	if !keystore.InStore(creds.Certificate().PrivateKey) {
		t.Fatal("the client's key is not the token's")
	}
	up := make(chan tunnel.SessionInfo, 1)
	cl, err := tunnel.NewClient(tunnel.ClientConfig{Endpoints: []string{srv.Addr().String()}, ServerName: "127.0.0.1",
		Credentials: creds, OnSession: func(si tunnel.SessionInfo) { up <- si }}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Stop)
	select {
	case si := <-gwUp:
		if si.Peer.CommonName != "alice" || !si.PeerChain[0].Equal(creds.Certificate().Leaf) {
			t.Fatalf("gateway saw %v", si.Peer)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no session with the enrolled token key")
	}
	<-up
}
