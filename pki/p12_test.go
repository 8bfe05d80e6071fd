package pki

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"testing"

	"software.sslmate.com/src/go-pkcs12"

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
			if !ok || KeyMatches(leaf.Cert, signer) != nil {
				t.Errorf("decoded key does not match the certificate")
			}
			if _, _, _, err := pkcs12.DecodeChain(der, "wrong"); !errors.Is(err, pkcs12.ErrIncorrectPassword) {
				t.Errorf("wrong password: %v", err)
			}
		}
	}
}

func TestExportPKCS12Encodings(t *testing.T) {
	h := pkitest.NewHierarchy(t)
	leaf := h.ClientCA.Client(t, "dave", "eng")
	for _, tc := range []struct {
		enc                 PKCS12Encoding
		legacy              bool
		mac, certEnc, keyEn string
	}{
		{PKCS12Modern, false, "HMAC-SHA256 (2048 iterations)", "PBES2, PBKDF2-HMAC-SHA256 (2048 iterations), AES-256-CBC", "PBES2, PBKDF2-HMAC-SHA256 (2048 iterations), AES-256-CBC"},
		{PKCS12Legacy, true, "HMAC-SHA1 (1 iteration)", "PBE-SHA1-RC2-40 (2048 iterations)", "PBE-SHA1-3DES (2048 iterations)"},
	} {
		der, err := ExportPKCS12(leaf.Key, leaf.Certs(), []byte("pw"), tc.enc)
		if err != nil {
			t.Fatal(err)
		}
		r, err := Inspect(der, staticPassword("pw"))
		if err != nil {
			t.Fatal(err)
		}
		p := r.PKCS12
		if r.Type != TypePKCS12 || p == nil || p.Legacy != tc.legacy || p.MAC != tc.mac || p.CertEncryption != tc.certEnc || p.KeyEncryption != tc.keyEn {
			t.Errorf("encoding %d: report type %q pkcs12 %+v", tc.enc, r.Type, p)
			continue
		}
		if len(r.Certificates) != 2 || r.Certificates[0].CommonName != "dave" || r.Certificates[1].CommonName != "test client CA" {
			t.Errorf("certificates %+v", r.Certificates)
		}
		if len(r.PrivateKeys) != 1 || r.PrivateKeys[0].Key == nil || r.PrivateKeys[0].Key.String() != "ECDSA P-256" ||
			!r.PrivateKeys[0].Encrypted || r.PrivateKeys[0].MatchesCertificate != r.Certificates[0].Subject {
			t.Errorf("private key %+v", r.PrivateKeys)
		}
		if r.Certificates[0].Status != StatusValid || r.Certificates[0].DaysLeft != 0 {
			// pkitest leaves are valid for a day.
			t.Errorf("leaf status %q days %d", r.Certificates[0].Status, r.Certificates[0].DaysLeft)
		}
	}
}

func TestInspectPKCS12Passwords(t *testing.T) {
	h := pkitest.NewHierarchy(t)
	leaf := h.ClientCA.Client(t, "erin")
	der, err := ExportPKCS12(leaf.Key, leaf.Certs(), []byte("right"), PKCS12Modern)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Inspect(der, nil); !errors.Is(err, ErrPasswordRequired) {
		t.Errorf("no password func: %v", err)
	}
	if _, err := Inspect(der, staticPassword("")); !errors.Is(err, ErrPasswordRequired) {
		t.Errorf("empty password: %v", err)
	}
	if _, err := Inspect(der, staticPassword("wrong")); !errors.Is(err, ErrBadPassword) {
		t.Errorf("wrong password: %v", err)
	}
	// Truncated: recognisably not a whole PFX any more.
	if _, err := Inspect(der[:len(der)/2], staticPassword("right")); err == nil {
		t.Errorf("truncated PKCS#12 accepted")
	}
	// A file protected with the empty password opens without asking.
	empty, err := pkcs12.Modern2023.Encode(leaf.Key, leaf.Cert, nil, "")
	if err != nil {
		t.Fatal(err)
	}
	r, err := Inspect(empty, func() ([]byte, error) { t.Error("asked for a password"); return nil, nil })
	if err != nil || r.Certificates[0].CommonName != "erin" {
		t.Errorf("empty-password file: %v", err)
	}
}

func TestExportPKCS12Refusals(t *testing.T) {
	h := pkitest.NewHierarchy(t)
	leaf := h.ClientCA.Client(t, "frank")
	other := h.ClientCA.Client(t, "grace")
	if _, err := ExportPKCS12(other.Key, leaf.Certs(), []byte("pw"), PKCS12Modern); !errors.Is(err, ErrKeyMismatch) {
		t.Errorf("mismatched key: %v", err)
	}
	if _, err := ExportPKCS12(leaf.Key, leaf.Certs(), nil, PKCS12Modern); !errors.Is(err, ErrEmptyPassword) {
		t.Errorf("empty password: %v", err)
	}
	if _, err := ExportPKCS12(leaf.Key, nil, []byte("pw"), PKCS12Modern); !errors.Is(err, ErrNoCertificate) {
		t.Errorf("no certificate: %v", err)
	}
	if _, err := ExportPKCS12(leaf.Key, leaf.Certs(), []byte("pw"), PKCS12Encoding(9)); err == nil {
		t.Errorf("unknown encoding accepted")
	}
}
