package pki_test

import (
	"crypto/rand"
	"crypto/x509"
	"errors"
	"math/big"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twoway/twoway/authority"
	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/pki/pkitest"
)

func TestStoreReload(t *testing.T) {
	dir := t.TempDir()
	h := pkitest.NewHierarchy(t)
	srv := h.ServerCA.Server(t, "gw.example")
	alice := h.ClientCA.Client(t, "alice")
	keyPEM, _ := authority.MarshalPrivateKeyPEM(srv.Key, []byte("pw"))
	cfg := pki.StoreConfig{
		CertFile:    pkitest.WriteFile(t, dir, "gw.crt", pkitest.PEM(srv.Certs()...)),
		KeyFile:     pkitest.WriteFile(t, dir, "gw.key", keyPEM),
		KeyPassword: []byte("pw"),
		CABundle:    pkitest.WriteFile(t, dir, "clients.crt", pkitest.PEM(h.ClientBundle()...)),
		CRLFiles:    []string{pkitest.WriteFile(t, dir, "crl.pem", pkitest.CRLPEM(h.ClientCA.CRL(t, 1)))},
	}
	s, err := pki.NewStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Certificate().Leaf; !got.Equal(srv.Cert) || len(s.Certificate().Certificate) != 2 {
		t.Fatalf("certificate not loaded with its chain")
	}
	if _, err := s.Verifier().Verify(alice.Certs(), pki.VerifyOptions{Usage: pki.UsageClient}); err != nil {
		t.Fatal(err)
	}
	notify := s.Subscribe()

	// A broken CRL: reload fails and the old state stays.
	os.WriteFile(cfg.CRLFiles[0], []byte("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n"), 0o600)
	before := s.Verifier()
	if err := s.Reload(); err == nil {
		t.Fatal("reload of a corrupt CRL succeeded")
	}
	if s.Verifier() != before {
		t.Fatal("failed reload replaced the verifier")
	}
	select {
	case <-notify:
		t.Fatal("failed reload notified subscribers")
	default:
	}

	// A CRL revoking alice: after reload she is refused.
	os.WriteFile(cfg.CRLFiles[0], pkitest.CRLPEM(h.ClientCA.CRL(t, 2, alice.Cert)), 0o600)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	<-notify
	if _, err := s.Verifier().Verify(alice.Certs(), pki.VerifyOptions{Usage: pki.UsageClient}); !errors.Is(err, pki.ErrRevoked) {
		t.Fatalf("after revocation: %v", err)
	}
	// The old snapshot, still held by live handshakes, is unchanged.
	if _, err := before.Verify(alice.Certs(), pki.VerifyOptions{Usage: pki.UsageClient}); err != nil {
		t.Fatalf("old snapshot changed: %v", err)
	}
}

func TestStoreErrors(t *testing.T) {
	dir := t.TempDir()
	h := pkitest.NewHierarchy(t)
	srv := h.ServerCA.Server(t, "gw.example")
	other := h.ServerCA.Server(t, "other.example")
	bundle := pkitest.WriteFile(t, dir, "b.crt", pkitest.PEM(h.ClientBundle()...))
	crt := pkitest.WriteFile(t, dir, "gw.crt", pkitest.PEM(srv.Certs()...))
	enc, _ := authority.MarshalPrivateKeyPEM(srv.Key, []byte("pw"))
	encKey := pkitest.WriteFile(t, dir, "enc.key", enc)
	cases := map[string]struct {
		cfg  pki.StoreConfig
		want error
	}{
		"key of another cert": {pki.StoreConfig{CertFile: crt, KeyFile: pkitest.WriteFile(t, dir, "o.key", pkitest.KeyPEM(t, other.Key)), CABundle: bundle}, pki.ErrKeyMismatch},
		"missing password":    {pki.StoreConfig{CertFile: crt, KeyFile: encKey, CABundle: bundle}, pki.ErrPasswordRequired},
		"wrong password":      {pki.StoreConfig{CertFile: crt, KeyFile: encKey, KeyPassword: []byte("nope"), CABundle: bundle}, pki.ErrBadPassword},
		"missing bundle":      {pki.StoreConfig{CABundle: dir + "/nope.crt"}, os.ErrNotExist},
		"leaf as bundle":      {pki.StoreConfig{CABundle: crt}, nil},
		"no bundle":           {pki.StoreConfig{}, nil},
	}
	for name, tc := range cases {
		_, err := pki.NewStore(tc.cfg)
		if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", name, err, tc.want)
		}
	}
}

