package authority_test

import (
	"crypto"
	"crypto/x509/pkix"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/twoway/twoway/authority"
)

func TestRenewCarriesIdentityOverAndKeepsLifetime(t *testing.T) {
	_, res := initPKI(t, "")
	ca := openCA(t, res.ClientCA.Dir)
	token, _ := createToken(t, ca, authority.TokenOptions{Name: "alice", Groups: []string{"eng"}, Days: 7})
	now := time.Now()
	old, _, err := ca.Enroll(token, newCSR(t, nil, pkix.Name{CommonName: "alice"}), now)
	if err != nil {
		t.Fatal(err)
	}
	// The request asks for another name and more groups: ignored.
	csr := newCSR(t, nil, pkix.Name{CommonName: "root", OrganizationalUnit: []string{"admins"}})
	later := now.Add(time.Hour)
	iss, err := ca.Renew(old.Cert, csr, later, 0)
	if err != nil {
		t.Fatal(err)
	}
	c := iss.Cert
	if c.Subject.CommonName != "alice" || !slices.Equal(c.Subject.OrganizationalUnit, []string{"eng"}) {
		t.Errorf("renewed subject %v: want alice in eng", c.Subject)
	}
	if !c.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(csr.PublicKey) {
		t.Error("renewed certificate is not for the request's key")
	}
	if c.SerialNumber.Cmp(old.Cert.SerialNumber) == 0 {
		t.Error("renewed certificate has the old serial")
	}
	if got, want := c.NotAfter.Sub(c.NotBefore), old.Cert.NotAfter.Sub(old.Cert.NotBefore); got != want {
		t.Errorf("lifetime %v, want the old one's %v", got, want)
	}
	if !c.NotBefore.After(old.Cert.NotBefore) {
		t.Errorf("renewed certificate starts %v, not after the old one's %v", c.NotBefore, old.Cert.NotBefore)
	}
	db, err := authority.LoadDB(filepath.Join(ca.Dir, authority.DBFile))
	if err != nil {
		t.Fatal(err)
	}
	if db.Find(c.SerialNumber) < 0 {
		t.Error("renewed certificate not recorded in db.json")
	}

	// A cap shortens it.
	iss2, err := ca.Renew(c, newCSR(t, nil, pkix.Name{}), later, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if got := iss2.Cert.NotAfter.Sub(iss2.Cert.NotBefore); got != 24*time.Hour {
		t.Errorf("capped lifetime %v, want 24h", got)
	}
}

func TestRenewRefusals(t *testing.T) {
	_, res := initPKI(t, "")
	ca := openCA(t, res.ClientCA.Dir)
	now := time.Now()
	enroll := func() *authority.Issued {
		token, _ := createToken(t, ca, authority.TokenOptions{Name: "bob", Days: 1})
		iss, _, err := ca.Enroll(token, newCSR(t, nil, pkix.Name{}), now)
		if err != nil {
			t.Fatal(err)
		}
		return iss
	}
	revoked := enroll()
	if _, err := ca.RevokeCert(revoked.Cert, "keyCompromise"); err != nil {
		t.Fatal(err)
	}
	valid := enroll()
	// A CA with the same name elsewhere did not sign it.
	_, other := initPKI(t, "")
	otherCA := openCA(t, other.ClientCA.Dir)

	for _, tc := range []struct {
		name string
		ca   *authority.CA
		iss  *authority.Issued
		now  time.Time
		want error
	}{
		{"revoked", ca, revoked, now, authority.ErrRevoked},
		{"other CA", otherCA, valid, now, authority.ErrNotIssued},
		{"expired", ca, valid, now.Add(48 * time.Hour), authority.ErrNotValid},
	} {
		_, err := tc.ca.Renew(tc.iss.Cert, newCSR(t, nil, pkix.Name{}), tc.now, 0)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	bad := newCSR(t, nil, pkix.Name{})
	bad.Signature[len(bad.Signature)-1] ^= 1
	if _, err := ca.Renew(valid.Cert, bad, now, 0); !errors.Is(err, authority.ErrBadCSR) {
		t.Errorf("bad signature: %v, want ErrBadCSR", err)
	}
}

// TestRenewShortLifetime: a certificate of minutes is backdated by a
// tenth of its lifetime, not by the usual five minutes, and keeps it.
func TestRenewShortLifetime(t *testing.T) {
	_, res := initPKI(t, "")
	ca := openCA(t, res.ClientCA.Dir)
	token, _ := createToken(t, ca, authority.TokenOptions{Name: "alice", Days: 1})
	now := time.Now()
	old, _, err := ca.Enroll(token, newCSR(t, nil, pkix.Name{}), now)
	if err != nil {
		t.Fatal(err)
	}
	short, err := ca.Renew(old.Cert, newCSR(t, nil, pkix.Name{}), now, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	c := short.Cert
	if got := c.NotAfter.Sub(c.NotBefore); got != time.Minute {
		t.Errorf("lifetime %v, want 1m", got)
	}
	if back := now.Truncate(time.Second).Sub(c.NotBefore); back != 6*time.Second {
		t.Errorf("backdated by %v, want 6s", back)
	}
}
