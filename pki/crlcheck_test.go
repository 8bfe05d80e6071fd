package pki_test

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"math/big"
	"os"
	"testing"
	"time"

	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/pki/pkitest"
)

// crlWith signs a CRL with the given number and extra extensions.
func crlWith(t *testing.T, ca *pkitest.CA, number int64, exts ...pkix.Extension) *x509.RevocationList {
	t.Helper()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(number), ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(time.Hour),
		ExtraExtensions: exts,
	}, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	return crl
}

// idp encodes an IssuingDistributionPoint extension whose SEQUENCE holds
// the given (already encoded) fields.
func idp(fields ...[]byte) pkix.Extension {
	var body []byte
	for _, f := range fields {
		body = append(body, f...)
	}
	seq, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: body})
	if err != nil {
		panic(err)
	}
	return pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 28}, Critical: true, Value: seq}
}

// ctx encodes an implicitly tagged context-specific field [tag].
func ctx(tag int, compound bool, content ...byte) []byte {
	b, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: tag, IsCompound: compound, Bytes: content})
	if err != nil {
		panic(err)
	}
	return b
}

// TestCRLScope: a delta CRL, a CRL whose Issuing Distribution Point
// narrows it in any way, and one with an unknown critical extension are
// refused by the verifier (and so by every load and reload); a full CRL,
// with or without an empty IDP, is used.
func TestCRLScope(t *testing.T) {
	h := pkitest.NewHierarchy(t)
	alice := h.ClientCA.Client(t, "alice")
	// distributionPoint [0] { fullName [0] { URI "http://crl.example/1.crl" } }
	uri := append([]byte{0x86, 24}, "http://crl.example/1.crl"...)
	dp := ctx(0, true, ctx(0, true, uri...)...)
	cases := []struct {
		name string
		ext  []pkix.Extension
		want error
	}{
		{"plain", nil, nil},
		{"empty IDP", []pkix.Extension{idp()}, nil},
		{"IDP with explicit FALSE", []pkix.Extension{idp(ctx(1, false, 0), ctx(4, false, 0))}, nil},
		{"delta", []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 27}, Critical: true, Value: []byte{2, 1, 4}}}, pki.ErrDeltaCRL},
		{"distribution point", []pkix.Extension{idp(dp)}, pki.ErrScopedCRL},
		{"only user certs", []pkix.Extension{idp(ctx(1, false, 0xff))}, pki.ErrScopedCRL},
		{"only CA certs", []pkix.Extension{idp(ctx(2, false, 0xff))}, pki.ErrScopedCRL},
		{"only some reasons", []pkix.Extension{idp(ctx(3, false, 0x07, 0x80))}, pki.ErrScopedCRL},
		{"indirect", []pkix.Extension{idp(ctx(4, false, 0xff))}, pki.ErrScopedCRL},
		{"only attribute certs", []pkix.Extension{idp(ctx(5, false, 0xff))}, pki.ErrScopedCRL},
		{"unknown IDP field", []pkix.Extension{idp(ctx(9, false, 0xff))}, pki.ErrScopedCRL},
		{"malformed IDP", []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 28}, Critical: true, Value: []byte{0x04, 0x00}}}, pki.ErrScopedCRL},
		{"unknown critical", []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Critical: true, Value: []byte{5, 0}}}, pki.ErrCRLCritical},
		{"unknown non-critical", []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 1}, Value: []byte{5, 0}}}, nil},
	}
	for _, tc := range cases {
		crl := crlWith(t, h.ClientCA, 1, tc.ext...)
		if err := pki.CheckCRLScope(crl); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("%s: CheckCRLScope = %v, want %v", tc.name, err, tc.want)
		}
		v, err := pki.NewVerifier(h.ClientBundle(), []*x509.RevocationList{crl})
		if tc.want != nil {
			if !errors.Is(err, tc.want) {
				t.Errorf("%s: NewVerifier = %v, want %v", tc.name, err, tc.want)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: NewVerifier: %v", tc.name, err)
			continue
		}
		if _, err := v.Verify(alice.Certs(), pki.VerifyOptions{Usage: pki.UsageClient}); err != nil {
			t.Errorf("%s: verify: %v", tc.name, err)
		}
	}
}

