package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twoway/twoway/authority"
	"github.com/twoway/twoway/config"
	"github.com/twoway/twoway/pki"
)

// TestEnrollCommand enrolls against an in-process gateway whose PKI is made
// as the README says ('twoway pki init'), and checks what lands on disk is
// a client configuration that loads.
func TestEnrollCommand(t *testing.T) {
	g := newEnrollTestGateway(t)
	dir, pkiDir, res, srv := g.dir, g.pkiDir, g.res, g.srv
	token, _, err := res.ClientCA.CreateToken(authority.TokenOptions{Name: "alice", Groups: []string{"eng"}, Days: 7})
	if err != nil {
		t.Fatal(err)
	}
	o := enrollOptions{server: srv.Addr().String(), ca: filepath.Join(pkiDir, authority.ServerCADir, "bundle.crt"),
		token: token, outDir: filepath.Join(dir, "laptop"), keyType: string(authority.KeyECDSAP256), timeout: 10e9}
	// A bundle that did not issue the gateway's certificate: refused
	// before the token is sent, so it still works afterwards.
	wrong := o
	wrong.ca = filepath.Join(pkiDir, authority.ClientCADir, "bundle.crt")
	if _, err := runEnroll(context.Background(), wrong); !errors.Is(err, pki.ErrUntrusted) {
		t.Errorf("gateway checked against the wrong CA: %v, want %v", err, pki.ErrUntrusted)
	}
	// The token from a file, as on a shared machine (arguments show in
	// ps).
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fromFile := o
	fromFile.token, fromFile.tokenFile = "", tokenFile
	written, err := runEnroll(context.Background(), fromFile)
	if err != nil {
		t.Fatal(err)
	}
	if len(written) != 4 {
		t.Errorf("wrote %v", written)
	}
	if fi, err := os.Stat(filepath.Join(o.outDir, enrollKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v, %v; want mode 0600", fi, err)
	}
	c, err := config.LoadClient(filepath.Join(o.outDir, enrollConfigFile))
	if err != nil {
		t.Fatalf("written client.toml: %v", err)
	}
	certs, err := pki.LoadCertificates(c.TLS.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if id := pki.IdentityFromCert(certs[0]); id.CommonName != "alice" || strings.Join(id.Groups, ",") != "eng" {
		t.Errorf("certificate for %v in %v, want alice in eng", id.CommonName, id.Groups)
	}

	// Files are never replaced, and the check comes before the token is
	// spent.
	if _, err := runEnroll(context.Background(), o); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("enroll into a used directory: %v", err)
	}
	// The token is spent: refused, and nothing written.
	o.outDir = filepath.Join(dir, "again")
	if _, err := runEnroll(context.Background(), o); !errors.Is(err, authority.ErrTokenUsed) {
		t.Errorf("second enrollment: %v, want %v", err, authority.ErrTokenUsed)
	}
	if _, err := os.Stat(o.outDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused enrollment left %s: %v", o.outDir, err)
	}
}

func TestEnrollCommandFlags(t *testing.T) {
	// No gateway listens: the flags are checked before anything else.
	o := enrollOptions{server: "127.0.0.1", ca: "x", token: "t", outDir: t.TempDir(), timeout: 1e9}
	if _, err := runEnroll(context.Background(), o); err == nil || !strings.Contains(err.Error(), "want host:port") {
		t.Errorf("--server without port: %v", err)
	}
	o.server, o.ca = "127.0.0.1:1", ""
	if _, err := runEnroll(context.Background(), o); err == nil || !strings.Contains(err.Error(), "--ca is required") {
		t.Errorf("no --ca: %v", err)
	}
	o.ca, o.token = "x", ""
	if _, err := runEnroll(context.Background(), o); err == nil || !strings.Contains(err.Error(), "--token or --token-file is required") {
		t.Errorf("no token: %v", err)
	}
	o.token, o.tokenFile = "t", "f"
	if _, err := runEnroll(context.Background(), o); err == nil || !strings.Contains(err.Error(), "not both") {
		t.Errorf("--token and --token-file: %v", err)
	}
	empty := filepath.Join(t.TempDir(), "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	o.token, o.tokenFile = "", empty
	if _, err := runEnroll(context.Background(), o); err == nil || !strings.Contains(err.Error(), "no token in its first line") {
		t.Errorf("an empty token file: %v", err)
	}
}
