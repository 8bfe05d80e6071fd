package inspect

import (
	"errors"
	"testing"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/twoway/twoway/authority"
	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/pki/pkitest"
)

func TestExportPKCS12Encodings(t *testing.T) {
	h := pkitest.NewHierarchy(t)
	leaf := h.ClientCA.Client(t, "dave", "eng")
	for _, tc := range []struct {
		enc                 authority.PKCS12Encoding
		legacy              bool
		mac, certEnc, keyEn string
	}{
		{authority.PKCS12Modern, false, "HMAC-SHA256 (2048 iterations)", "PBES2, PBKDF2-HMAC-SHA256 (2048 iterations), AES-256-CBC", "PBES2, PBKDF2-HMAC-SHA256 (2048 iterations), AES-256-CBC"},
		{authority.PKCS12Legacy, true, "HMAC-SHA1 (1 iteration)", "PBE-SHA1-RC2-40 (2048 iterations)", "PBE-SHA1-3DES (2048 iterations)"},
	} {
		der, err := authority.ExportPKCS12(leaf.Key, leaf.Certs(), []byte("pw"), tc.enc)
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
		if r.Certificates[0].Status != pki.StatusValid || r.Certificates[0].DaysLeft != 0 {
			// pkitest leaves are valid for a day.
			t.Errorf("leaf status %q days %d", r.Certificates[0].Status, r.Certificates[0].DaysLeft)
		}
	}
}

func TestInspectPKCS12Passwords(t *testing.T) {
	h := pkitest.NewHierarchy(t)
	leaf := h.ClientCA.Client(t, "erin")
	der, err := authority.ExportPKCS12(leaf.Key, leaf.Certs(), []byte("right"), authority.PKCS12Modern)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Inspect(der, nil); !errors.Is(err, pki.ErrPasswordRequired) {
		t.Errorf("no password func: %v", err)
	}
	if _, err := Inspect(der, staticPassword("")); !errors.Is(err, pki.ErrPasswordRequired) {
		t.Errorf("empty password: %v", err)
	}
	if _, err := Inspect(der, staticPassword("wrong")); !errors.Is(err, pki.ErrBadPassword) {
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
