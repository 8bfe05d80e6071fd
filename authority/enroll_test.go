package authority_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twoway/twoway/authority"
	"github.com/twoway/twoway/pki/pkitest"
)

// newCSR makes a certificate request for key, or a fresh one.
func newCSR(t *testing.T, key crypto.Signer, subject pkix.Name) *x509.CertificateRequest {
	t.Helper()
	csr, _ := pkitest.CSR(t, key, subject)
	return csr
}

func TestEnrollIssuesTokenBinding(t *testing.T) {
	_, res := initPKI(t, "")
	ca := openCA(t, res.ClientCA.Dir)
	token, rec := createToken(t, ca, authority.TokenOptions{Name: "alice", Groups: []string{"eng", "ops"}, Days: 7})
	// The request asks for the token's groups in another order, and for
	// an e-mail address, which is ignored.
	csr := newCSR(t, nil, pkix.Name{CommonName: "alice", OrganizationalUnit: []string{"ops", "eng"}})
	csr.EmailAddresses = []string{"mallory@example.com"}
	now := time.Now()
	iss, got, err := ca.Enroll(token, csr, now)
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != rec.ID || got.UsedAt == nil {
		t.Errorf("record %+v: want token %s used", got, rec.ID)
	}
	c := iss.Cert
	if c.Subject.CommonName != "alice" || !slices.Equal(c.Subject.OrganizationalUnit, []string{"eng", "ops"}) || len(c.EmailAddresses) > 0 {
		t.Errorf("subject %v, e-mail %v: want alice in eng, ops only", c.Subject, c.EmailAddresses)
	}
	if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Errorf("EKU %v, want client auth", c.ExtKeyUsage)
	}
	if d := c.NotAfter.Sub(now); d < 6*24*time.Hour || d > 8*24*time.Hour {
		t.Errorf("valid for %v, want about 7 days", d)
	}
	if !c.PublicKey.(*ecdsa.PublicKey).Equal(csr.PublicKey) {
		t.Error("certificate is not for the request's key")
	}
	if len(iss.Chain) == 0 || !iss.Chain[0].Equal(ca.Cert) || iss.CertFile != "" || iss.KeyFile != "" {
		t.Errorf("chain %d certificates, files %q %q: want the CA first and no files", len(iss.Chain), iss.CertFile, iss.KeyFile)
	}
	if err := c.CheckSignatureFrom(ca.Cert); err != nil {
		t.Error(err)
	}
	if l := listAt(t, ca, now); !slices.ContainsFunc(l, func(e authority.ListEntry) bool { return e.Serial == c.SerialNumber.Text(16) }) {
		t.Errorf("serial %s not in the CA's list %+v", c.SerialNumber, l)
	}

	// No name at all takes the token's; no days takes the default.
	token2, _ := createToken(t, ca, authority.TokenOptions{Name: "bob"})
	iss, _, err = ca.Enroll(token2, newCSR(t, nil, pkix.Name{}), now)
	if err != nil {
		t.Fatal(err)
	}
	if iss.Cert.Subject.CommonName != "bob" || len(iss.Cert.Subject.OrganizationalUnit) != 0 {
		t.Errorf("subject %v, want bob without groups", iss.Cert.Subject)
	}
	if d := iss.Cert.NotAfter.Sub(now); d < (authority.DefaultClientDays-1)*24*time.Hour {
		t.Errorf("valid for %v, want the default %d days", d, authority.DefaultClientDays)
	}
}

func TestEnrollRefusals(t *testing.T) {
	_, res := initPKI(t, "")
	ca := openCA(t, res.ClientCA.Dir)
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	badSig := newCSR(t, nil, pkix.Name{CommonName: "alice"})
	badSig.Signature = slices.Clone(badSig.Signature)
	badSig.Signature[len(badSig.Signature)/2] ^= 0x40
	now := time.Now()
	for _, tc := range []struct {
		name    string
		csr     *x509.CertificateRequest
		at      time.Time
		want    error
		message string
	}{
		{"name mismatch", newCSR(t, nil, pkix.Name{CommonName: "mallory"}), now, authority.ErrBadCSR, `asks for name "mallory", but the enrollment token is for "alice"`},
		{"groups mismatch", newCSR(t, nil, pkix.Name{OrganizationalUnit: []string{"eng", "admin"}}), now, authority.ErrBadCSR, "asks for groups [eng, admin]"},
		{"weak key", newCSR(t, weak, pkix.Name{CommonName: "alice"}), now, authority.ErrBadCSR, "RSA key of 1024 bits"},
		{"bad signature", badSig, now, authority.ErrBadCSR, "signature does not verify"},
		{"nil request", nil, now, authority.ErrBadCSR, "no request"},
		{"expired token", newCSR(t, nil, pkix.Name{CommonName: "alice"}), now.Add(25 * time.Hour), authority.ErrTokenExpired, "expired on"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			token, rec := createToken(t, ca, authority.TokenOptions{Name: "alice", Groups: []string{"eng"}})
			iss, got, err := ca.Enroll(token, tc.csr, tc.at)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.message) {
				t.Fatalf("Enroll: %v, %v; want %v mentioning %q", iss, err, tc.want, tc.message)
			}
			if strings.Contains(err.Error(), token) {
				t.Errorf("error %q contains the token", err)
			}
			if got.ID != rec.ID {
				t.Errorf("record ID %q, want %q", got.ID, rec.ID)
			}
			// The token is burnt even though nothing was issued (an
			// expired one stays expired).
			_, _, err = ca.Enroll(token, newCSR(t, nil, pkix.Name{CommonName: "alice"}), tc.at)
			if want := authority.ErrTokenUsed; tc.want != authority.ErrTokenExpired && !errors.Is(err, want) {
				t.Errorf("second enrollment: %v, want %v", err, want)
			}
			if err == nil {
				t.Error("second enrollment succeeded")
			}
		})
	}
}

func TestEnrollReusedAndUnknownToken(t *testing.T) {
	_, res := initPKI(t, "")
	ca := openCA(t, res.ClientCA.Dir)
	token, _ := createToken(t, ca, authority.TokenOptions{Name: "alice"})
	if _, _, err := ca.Enroll(token, newCSR(t, nil, pkix.Name{}), time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ca.Enroll(token, newCSR(t, nil, pkix.Name{}), time.Now()); !errors.Is(err, authority.ErrTokenUsed) {
		t.Errorf("reused token: %v, want %v", err, authority.ErrTokenUsed)
	}
	if _, _, err := ca.Enroll("tw1-nope", newCSR(t, nil, pkix.Name{}), time.Now()); !errors.Is(err, authority.ErrTokenUnknown) {
		t.Errorf("unknown token: %v, want %v", err, authority.ErrTokenUnknown)
	}
}
