//go:build cgo

package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twoway/twoway/authority"
	"github.com/twoway/twoway/config"
	"github.com/twoway/twoway/enroll"
	"github.com/twoway/twoway/keystore"
	"github.com/twoway/twoway/keystore/softhsmtest"
	"github.com/twoway/twoway/pki"
)

// TestEnrollKeyInToken: `twoway enroll --key pkcs11:...` makes the key in
// a (SoftHSM2) token, writes no key file and a client.toml that names the
// token's key; that configuration then connects to the gateway, signing
// with the token. A failed enrollment leaves no key behind in the token.
func TestEnrollKeyInToken(t *testing.T) {
	h := softhsmtest.New(t)
	h.InitToken("laptop")
	g := newEnrollTestGateway(t)
	dir, pkiDir, res, srv := g.dir, g.pkiDir, g.res, g.srv
	var err error
	ref := h.URI("laptop", "twoway")
	o := enrollOptions{server: srv.Addr().String(), ca: filepath.Join(pkiDir, authority.ServerCADir, "bundle.crt"),
		token: "tw1-not-a-token", outDir: filepath.Join(dir, "laptop"), keyType: string(authority.KeyECDSAP256), key: ref, timeout: 10 * time.Second}

	// A refused enrollment removes the key it made from the token.
	if _, err := runEnroll(context.Background(), o); !errors.Is(err, enroll.ErrRefused) {
		t.Fatalf("enroll with a bad token: %v, want refused", err)
	}
	if _, err := keystore.Open(ref); !errors.Is(err, keystore.ErrUnavailable) {
		t.Fatalf("after a refused enrollment the token still holds the key: %v", err)
	}

	o.token, _, err = res.ClientCA.CreateToken(authority.TokenOptions{Name: "alice", Groups: []string{"eng"}, Days: 7})
	if err != nil {
		t.Fatal(err)
	}
	written, err := runEnroll(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	if len(written) != 3 {
		t.Errorf("wrote %v, want certificate, CA and client.toml", written)
	}
	if _, err := os.Stat(filepath.Join(o.outDir, enrollKeyFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a key file was written: %v", err)
	}
	text, _ := os.ReadFile(filepath.Join(o.outDir, enrollConfigFile))
	if strings.Contains(string(text), softhsmtest.PIN) {
		t.Errorf("client.toml holds the PIN:\n%s", text)
	}
	c, err := config.LoadClient(filepath.Join(o.outDir, enrollConfigFile))
	if err != nil {
		t.Fatalf("written client.toml: %v", err)
	}
	if c.TLS.Key != ref {
		t.Fatalf("client.toml names key %q, want %q", c.TLS.Key, ref)
	}

	g.connect(t, c)

	// Enrolling again into the same object is refused before the
	// gateway is asked...
	o.outDir = filepath.Join(dir, "again")
	if _, err := runEnroll(context.Background(), o); !errors.Is(err, keystore.ErrExists) {
		t.Errorf("second enrollment into the same object: %v, want ErrExists", err)
	}
	// ...unless the key there is to be used, as with keys made by the
	// token's own tool; a failure then keeps the key.
	o.existingKey = true
	if _, err := runEnroll(context.Background(), o); !errors.Is(err, authority.ErrTokenUsed) {
		t.Errorf("enrollment with the existing key and a spent token: %v, want %v", err, authority.ErrTokenUsed)
	}
	if k, err := keystore.Open(ref); err != nil {
		t.Errorf("a failed enrollment with --existing-key removed the key: %v", err)
	} else {
		k.Close()
	}
	o.token, _, err = res.ClientCA.CreateToken(authority.TokenOptions{Name: "alice", Groups: []string{"eng"}, Days: 7})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := runEnroll(context.Background(), o); err != nil {
		t.Errorf("enrollment with the existing key: %v", err)
	}
}

// TestPKICSRKeyInToken: `twoway pki csr --key pkcs11:...` makes a
// gateway's key in a token and writes only the request; the certificate
// `pki sign` makes for it loads with the token's key, as server.toml's
// tls.key = "pkcs11:..." does.
func TestPKICSRKeyInToken(t *testing.T) {
	h := softhsmtest.New(t)
	h.InitToken("gateway")
	dir := t.TempDir()
	pkiDir := filepath.Join(dir, "pki")
	if out, err := runCmd(t, "pki", "init", "--dir", pkiDir, "--org", "Example Corp", "--no-password"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	ref := h.URI("gateway", "gw")
	if out, err := runCmd(t, "pki", "csr", "--name", "gw.example.com", "--key", ref, "--encrypt", "--out-dir", dir); err == nil || !strings.Contains(err.Error(), "protected by the token's PIN") {
		t.Fatalf("--key with --encrypt: %v\n%s", err, out)
	}
	out, err := runCmd(t, "pki", "csr", "--name", "gw.example.com", "--key", ref, "--out-dir", dir)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if strings.Contains(out, softhsmtest.PIN) {
		t.Fatalf("output holds the PIN:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(dir, "gw.example.com.key")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a key file was written: %v", err)
	}
	crt := filepath.Join(dir, "gw.crt")
	if out, err := runCmd(t, "pki", "sign", "--ca", filepath.Join(pkiDir, authority.ServerCADir), "--csr", filepath.Join(dir, "gw.example.com.csr"),
		"--name", "gw.example.com", "--out", crt, "server"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	c, err := pki.LoadKeyPair(crt, ref, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.PrivateKey.(keystore.Key).Close()
	if c.Leaf.Subject.CommonName != "gw.example.com" || !keystore.InStore(c.PrivateKey) {
		t.Fatalf("loaded %v with key %T", c.Leaf.Subject, c.PrivateKey)
	}
}
