package authority

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"testing"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/pki/pkitest"
)

func TestExportPKCS12RoundTrip(t *testing.T) {
	h := pkitest.NewHierarchy(t)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for _, enc := range []PKCS12Encoding{PKCS12Modern, PKCS12Legacy} {
		for _, key := range []crypto.Signer{nil, ed, rsaKey} {
			leaf := h.ClientCA.Issue(t, pkitest.LeafOptions{CommonName: "carol", Key: key, EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
			// The client CA twice and the root: duplicates must go.
			chain := append(leaf.Certs(), h.ClientCA.Cert, h.Root.Cert)
			der, err := ExportPKCS12(leaf.Key, chain, []byte("p12 pass"), enc)
			if err != nil {
				t.Fatalf("export %T: %v", leaf.Key, err)
			}
			gotKey, gotLeaf, gotCAs, err := pkcs12.DecodeChain(der, "p12 pass")
			if err != nil {
				t.Fatalf("decode %T: %v", leaf.Key, err)
			}
			if !gotLeaf.Equal(leaf.Cert) {
				t.Errorf("leaf differs")
			}
			if len(gotCAs) != 2 || !gotCAs[0].Equal(h.ClientCA.Cert) || !gotCAs[1].Equal(h.Root.Cert) {
				t.Errorf("CA certificates: got %d, want client CA then root", len(gotCAs))
			}
			signer, ok := gotKey.(crypto.Signer)
			if !ok || pki.KeyMatches(leaf.Cert, signer) != nil {
				t.Errorf("decoded key does not match the certificate")
			}
			if _, _, _, err := pkcs12.DecodeChain(der, "wrong"); !errors.Is(err, pkcs12.ErrIncorrectPassword) {
				t.Errorf("wrong password: %v", err)
			}
		}
	}
}

func TestExportPKCS12Refusals(t *testing.T) {
	h := pkitest.NewHierarchy(t)
	leaf := h.ClientCA.Client(t, "frank")
	other := h.ClientCA.Client(t, "grace")
	if _, err := ExportPKCS12(other.Key, leaf.Certs(), []byte("pw"), PKCS12Modern); !errors.Is(err, pki.ErrKeyMismatch) {
		t.Errorf("mismatched key: %v", err)
	}
	if _, err := ExportPKCS12(leaf.Key, leaf.Certs(), nil, PKCS12Modern); !errors.Is(err, ErrEmptyPassword) {
		t.Errorf("empty password: %v", err)
	}
	if _, err := ExportPKCS12(leaf.Key, nil, []byte("pw"), PKCS12Modern); !errors.Is(err, pki.ErrNoCertificate) {
		t.Errorf("no certificate: %v", err)
	}
	if _, err := ExportPKCS12(leaf.Key, leaf.Certs(), []byte("pw"), PKCS12Encoding(9)); err == nil {
		t.Errorf("unknown encoding accepted")
	}
}