// TestStoreCRLRollback: a reload that would replace a CRL with an older
// one of the same issuer (lower CRL number) fails and keeps the CRL in
// use, so a revoked certificate stays revoked; the same or a newer number
// reloads.
func TestStoreCRLRollback(t *testing.T) {
	dir := t.TempDir()
	h := pkitest.NewHierarchy(t)
	alice := h.ClientCA.Client(t, "alice")
	old := h.ClientCA.CRL(t, 4) // before alice was revoked
	cfg := pki.StoreConfig{
		CABundle: pkitest.WriteFile(t, dir, "clients.crt", pkitest.PEM(h.ClientBundle()...)),
		CRLFiles: []string{pkitest.WriteFile(t, dir, "crl.pem", pkitest.CRLPEM(h.ClientCA.CRL(t, 5, alice.Cert)))},
	}
	s, err := pki.NewStore(cfg)
	if err != nil {
		t.Fatal(err)
	}
	refused := func(when string) {
		t.Helper()
		if _, err := s.Verifier().Verify(alice.Certs(), pki.VerifyOptions{Usage: pki.UsageClient}); !errors.Is(err, pki.ErrRevoked) {
			t.Fatalf("%s: alice not refused as revoked: %v", when, err)
		}
	}
	refused("at start")

	if err := os.WriteFile(cfg.CRLFiles[0], pkitest.CRLPEM(old), 0o600); err != nil {
		t.Fatal(err)
	}
	before := s.Verifier()
	if err := s.Reload(); !errors.Is(err, pki.ErrCRLRollback) {
		t.Fatalf("reload of CRL 4 over CRL 5: err = %v, want ErrCRLRollback", err)
	}
	if s.Verifier() != before {
		t.Fatal("refused reload replaced the verifier")
	}
	refused("after the refused rollback")

	// The same number again (an unchanged file) and a newer one reload.
	for _, n := range []int64{5, 6} {
		if err := os.WriteFile(cfg.CRLFiles[0], pkitest.CRLPEM(h.ClientCA.CRL(t, n, alice.Cert)), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := s.Reload(); err != nil {
			t.Fatalf("reload of CRL %d: %v", n, err)
		}
		refused("after reload")
	}

	// Another issuer's numbers are its own: the root's CRL 1 next to the
	// client CA's CRL 6 is no rollback.
	rootCRL := pkitest.WriteFile(t, dir, "root.pem", pkitest.CRLPEM(h.Root.CRL(t, 1)))
	cfg2 := cfg
	cfg2.CRLFiles = append([]string{rootCRL}, cfg.CRLFiles...)
	s2, err := pki.NewStore(cfg2)
	if err != nil {
		t.Fatal(err)
	}
	if err := s2.Reload(); err != nil {
		t.Fatalf("reload with two issuers: %v", err)
	}
}

// TestUnmatchedCRLsAndRootsOnly: the helpers behind config warnings.
func TestUnmatchedCRLsAndRootsOnly(t *testing.T) {
	h := pkitest.NewHierarchy(t)
	own, foreign := h.ClientCA.CRL(t, 1), h.ServerCA.CRL(t, 1)
	got := pki.UnmatchedCRLs(h.ClientBundle(), []*x509.RevocationList{own, foreign})
	if len(got) != 1 || got[0] != foreign {
		t.Fatalf("UnmatchedCRLs = %v, want only the server CA's CRL", got)
	}
	if pki.RootsOnly(h.ClientBundle()) {
		t.Error("client CA + root counted as roots only")
	}
	if !pki.RootsOnly([]*x509.Certificate{h.Root.Cert}) {
		t.Error("a lone root not counted as roots only")
	}
	if pki.RootsOnly(nil) {
		t.Error("an empty bundle counted as roots only")
	}
}
