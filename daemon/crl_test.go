package daemon

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/twoway/twoway/config"
	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/pki/pkitest"
)

// TestReloadRefusesOlderCRL: a gateway whose CRL file is replaced by an
// older CRL of the same CA (lower CRL number) refuses the reload and keeps
// the CRL in use; a newer one reloads. A CRL of a CA that is not in
// client_ca is logged as a configuration warning at start.
func TestReloadRefusesOlderCRL(t *testing.T) {
	path, _ := serverConfig(t, "127.0.0.1:0", "")
	dir := filepath.Dir(path)
	h := pkitest.NewHierarchy(t)
	write := func(name string, data []byte) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("client-ca.crt", pkitest.PEM(h.ClientBundle()...))
	write("crl.pem", pkitest.CRLPEM(h.ClientCA.CRL(t, 5)))
	write("server-ca-crl.pem", pkitest.CRLPEM(h.ServerCA.CRL(t, 1)))
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	write("server.toml", bytes.Replace(data, []byte("client_ca = \"client-ca.crt\"\n"),
		[]byte("client_ca = \"client-ca.crt\"\ncrls = [\"crl.pem\", \"server-ca-crl.pem\"]\n"), 1))
	cfg, err := config.LoadServer(path)
	if err != nil {
		t.Fatal(err)
	}

	var buf bytes.Buffer
	var mu sync.Mutex
	logged := func(sub string) bool {
		mu.Lock()
		defer mu.Unlock()
		return strings.Contains(buf.String(), sub)
	}
	s, err := NewServer(path, cfg, slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	if !logged(config.ErrCRLMatchesNoCA.Error()) || !logged("key=tls.crls[1]") {
		t.Fatalf("no warning for the server CA's CRL:\n%s", buf.String())
	}

	write("crl.pem", pkitest.CRLPEM(h.ClientCA.CRL(t, 4)))
	if err := s.Reload(); !errors.Is(err, pki.ErrCRLRollback) {
		t.Fatalf("reload of CRL 4 over CRL 5: %v", err)
	}
	if n := s.store.Verifier().CRLs()[0].Number.Int64(); n != 5 {
		t.Fatalf("CRL in use after the refused reload: number %d, want 5", n)
	}
	write("crl.pem", pkitest.CRLPEM(h.ClientCA.CRL(t, 6)))
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if n := s.store.Verifier().CRLs()[0].Number.Int64(); n != 6 {
		t.Fatalf("CRL in use after reload: number %d, want 6", n)
	}
}
