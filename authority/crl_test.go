package authority_test

import (
	"bytes"
	"crypto/x509"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twoway/twoway/authority"
	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/pki/pkitest"
)

func TestParseSerial(t *testing.T) {
	want, _ := new(big.Int).SetString("5e0f3aab", 16)
	for _, s := range []string{"5e0f3aab", "5E0F3AAB", "0x5e0f3aab", "0X5E0F3AAB", "5e:0f:3a:ab", " 5E:0F:3A:AB "} {
		n, err := authority.ParseSerial(s)
		if err != nil || n.Cmp(want) != 0 {
			t.Errorf("ParseSerial(%q) = %v, %v", s, n, err)
		}
	}
	for _, s := range []string{"", "0x", "xyz", "12 34", "-5", "+5", "5g"} {
		if _, err := authority.ParseSerial(s); !errors.Is(err, authority.ErrBadSerial) {
			t.Errorf("ParseSerial(%q): %v, want ErrBadSerial", s, err)
		}
	}
}

func TestParseReason(t *testing.T) {
	for name, code := range map[string]int{
		"": 0, "unspecified": 0, "keyCompromise": 1, "KEYCOMPROMISE": 1, "caCompromise": 2, "affiliationChanged": 3,
		"superseded": 4, "cessationOfOperation": 5, "certificateHold": 6,
	} {
		got, canon, err := authority.ParseReason(name)
		if err != nil || got != code || (name != "" && !strings.EqualFold(canon, name)) {
			t.Errorf("ParseReason(%q) = %d %q %v, want %d", name, got, canon, err, code)
		}
	}
	_, _, err := authority.ParseReason("stolen")
	if !errors.Is(err, authority.ErrUnknownReason) || !strings.Contains(err.Error(), `"stolen"`) || !strings.Contains(err.Error(), "keyCompromise") {
		t.Errorf("unknown reason: %v", err)
	}
}

