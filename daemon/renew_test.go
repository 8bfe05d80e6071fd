package daemon

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/twoway/twoway/authority"
	"github.com/twoway/twoway/config"
	"github.com/twoway/twoway/tunnel"
)

// TestClientRenewsShortLivedCertificate runs a gateway with [enroll] and
// a client daemon holding a certificate of 12 seconds from the enrolling
// CA, as files. The client renews it over its session at about two
// thirds of its life, writes the new key and certificate over its files,
// and when the gateway ends the session at the old certificate's expiry
// it reconnects with the renewed one: the gateway sees the new serial.
func TestClientRenewsShortLivedCertificate(t *testing.T) {
	dir := t.TempDir()
	old := authority.KDFIterations
	authority.KDFIterations = 1000
	t.Cleanup(func() { authority.KDFIterations = old })
	res, err := authority.Init(filepath.Join(dir, "pki"), authority.InitOptions{Org: "Example Corp"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := res.ServerCA.Issue(authority.IssueRequest{Kind: authority.KindServer, Name: "127.0.0.1", OutDir: dir}); err != nil {
		t.Fatal(err)
	}
	// A certificate of 12 s: enrolled for a day, then renewed with a cap.
	token, _, err := res.ClientCA.CreateToken(authority.TokenOptions{Name: "alice", Groups: []string{"eng"}, Days: 1})
	if err != nil {
		t.Fatal(err)
	}
	csr := func() (*x509.CertificateRequest, *ecdsa.PrivateKey) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "alice"}}, key)
		c, _ := x509.ParseCertificateRequest(der)
		return c, key
	}
	r, _ := csr()
	day, _, err := res.ClientCA.Enroll(token, r, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	r, key := csr()
	short, err := res.ClientCA.Renew(day.Cert, r, time.Now(), 12*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("alice.crt", authority.EncodeCertificatesPEM(append([]*x509.Certificate{short.Cert}, short.Chain...)...))
	write("alice.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
	write("server.toml", []byte(`listen = "127.0.0.1:0"
[tls]
cert = "127.0.0.1.crt"
key = "127.0.0.1.key"
client_ca = "pki/client-ca/bundle.crt"
[enroll]
ca = "pki/client-ca"
[control]
socket = "off"
[policy.admit]
groups = ["eng"]
`))
	scfg, err := config.LoadServer(filepath.Join(dir, "server.toml"))
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	srv, err := NewServer(filepath.Join(dir, "server.toml"), scfg, logger.With("side", "gateway"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()

	write("client.toml", []byte(fmt.Sprintf(`servers = [%q]
[tls]
cert = "alice.crt"
key = "alice.key"
server_ca = "pki/server-ca/bundle.crt"
[control]
socket = "off"
[reconnect]
min_backoff = "50ms"
max_backoff = "200ms"
`, srv.Tunnel().Addr().String())))
	ccfg, err := config.LoadClient(filepath.Join(dir, "client.toml"))
	if err != nil {
		t.Fatal(err)
	}
	serials := make(chan string, 16)
	c, err := NewClient(ccfg, ClientHooks{OnSession: func(si tunnel.SessionInfo) { serials <- si.Self.Serial }}, logger.With("side", "client"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer c.Stop()

	next := func() string {
		select {
		case s := <-serials:
			return s
		case <-time.After(30 * time.Second):
			t.Fatal("no session within 30 s")
		}
		return ""
	}
	if s := next(); s != short.Cert.SerialNumber.Text(16) {
		t.Fatalf("first session with serial %s, want %s", s, short.Cert.SerialNumber.Text(16))
	}
	st := c.Status().Renewal
	if st == nil || st.LastOutcome != "" || !st.Next.After(short.Cert.NotBefore) || !st.Next.Before(short.Cert.NotAfter) {
		t.Fatalf("status before renewal: %+v", st)
	}
	// The gateway ends the session when the old certificate expires;
	// the client comes back with the renewed one.
	renewed := next()
	if renewed == short.Cert.SerialNumber.Text(16) {
		t.Fatal("reconnected with the old certificate")
	}
	st = c.Status().Renewal
	if st.LastOutcome != "renewed" || st.Failures != 0 {
		t.Errorf("status after renewal: %+v", st)
	}
	onDisk := c.store.Certificate().Leaf
	if onDisk.SerialNumber.Text(16) != renewed || onDisk.Subject.CommonName != "alice" {
		t.Errorf("loaded certificate serial %s of %s, want %s of alice", onDisk.SerialNumber.Text(16), onDisk.Subject.CommonName, renewed)
	}
	if d := onDisk.NotAfter.Sub(onDisk.NotBefore); d != 12*time.Second {
		t.Errorf("renewed lifetime %v, want the old 12s", d)
	}
	db, err := authority.LoadDB(filepath.Join(dir, "pki/client-ca", authority.DBFile))
	if err != nil {
		t.Fatal(err)
	}
	if db.Find(onDisk.SerialNumber) < 0 {
		t.Error("renewed certificate not in the CA database")
	}
}