// TestStaleCRL: a CRL past its next update keeps working by default (a
// list nobody republished must not lock every user out) and refuses every
// certificate it covers with RejectStaleCRLs; a revoked certificate is
// still reported as revoked.
func TestStaleCRL(t *testing.T) {
	dir := t.TempDir()
	h := pkitest.NewHierarchy(t)
	alice := h.ClientCA.Client(t, "alice")
	bob := h.ClientCA.Client(t, "bob")
	// pkitest's leaves live a day and its CRLs too: this one is due in a
	// minute, so it goes stale while alice is still valid.
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(7), ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(time.Minute),
		RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: bob.Cert.SerialNumber, RevocationTime: time.Now().Add(-time.Minute)}},
	}, h.ClientCA.Cert, h.ClientCA.Key)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	cfg := pki.StoreConfig{
		CABundle: pkitest.WriteFile(t, dir, "clients.crt", pkitest.PEM(h.ClientBundle()...)),
		CRLFiles: []string{pkitest.WriteFile(t, dir, "crl.pem", pkitest.CRLPEM(crl))},
	}
	fresh, later := time.Now(), crl.NextUpdate.Add(time.Hour)
	if pki.CRLStale(crl, fresh) || !pki.CRLStale(crl, later) {
		t.Fatalf("CRLStale wrong around next update %v", crl.NextUpdate)
	}

	lenient, err := pki.NewStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lenient.Verifier().Verify(alice.Certs(), pki.VerifyOptions{Usage: pki.UsageClient, Now: later}); err != nil {
		t.Fatalf("default: stale CRL refused alice: %v", err)
	}

	cfg.RejectStaleCRLs = true
	strict, err := pki.NewStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := strict.Verifier().Verify(alice.Certs(), pki.VerifyOptions{Usage: pki.UsageClient, Now: fresh}); err != nil {
		t.Fatalf("strict, fresh CRL: %v", err)
	}
	_, err = strict.Verifier().Verify(alice.Certs(), pki.VerifyOptions{Usage: pki.UsageClient, Now: later})
	var ve *pki.VerifyError
	if !errors.Is(err, pki.ErrStaleCRL) || !errors.As(err, &ve) || ve.Check != "revocation" || !strings.Contains(ve.Detail, "number 7") {
		t.Fatalf("strict, stale CRL: %v, want a revocation error naming CRL 7", err)
	}
	if _, err := strict.Verifier().Verify(bob.Certs(), pki.VerifyOptions{Usage: pki.UsageClient, Now: later}); !errors.Is(err, pki.ErrRevoked) {
		t.Fatalf("strict, stale CRL, revoked bob: %v, want ErrRevoked", err)
	}
}

// TestStorePublish: CRLs published from elsewhere (a fleet's store) revoke
// at once, survive a reload of older files, give way to newer files, and
// cannot roll a revocation back or come from a CA outside the bundle.
func TestStorePublish(t *testing.T) {
	dir := t.TempDir()
	h := pkitest.NewHierarchy(t)
	alice := h.ClientCA.Client(t, "alice")
	bob := h.ClientCA.Client(t, "bob")
	cfg := pki.StoreConfig{
		CABundle: pkitest.WriteFile(t, dir, "clients.crt", pkitest.PEM(h.ClientBundle()...)),
		CRLFiles: []string{pkitest.WriteFile(t, dir, "crl.pem", pkitest.CRLPEM(h.ClientCA.CRL(t, 1)))},
	}
	s, err := pki.NewStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	verify := func(l *pkitest.Leaf) error {
		_, err := s.Verifier().Verify(l.Certs(), pki.VerifyOptions{Usage: pki.UsageClient})
		return err
	}
	notify := s.Subscribe()

	if err := s.Publish([]*x509.RevocationList{h.ClientCA.CRL(t, 5, alice.Cert)}); err != nil {
		t.Fatal(err)
	}
	<-notify
	if err := verify(alice); !errors.Is(err, pki.ErrRevoked) {
		t.Fatalf("alice after the published CRL: %v", err)
	}
	// The file still holds CRL 1: a reload keeps the published 5.
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := verify(alice); !errors.Is(err, pki.ErrRevoked) {
		t.Fatalf("alice after reloading the older file: %v", err)
	}
	// A newer file (6, revoking bob only: alice's entry expired, say)
	// wins over the publication.
	os.WriteFile(cfg.CRLFiles[0], pkitest.CRLPEM(h.ClientCA.CRL(t, 6, bob.Cert)), 0o600)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := verify(bob); !errors.Is(err, pki.ErrRevoked) {
		t.Fatalf("bob after the newer file: %v", err)
	}
	if err := verify(alice); err != nil {
		t.Fatalf("alice after the newer file: %v", err)
	}
	// An older publication is superseded by the file, not an error.
	if err := s.Publish([]*x509.RevocationList{h.ClientCA.CRL(t, 4, alice.Cert)}); err != nil {
		t.Fatal(err)
	}
	if err := verify(alice); err != nil {
		t.Fatalf("alice after publishing a CRL older than the file's: %v", err)
	}
	// Above the file, a publication may only move forward.
	if err := s.Publish([]*x509.RevocationList{h.ClientCA.CRL(t, 8, alice.Cert)}); err != nil {
		t.Fatal(err)
	}
	before := s.Verifier()
	if err := s.Publish([]*x509.RevocationList{h.ClientCA.CRL(t, 7)}); !errors.Is(err, pki.ErrCRLRollback) {
		t.Fatalf("publishing CRL 7 after 8: %v, want ErrCRLRollback", err)
	}
	if s.Verifier() != before || !errors.Is(verify(alice), pki.ErrRevoked) {
		t.Fatal("a refused publication changed the verifier")
	}
	// A CRL of a CA outside the bundle.
	if err := s.Publish([]*x509.RevocationList{h.ServerCA.CRL(t, 9)}); err == nil || !strings.Contains(err.Error(), "not in the CA bundle") {
		t.Fatalf("publishing a foreign CA's CRL: %v", err)
	}
}