func TestRevokeAndCRL(t *testing.T) {
	_, res := initPKI(t, "pw")
	out := t.TempDir()
	calls := 0
	ca, err := authority.OpenCA(res.ClientCA.Dir, func() ([]byte, error) { calls++; return []byte("pw"), nil })
	if err != nil {
		t.Fatal(err)
	}
	alice, err := ca.Issue(authority.IssueRequest{Kind: authority.KindClient, Name: "alice", OutDir: out})
	if err != nil {
		t.Fatal(err)
	}
	bob, err := ca.Issue(authority.IssueRequest{Kind: authority.KindClient, Name: "bob", OutDir: out})
	if err != nil {
		t.Fatal(err)
	}

	// Revoking needs no key: a fresh handle with no password works.
	rv, err := authority.OpenCA(res.ClientCA.Dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := rv.Revoke(alice.Cert.SerialNumber, "keyCompromise")
	if err != nil {
		t.Fatal(err)
	}
	if !rec.Revoked() || rec.Reason != "keyCompromise" || time.Since(*rec.RevokedAt) > time.Minute {
		t.Errorf("record %+v", rec)
	}
	if _, err := rv.Revoke(alice.Cert.SerialNumber, "superseded"); !errors.Is(err, authority.ErrAlreadyRevoked) || !strings.Contains(err.Error(), "already revoked") {
		t.Errorf("second revocation: %v", err)
	}
	if _, err := rv.Revoke(big.NewInt(12345), ""); !errors.Is(err, authority.ErrNotIssued) || !strings.Contains(err.Error(), "3039 was not issued by") {
		t.Errorf("unknown serial: %v", err)
	}
	if _, err := rv.Revoke(bob.Cert.SerialNumber, "stolen"); !errors.Is(err, authority.ErrUnknownReason) {
		t.Errorf("unknown reason: %v", err)
	}
	// A certificate of another CA, even with a serial this CA knows, is
	// refused by RevokeCert.
	h := pkitest.NewHierarchy(t)
	foreign := h.ClientCA.Client(t, "bob")
	if _, err := rv.RevokeCert(foreign.Cert, ""); !errors.Is(err, authority.ErrNotIssued) {
		t.Errorf("foreign certificate: %v", err)
	}

	// The revocation is persisted.
	rv2 := openCA(t, res.ClientCA.Dir)
	l := listAt(t, rv2, time.Now())
	if len(l) != 2 || l[0].Status != authority.StatusRevoked || l[0].Reason != "keyCompromise" || l[1].Status != pki.StatusValid {
		t.Fatalf("list after revoke: %+v", l)
	}

	// CRL 1 lists alice with her reason, signed by the CA. ca was opened
	// before rv revoked her: it must neither sign from nor write back a
	// stale database.
	crl, path, err := ca.CRL(authority.CRLOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if calls != 1 {
		t.Errorf("password asked %d times, want once for the whole session", calls)
	}
	if path != filepath.Join(res.ClientCA.Dir, authority.CRLFile) {
		t.Errorf("CRL written to %s", path)
	}
	loaded, err := pki.LoadCRL(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := loaded.CheckSignatureFrom(res.ClientCA.Cert); err != nil {
		t.Errorf("CRL signature: %v", err)
	}
	if loaded.Number.Int64() != 1 || len(loaded.RevokedCertificateEntries) != 1 ||
		loaded.RevokedCertificateEntries[0].SerialNumber.Cmp(alice.Cert.SerialNumber) != 0 ||
		loaded.RevokedCertificateEntries[0].ReasonCode != 1 || crl.Number.Int64() != 1 {
		t.Errorf("CRL: number %v, entries %+v", loaded.Number, loaded.RevokedCertificateEntries)
	}
	if d := loaded.NextUpdate.Sub(loaded.ThisUpdate); d < 7*24*time.Hour || d > 7*24*time.Hour+10*time.Minute {
		t.Errorf("next update after %v, want 7 days", d)
	}
	if loaded.SignatureAlgorithm != x509.ECDSAWithSHA256 {
		t.Errorf("CRL signature algorithm %v", loaded.SignatureAlgorithm)
	}

	// The tunnel's verifier rejects alice and accepts bob with this CRL.
	bundle, _ := pki.LoadCertificates(filepath.Join(res.ClientCA.Dir, authority.BundleFile))
	v := pkitest.Verifier(t, bundle, loaded)
	if _, err := v.Verify([]*x509.Certificate{alice.Cert, res.ClientCA.Cert}, pki.VerifyOptions{Usage: pki.UsageClient}); !errors.Is(err, pki.ErrRevoked) {
		t.Errorf("alice after revocation: %v", err)
	}
	if _, err := v.Verify([]*x509.Certificate{bob.Cert, res.ClientCA.Cert}, pki.VerifyOptions{Usage: pki.UsageClient}); err != nil {
		t.Errorf("bob: %v", err)
	}

	// CRL numbers increase across handles, and are persisted first.
	if _, err := rv2.Revoke(bob.Cert.SerialNumber, "certificateHold"); err != nil {
		t.Fatal(err)
	}
	rv3, err := authority.OpenCA(res.ClientCA.Dir, staticPW("pw"))
	if err != nil {
		t.Fatal(err)
	}
	if rv3.CRLNumber() != 1 {
		t.Errorf("persisted CRL number %d, want 1", rv3.CRLNumber())
	}
	custom := filepath.Join(out, "client.crl")
	crl2, _, err := rv3.CRL(authority.CRLOptions{Days: 2, Out: custom})
	if err != nil {
		t.Fatal(err)
	}
	if crl2.Number.Int64() != 2 || len(crl2.RevokedCertificateEntries) != 2 || crl2.RevokedCertificateEntries[1].ReasonCode != 6 {
		t.Errorf("CRL 2: number %v entries %+v", crl2.Number, crl2.RevokedCertificateEntries)
	}
	if d := crl2.NextUpdate.Sub(crl2.ThisUpdate); d > 2*24*time.Hour+10*time.Minute {
		t.Errorf("--days 2: next update after %v", d)
	}
	if _, err := os.Stat(custom); err != nil {
		t.Error(err)
	}
	// The CRL file is replaced without --force.
	if _, _, err := rv3.CRL(authority.CRLOptions{Out: custom}); err != nil {
		t.Errorf("replacing a CRL: %v", err)
	}
	if openCA(t, res.ClientCA.Dir).CRLNumber() != 3 {
		t.Error("CRL number not persisted")
	}
	if _, _, err := rv3.CRL(authority.CRLOptions{Days: -1}); err == nil {
		t.Error("negative days accepted")
	}

	// A wrong password signs no CRL and does not advance the number.
	bad, _ := authority.OpenCA(res.ClientCA.Dir, staticPW("nope"))
	if _, _, err := bad.CRL(authority.CRLOptions{}); !errors.Is(err, pki.ErrBadPassword) {
		t.Errorf("CRL with the wrong password: %v", err)
	}
	if openCA(t, res.ClientCA.Dir).CRLNumber() != 3 {
		t.Error("failed CRL advanced the number")
	}
	// No temporary files are left behind by the atomic writes.
	entries, _ := os.ReadDir(res.ClientCA.Dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("leftover %s", e.Name())
		}
	}
}

func TestRevokeIntermediate(t *testing.T) {
	_, res := initPKI(t, "")
	root := openCA(t, res.Root.Dir)
	// The server CA is revoked through the root, whose database has it.
	if _, err := root.RevokeCert(res.ServerCA.Cert, "cessationOfOperation"); err != nil {
		t.Fatal(err)
	}
	if _, err := openCA(t, res.ClientCA.Dir).RevokeCert(res.ServerCA.Cert, ""); !errors.Is(err, authority.ErrNotIssued) {
		t.Errorf("revoking the server CA through the client CA: %v", err)
	}
	crl, _, err := root.CRL(authority.CRLOptions{Days: 90})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := openCA(t, res.ServerCA.Dir).Issue(authority.IssueRequest{Kind: authority.KindServer, Name: "gw", OutDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	bundle, _ := pki.LoadCertificates(filepath.Join(res.ServerCA.Dir, authority.BundleFile))
	_, err = pkitest.Verifier(t, bundle, crl).Verify([]*x509.Certificate{gw.Cert, res.ServerCA.Cert}, pki.VerifyOptions{Usage: pki.UsageServer})
	if !errors.Is(err, pki.ErrRevoked) {
		t.Errorf("leaf under a revoked intermediate: %v", err)
	}
}

func TestList(t *testing.T) {
	_, res := initPKI(t, "")
	ca := openCA(t, res.ServerCA.Dir)
	out := t.TempDir()
	a, err := ca.Issue(authority.IssueRequest{Kind: authority.KindServer, Name: "a", OutDir: out, Days: 10})
	if err != nil {
		t.Fatal(err)
	}
	b, err := ca.Issue(authority.IssueRequest{Kind: authority.KindServer, Name: "b", OutDir: out})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Revoke(b.Cert.SerialNumber, ""); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	l := listAt(t, ca, now)
	if len(l) != 2 || l[0].Serial != a.Cert.SerialNumber.Text(16) || l[0].Status != pki.StatusValid || l[0].DaysLeft != 9 ||
		l[1].Status != authority.StatusRevoked || l[1].Reason != "unspecified" {
		t.Errorf("list now: %+v", l)
	}
	l = listAt(t, ca, now.Add(11*24*time.Hour))
	// Expired a day and a little ago: floored, as pki inspect counts.
	if l[0].Status != pki.StatusExpired || l[0].DaysLeft != -2 || l[1].Status != authority.StatusRevoked {
		t.Errorf("list in 11 days: %+v", l)
	}
	if l = listAt(t, ca, now.Add(-time.Hour)); l[0].Status != pki.StatusNotYetValid {
		t.Errorf("list an hour ago: %+v", l[0])
	}
}

// TestListReadOnly checks that listing changes nothing: not the CA's
// db.json, and not what an open handle knows of it, which only its own
// changes move forward.
func TestListReadOnly(t *testing.T) {
	_, res := initPKI(t, "")
	dir := res.ClientCA.Dir
	if _, err := res.ClientCA.Issue(authority.IssueRequest{Kind: authority.KindClient, Name: "alice", OutDir: t.TempDir()}); err != nil {
		t.Fatal(err)
	}
	lister := openCA(t, dir)
	// Another handle signs a CRL after lister was opened.
	if _, _, err := openCA(t, dir).CRL(authority.CRLOptions{Out: filepath.Join(t.TempDir(), "crl.pem")}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, authority.DBFile)
	old := time.Now().Add(-time.Hour).Truncate(time.Second)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if l := listAt(t, lister, time.Now()); len(l) != 1 {
		t.Fatalf("list: %+v", l)
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Errorf("listing rewrote %s:\n%s\nnow:\n%s", path, before, after)
	}
	if fi, err := os.Stat(path); err != nil || !fi.ModTime().Equal(old) {
		t.Errorf("listing touched %s: %v, %v", path, fi.ModTime(), err)
	}
	if n := lister.CRLNumber(); n != 0 {
		t.Errorf("after listing, the handle's CRL number is %d: listing replaced its database with a newer copy", n)
	}
}

func TestInitialCRL(t *testing.T) {
	_, res := initPKI(t, "")
	ca := res.ClientCA
	crl, path, err := ca.CRL(authority.CRLOptions{Initial: true})
	if err != nil {
		t.Fatal(err)
	}
	if path != filepath.Join(ca.Dir, authority.CRLFile) || crl.Number.Sign() != 0 || len(crl.RevokedCertificateEntries) != 0 {
		t.Errorf("initial CRL %s: number %v, %d entries", path, crl.Number, len(crl.RevokedCertificateEntries))
	}
	if err := crl.CheckSignatureFrom(ca.Cert); err != nil {
		t.Errorf("initial CRL signature: %v", err)
	}
	if n := openCA(t, ca.Dir).CRLNumber(); n != 0 {
		t.Errorf("initial CRL recorded as number %d", n)
	}
	next, _, err := ca.CRL(authority.CRLOptions{})
	if err != nil || next.Number.Int64() != 1 {
		t.Fatalf("first CRL after the initial one: %v, %v", next, err)
	}
	if _, _, err := ca.CRL(authority.CRLOptions{Initial: true}); err == nil || !strings.Contains(err.Error(), "would go back to 0") {
		t.Errorf("initial CRL after CRL 1: %v", err)
	}
}
