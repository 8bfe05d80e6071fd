//go:build cgo

package pki_test

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"strings"
	"testing"

	"github.com/twoway/twoway/keystore"
	"github.com/twoway/twoway/keystore/softhsmtest"
	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/pki/pkitest"
)

// TestStoreTokenKeyReload: a Store whose key is a pkcs11: reference signs
// in the token; Reload opens the key afresh and closes the one it
// replaced, so reloads do not pile up token sessions; Close closes the
// current one.
func TestStoreTokenKeyReload(t *testing.T) {
	h := softhsmtest.New(t)
	h.InitToken("gw")
	ref := h.URI("gw", "twoway")
	gen, err := keystore.Generate(ref)
	if err != nil {
		t.Fatal(err)
	}
	hier := pkitest.NewHierarchy(t)
	leaf := hier.ServerCA.Issue(t, pkitest.LeafOptions{CommonName: "gw", DNSNames: []string{"gw"}, Key: gen})
	gen.Close()
	dir := t.TempDir()
	s, err := pki.NewStore(pki.StoreConfig{
		CertFile: pkitest.WriteFile(t, dir, "gw.crt", pkitest.PEM(leaf.Certs()...)),
		KeyFile:  ref,
		CABundle: pkitest.WriteFile(t, dir, "bundle.crt", pkitest.PEM(hier.ClientBundle()...)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	digest := sha256.Sum256([]byte("x"))
	sign := func(c crypto.Signer) error {
		_, err := c.Sign(rand.Reader, digest[:], crypto.SHA256)
		return err
	}
	first := s.Certificate().PrivateKey.(crypto.Signer)
	if !keystore.InStore(first) {
		t.Fatalf("key is a %T, not the token's", first)
	}
	if err := sign(first); err != nil {
		t.Fatal(err)
	}
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	second := s.Certificate().PrivateKey.(crypto.Signer)
	if err := sign(second); err != nil {
		t.Fatalf("reloaded key: %v", err)
	}
	if err := sign(first); err == nil || !strings.Contains(err.Error(), "after Close") {
		t.Fatalf("the replaced key still signs (its session was not released): %v", err)
	}
	s.Close()
	if err := sign(second); err == nil {
		t.Fatal("the key still signs after Store.Close")
	}
}
