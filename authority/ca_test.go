package authority_test

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twoway/twoway/authority"
	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/pki/pkitest"
)

var (
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidNameConstraints  = asn1.ObjectIdentifier{2, 5, 29, 30}
)

// initPKI makes the standard hierarchy in a temporary directory, with
// unencrypted keys unless a password is given.
func initPKI(t *testing.T, password string) (string, *authority.InitResult) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "pki")
	res, err := authority.Init(dir, authority.InitOptions{Org: "Example Corp", Password: []byte(password)})
	if err != nil {
		t.Fatal(err)
	}
	return dir, res
}

// openCA opens a CA directory whose key needs no password, failing the
// test if a password is asked for.
func openCA(t *testing.T, dir string) *authority.CA {
	t.Helper()
	ca, err := authority.OpenCA(dir, func() ([]byte, error) {
		t.Error("password requested for an unencrypted CA key")
		return nil, errors.New("no password")
	})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func listAt(t *testing.T, ca *authority.CA, now time.Time) []authority.ListEntry {
	t.Helper()
	l, err := ca.List(now)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func staticPW(pw string) func() ([]byte, error) {
	return func() ([]byte, error) { return []byte(pw), nil }
}

func extension(t *testing.T, c *x509.Certificate, oid asn1.ObjectIdentifier) (critical, present bool) {
	t.Helper()
	for _, e := range c.Extensions {
		if e.Id.Equal(oid) {
			return e.Critical, true
		}
	}
	return false, false
}

// checkCACert asserts what every CA certificate must carry.
func checkCACert(t *testing.T, c, issuer *x509.Certificate) {
	t.Helper()
	if !c.BasicConstraintsValid || !c.IsCA {
		t.Errorf("%s: not CA:true", c.Subject)
	}
	if crit, ok := extension(t, c, oidBasicConstraints); !ok || !crit {
		t.Errorf("%s: basic constraints not critical", c.Subject)
	}
	if c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("%s: key usage %b, want certSign|cRLSign", c.Subject, c.KeyUsage)
	}
	if crit, ok := extension(t, c, oidKeyUsage); !ok || !crit {
		t.Errorf("%s: key usage not critical", c.Subject)
	}
	if len(c.ExtKeyUsage) != 0 {
		t.Errorf("%s: CA has extended key usages %v", c.Subject, c.ExtKeyUsage)
	}
	if len(c.SubjectKeyId) == 0 {
		t.Errorf("%s: no subject key identifier", c.Subject)
	}
	if !bytes.Equal(c.AuthorityKeyId, issuer.SubjectKeyId) && c != issuer {
		t.Errorf("%s: authority key id %x, want issuer's %x", c.Subject, c.AuthorityKeyId, issuer.SubjectKeyId)
	}
	if err := c.CheckSignatureFrom(issuer); err != nil {
		t.Errorf("%s: not signed by %s: %v", c.Subject, issuer.Subject, err)
	}
	checkSerial(t, c.SerialNumber)
}

func checkSerial(t *testing.T, n *big.Int) {
	t.Helper()
	if n.Sign() <= 0 || n.BitLen() > 128 {
		t.Errorf("serial %x is not a positive 128-bit number", n)
	}
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != want {
		t.Errorf("%s: mode %v, want %v", path, fi.Mode().Perm(), want)
	}
}

func TestInit(t *testing.T) {
	dir, res := initPKI(t, "s3cret")
	root, server, client := res.Root.Cert, res.ServerCA.Cert, res.ClientCA.Cert

	checkCACert(t, root, root)
	checkCACert(t, server, root)
	checkCACert(t, client, root)
	if !res.Root.IsRoot() || res.ServerCA.IsRoot() {
		t.Error("IsRoot wrong")
	}
	// The root leaves path length open; each intermediate allows one more
	// level of CAs below it.
	if root.MaxPathLen != -1 {
		t.Errorf("root MaxPathLen %d, want none", root.MaxPathLen)
	}
	for _, c := range []*x509.Certificate{server, client} {
		if c.MaxPathLen != 1 {
			t.Errorf("%s: MaxPathLen %d, want 1", c.Subject, c.MaxPathLen)
		}
		if got := c.NotAfter.Sub(c.NotBefore); got < 5*365*24*time.Hour || got > 5*366*24*time.Hour+time.Hour {
			t.Errorf("%s: validity %v, want 5 years", c.Subject, got)
		}
	}
	if got := root.NotAfter.Sub(root.NotBefore); got < 10*365*24*time.Hour || got > 10*366*24*time.Hour {
		t.Errorf("root validity %v, want 10 years", got)
	}
	if root.SignatureAlgorithm != x509.ECDSAWithSHA256 || server.SignatureAlgorithm != x509.ECDSAWithSHA256 {
		t.Errorf("signature algorithms %v %v", root.SignatureAlgorithm, server.SignatureAlgorithm)
	}
	if root.Subject.CommonName != "Example Corp root CA" || server.Subject.CommonName != "Example Corp server CA" ||
		client.Subject.CommonName != "Example Corp client CA" || client.Subject.Organization[0] != "Example Corp" {
		t.Errorf("subjects: %s / %s / %s", root.Subject, server.Subject, client.Subject)
	}

	for _, sub := range []string{authority.RootDir, authority.ServerCADir, authority.ClientCADir} {
		d := filepath.Join(dir, sub)
		checkMode(t, filepath.Join(d, authority.CAKeyFile), 0o600)
		enc, err := pki.IsEncryptedKeyFile(filepath.Join(d, authority.CAKeyFile))
		if err != nil || !enc {
			t.Errorf("%s: CA key encrypted=%v err=%v", sub, enc, err)
		}
		certs, err := pki.LoadCertificates(filepath.Join(d, authority.CACertFile))
		if err != nil || len(certs) != 1 {
			t.Errorf("%s: ca.crt holds %d certificates (%v), want 1", sub, len(certs), err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, authority.RootDir, authority.BundleFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("root has a bundle.crt: %v", err)
	}
	for _, ca := range []*authority.CA{res.ServerCA, res.ClientCA} {
		bundle, err := pki.LoadCertificates(filepath.Join(ca.Dir, authority.BundleFile))
		if err != nil {
			t.Fatal(err)
		}
		if len(bundle) != 2 || !bundle[0].Equal(ca.Cert) || !bundle[1].Equal(root) {
			t.Errorf("%s bundle is not [CA, root]", ca.Dir)
		}
	}
	// The root's database knows both intermediates, so it can revoke them.
	list := listAt(t, openCA(t, filepath.Join(dir, authority.RootDir)), time.Now())
	if len(list) != 2 || list[0].Kind != authority.KindCA || list[0].Serial != server.SerialNumber.Text(16) ||
		list[1].Serial != client.SerialNumber.Text(16) || list[1].SHA256 != pki.Fingerprint(client) {
		t.Errorf("root database: %+v", list)
	}
}

func TestInitKeyTypes(t *testing.T) {
	dir := t.TempDir()
	res, err := authority.Init(dir, authority.InitOptions{KeyType: authority.KeyEd25519})
	if err != nil {
		t.Fatal(err)
	}
	if res.Root.Cert.SignatureAlgorithm != x509.PureEd25519 || res.ClientCA.Cert.SignatureAlgorithm != x509.PureEd25519 {
		t.Errorf("signature algorithm %v", res.Root.Cert.SignatureAlgorithm)
	}
	if res.Root.Cert.Subject.CommonName != "twoway root CA" {
		t.Errorf("default org: %s", res.Root.Cert.Subject)
	}
	// Unencrypted without a password.
	enc, err := pki.IsEncryptedKeyFile(filepath.Join(dir, authority.ClientCADir, authority.CAKeyFile))
	if err != nil || enc {
		t.Errorf("encrypted=%v err=%v", enc, err)
	}
	iss, err := openCA(t, res.ClientCA.Dir).Issue(authority.IssueRequest{Kind: authority.KindClient, Name: "alice", OutDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if iss.Cert.SignatureAlgorithm != x509.PureEd25519 {
		t.Errorf("leaf signature algorithm %v", iss.Cert.SignatureAlgorithm)
	}
}

func TestInitRefusesOverwrite(t *testing.T) {
	dir, res := initPKI(t, "")
	before := pkitest.Snapshot(t, dir)
	_, err := authority.Init(dir, authority.InitOptions{})
	if !errors.Is(err, authority.ErrExists) {
		t.Fatalf("second Init: %v, want ErrExists", err)
	}
	pkitest.SameSnapshot(t, before, pkitest.Snapshot(t, dir))

	if _, _, err := openCA(t, res.ClientCA.Dir).CRL(authority.CRLOptions{}); err != nil {
		t.Fatal(err)
	}
	res2, err := authority.Init(dir, authority.InitOptions{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if res2.Root.Cert.Equal(res.Root.Cert) {
		t.Error("--force kept the old root")
	}
	if l := listAt(t, res2.Root, time.Now()); len(l) != 2 || l[0].Serial != res2.ServerCA.Cert.SerialNumber.Text(16) {
		t.Errorf("new root database: %+v", l)
	}
	if _, err := os.Stat(filepath.Join(res.ClientCA.Dir, authority.CRLFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the old PKI's CRL survived --force: %v", err)
	}
	if _, err := authority.Init(dir, authority.InitOptions{Org: "bad\norg"}); !errors.Is(err, authority.ErrInvalidName) {
		t.Errorf("control character in org: %v", err)
	}
}

func TestOpenCABadInput(t *testing.T) {
	dir, res := initPKI(t, "pw")
	h := pkitest.NewHierarchy(t)
	leaf := h.ClientCA.Client(t, "alice")
	tmp := t.TempDir()
	leafFile := pkitest.WriteFile(t, tmp, "alice.crt", pkitest.PEM(leaf.Cert))

	// A leaf certificate file given as the CA.
	_, err := authority.OpenCA(leafFile, nil)
	if !errors.Is(err, authority.ErrNotCA) || !strings.Contains(err.Error(), leafFile+" is not a CA certificate") {
		t.Errorf("leaf file as CA: %v", err)
	}
	// A directory whose ca.crt is a leaf.
	fake := filepath.Join(tmp, "fake")
	os.Mkdir(fake, 0o700)
	pkitest.WriteFile(t, fake, authority.CACertFile, pkitest.PEM(leaf.Cert))
	_, err = authority.OpenCA(fake, nil)
	if !errors.Is(err, authority.ErrNotCA) || !strings.Contains(err.Error(), filepath.Join(fake, authority.CACertFile)+" is not a CA certificate") {
		t.Errorf("leaf ca.crt: %v", err)
	}
	// ca.crt itself names its directory.
	if ca, err := authority.OpenCA(filepath.Join(res.ClientCA.Dir, authority.CACertFile), nil); err != nil || ca.Dir != res.ClientCA.Dir {
		t.Errorf("OpenCA(ca.crt): %v", err)
	}
	if _, err := authority.OpenCA(filepath.Join(tmp, "missing"), nil); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing dir: %v", err)
	}

	// Corrupt files, each in a fresh copy of the client CA.
	corrupt := func(name string, data []byte, want string) {
		t.Helper()
		d := t.TempDir()
		for _, f := range []string{authority.CACertFile, authority.CAKeyFile, authority.DBFile, authority.BundleFile} {
			b, err := os.ReadFile(filepath.Join(res.ClientCA.Dir, f))
			if err != nil {
				t.Fatal(err)
			}
			pkitest.WriteFile(t, d, f, b)
		}
		pkitest.WriteFile(t, d, name, data)
		ca, err := authority.OpenCA(d, staticPW("pw"))
		if err == nil {
			// Key problems show when signing.
			_, err = ca.Issue(authority.IssueRequest{Kind: authority.KindClient, Name: "x", OutDir: t.TempDir()})
		}
		if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("corrupt %s: %v, want one line containing %q", name, err, want)
		}
	}
	certPEM, _ := os.ReadFile(filepath.Join(res.ClientCA.Dir, authority.CACertFile))
	keyPEM, _ := os.ReadFile(filepath.Join(res.ClientCA.Dir, authority.CAKeyFile))
	corrupt(authority.CACertFile, certPEM[:len(certPEM)/2], "ca.crt")
	corrupt(authority.CACertFile, []byte("junk"), "no PEM data")
	corrupt(authority.CAKeyFile, keyPEM[:len(keyPEM)/2], "ca.key")
	corrupt(authority.DBFile, []byte(`{"version": 1, "certificates": [`), "corrupt CA database")
	corrupt(authority.DBFile, []byte(`{"version": 1, "certificates": [{"serial": "zz"}]}`), "invalid serial")
	corrupt(authority.BundleFile, pkitest.PEM(res.ServerCA.Cert, res.Root.Cert), "does not start with ca.crt")
	corrupt(authority.BundleFile, pkitest.PEM(res.ClientCA.Cert), "does not end with a self-signed root")
	otherKey, _ := os.ReadFile(filepath.Join(dir, authority.ServerCADir, authority.CAKeyFile))
	corrupt(authority.CAKeyFile, otherKey, "does not match")
}

func TestWrongPassword(t *testing.T) {
	dir, res := initPKI(t, "right")
	out := t.TempDir()
	calls := 0
	ca, err := authority.OpenCA(res.ClientCA.Dir, func() ([]byte, error) { calls++; return []byte("wrong"), nil })
	if err != nil {
		t.Fatal(err)
	}
	// Listing and revoking sign nothing and ask nothing.
	listAt(t, ca, time.Now())
	if calls != 0 {
		t.Errorf("password asked %d times for list", calls)
	}
	before := pkitest.Snapshot(t, dir)
	_, err = ca.Issue(authority.IssueRequest{Kind: authority.KindClient, Name: "alice", OutDir: out})
	want := "wrong password for CA key " + filepath.Join(res.ClientCA.Dir, authority.CAKeyFile)
	if !errors.Is(err, pki.ErrBadPassword) || err.Error() != want {
		t.Errorf("Issue with wrong password: %v, want %q", err, want)
	}
	if calls != 1 {
		t.Errorf("password asked %d times, want 1", calls)
	}
	if entries, _ := os.ReadDir(out); len(entries) != 0 {
		t.Errorf("files written despite the wrong password: %v", entries)
	}
	pkitest.SameSnapshot(t, before, pkitest.Snapshot(t, dir))

	// No password function at all for an encrypted key.
	ca, _ = authority.OpenCA(res.ClientCA.Dir, nil)
	if err := ca.Unlock(); !errors.Is(err, pki.ErrPasswordRequired) {
		t.Errorf("Unlock without a password: %v", err)
	}
	ca, _ = authority.OpenCA(res.ClientCA.Dir, staticPW("right"))
	if err := ca.Unlock(); err != nil {
		t.Errorf("Unlock with the right password: %v", err)
	}
}

// writeCADir writes a CA directory for an in-memory CA, to test CAs
// twoway did not make (expired ones).
func writeCADir(t *testing.T, dir string, ca *pkitest.CA) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	pkitest.WriteFile(t, dir, authority.CACertFile, pkitest.PEM(ca.Cert))
	pkitest.WriteFile(t, dir, authority.CAKeyFile, pkitest.KeyPEM(t, ca.Key))
	if ca.Parent != nil {
		pkitest.WriteFile(t, dir, authority.BundleFile, pkitest.PEM(ca.Chain()...))
	}
	if err := (&authority.DB{}).Save(filepath.Join(dir, authority.DBFile)); err != nil {
		t.Fatal(err)
	}
}

func TestExpiredCA(t *testing.T) {
	root := pkitest.NewRoot(t, "test root")
	old := root.SubWithValidity(t, "old CA", time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
	dir := filepath.Join(t.TempDir(), "old")
	writeCADir(t, dir, old)
	out := t.TempDir()
	ca := openCA(t, dir)
	_, err := ca.Issue(authority.IssueRequest{Kind: authority.KindClient, Name: "alice", OutDir: out})
	want := `CA "old CA" (` + dir + `) expired on ` + old.Cert.NotAfter.UTC().Format(time.DateOnly)
	if !errors.Is(err, authority.ErrCAExpired) || err.Error() != want {
		t.Errorf("issue from expired CA: %v, want %q", err, want)
	}
	if _, err := ca.CreateSubCA(authority.SubCAOptions{Name: "x", Dir: filepath.Join(out, "x")}); !errors.Is(err, authority.ErrCAExpired) {
		t.Errorf("sub-CA from expired CA: %v", err)
	}
	if entries, _ := os.ReadDir(out); len(entries) != 0 {
		t.Errorf("files written: %v", entries)
	}
	// A valid intermediate under an expired root cannot issue either.
	key, err := authority.GenerateKey(authority.KeyECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "old root"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	rootCert, _ := x509.ParseCertificate(der)
	sub := (&pkitest.CA{Cert: rootCert, Key: key}).Sub(t, "sub")
	d2 := filepath.Join(t.TempDir(), "sub")
	writeCADir(t, d2, sub)
	_, err = openCA(t, d2).Issue(authority.IssueRequest{Kind: authority.KindClient, Name: "alice", OutDir: out})
	if !errors.Is(err, authority.ErrCAExpired) || !strings.Contains(err.Error(), `CA "old root" (`+d2+`) expired on`) {
		t.Errorf("issue under an expired root: %v", err)
	}
}

// TestCreateSubCAOneNameType checks that a sub-CA given only DNS domains
// cannot certify IP addresses, and one given only IP ranges cannot certify
// host names: a name constraint limits only names of its own type.
func TestCreateSubCAOneNameType(t *testing.T) {
	_, res := initPKI(t, "")
	server := openCA(t, res.ServerCA.Dir)
	_, ipnet, _ := net.ParseCIDR("198.18.0.0/16")
	dnsOnly, err := server.CreateSubCA(authority.SubCAOptions{Name: "dns-only", PermittedDNS: []string{"branch.example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	ipOnly, err := server.CreateSubCA(authority.SubCAOptions{Name: "ip-only", PermittedIPs: []*net.IPNet{ipnet}})
	if err != nil {
		t.Fatal(err)
	}
	v, err := pki.NewVerifier([]*x509.Certificate{res.ServerCA.Cert, res.Root.Cert}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		ca   *authority.CA
		host string
		ok   bool
	}{
		{"DNS-only CA, its domain", dnsOnly, "gw.branch.example.com", true},
		{"DNS-only CA, an IPv4 address", dnsOnly, "198.18.0.1", false},
		{"DNS-only CA, an IPv6 address", dnsOnly, "2001:db8::1", false},
		{"IP-only CA, its range", ipOnly, "198.18.0.1", true},
		{"IP-only CA, a host name", ipOnly, "gw.example.com", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			iss, err := tc.ca.Issue(authority.IssueRequest{Kind: authority.KindServer, Name: tc.host, OutDir: t.TempDir()})
			if !tc.ok {
				if err == nil {
					// Issued: see whether a client dialing that host accepts it.
					certs, _ := pki.LoadCertificates(iss.CertFile)
					_, verr := v.Verify(certs, pki.VerifyOptions{Usage: pki.UsageServer, ServerName: tc.host})
					t.Fatalf("CA constrained to other names issued for %s (client verdict: %v)", tc.host, verr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			certs, _ := pki.LoadCertificates(iss.CertFile)
			if _, err := v.Verify(certs, pki.VerifyOptions{Usage: pki.UsageServer, ServerName: tc.host}); err != nil {
				t.Fatalf("verify: %v", err)
			}
		})
	}
}

func TestCreateSubCA(t *testing.T) {
	dir, res := initPKI(t, "")
	server := openCA(t, res.ServerCA.Dir)
	_, ipnet, _ := net.ParseCIDR("10.0.0.0/8")
	sub, err := server.CreateSubCA(authority.SubCAOptions{Name: "branch", PermittedDNS: []string{"example.com"}, PermittedIPs: []*net.IPNet{ipnet}})
	if err != nil {
		t.Fatal(err)
	}
	if sub.Dir != filepath.Join(dir, "branch") {
		t.Errorf("default dir %s", sub.Dir)
	}
	c := sub.Cert
	checkCACert(t, c, res.ServerCA.Cert)
	if c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("MaxPathLen %d zero=%v, want 0", c.MaxPathLen, c.MaxPathLenZero)
	}
	if crit, ok := extension(t, c, oidNameConstraints); !ok || !crit || !c.PermittedDNSDomainsCritical {
		t.Error("name constraints missing or not critical")
	}
	if len(c.PermittedDNSDomains) != 1 || c.PermittedDNSDomains[0] != "example.com" ||
		len(c.PermittedIPRanges) != 1 || c.PermittedIPRanges[0].String() != "10.0.0.0/8" {
		t.Errorf("constraints %v %v", c.PermittedDNSDomains, c.PermittedIPRanges)
	}
	// The default validity is the parent's remaining lifetime (5 years
	// would outlive it).
	if !c.NotAfter.Equal(res.ServerCA.Cert.NotAfter) {
		t.Errorf("NotAfter %v, want the parent's %v", c.NotAfter, res.ServerCA.Cert.NotAfter)
	}
	bundle, err := pki.LoadCertificates(filepath.Join(sub.Dir, authority.BundleFile))
	if err != nil || len(bundle) != 3 || !bundle[0].Equal(c) || !bundle[1].Equal(res.ServerCA.Cert) || !bundle[2].Equal(res.Root.Cert) {
		t.Errorf("sub bundle: %d certs, %v", len(bundle), err)
	}
	if l := listAt(t, openCA(t, res.ServerCA.Dir), time.Now()); len(l) != 1 || l[0].Kind != authority.KindCA || l[0].Serial != c.SerialNumber.Text(16) {
		t.Errorf("parent database: %+v", l)
	}

	// Issuing within the constraints works, and peers trusting the server
	// CA bundle accept the longer chain.
	out := t.TempDir()
	iss, err := sub.Issue(authority.IssueRequest{Kind: authority.KindServer, Name: "gw.example.com", IPs: []net.IP{net.ParseIP("10.1.2.3")}, OutDir: out})
	if err != nil {
		t.Fatal(err)
	}
	if len(iss.Chain) != 2 {
		t.Errorf("chain of %d, want sub + server CA", len(iss.Chain))
	}
	v, err := pki.NewVerifier([]*x509.Certificate{res.ServerCA.Cert, res.Root.Cert}, nil)
	if err != nil {
		t.Fatal(err)
	}
	certs, _ := pki.LoadCertificates(iss.CertFile)
	if _, err := v.Verify(certs, pki.VerifyOptions{Usage: pki.UsageServer, ServerName: "gw.example.com"}); err != nil {
		t.Errorf("verify through sub-CA: %v", err)
	}
	// Outside them it is refused and nothing is written.
	before := pkitest.Snapshot(t, dir)
	_, err = sub.Issue(authority.IssueRequest{Kind: authority.KindServer, Name: "gw.other.org", OutDir: out})
	if err == nil || !strings.Contains(err.Error(), "not permitted") {
		t.Errorf("issue outside name constraints: %v", err)
	}
	_, err = sub.Issue(authority.IssueRequest{Kind: authority.KindServer, Name: "gw.example.com", IPs: []net.IP{net.ParseIP("192.0.2.1")}, OutDir: t.TempDir()})
	if err == nil {
		t.Error("issued for an IP outside the permitted range")
	}
	pkitest.SameSnapshot(t, before, pkitest.Snapshot(t, dir))

	// Path lengths: the sub-CA (0) cannot have sub-CAs; the server CA (1)
	// cannot have one allowing another level.
	if _, err := sub.CreateSubCA(authority.SubCAOptions{Name: "deeper"}); !errors.Is(err, authority.ErrPathLen) || !strings.Contains(err.Error(), "cannot issue sub-CAs") {
		t.Errorf("sub-CA under path length 0: %v", err)
	}
	if _, err := server.CreateSubCA(authority.SubCAOptions{Name: "deep", PathLen: 1}); !errors.Is(err, authority.ErrPathLen) {
		t.Errorf("path length 1 under 1: %v", err)
	}
	if _, err := server.CreateSubCA(authority.SubCAOptions{Name: "long", Days: 3650}); !errors.Is(err, authority.ErrOutlivesCA) {
		t.Errorf("sub-CA outliving its parent: %v", err)
	}
	if _, err := server.CreateSubCA(authority.SubCAOptions{Name: "a/b"}); !errors.Is(err, authority.ErrInvalidName) {
		t.Errorf("name with a slash and no dir: %v", err)
	}
	if _, err := server.CreateSubCA(authority.SubCAOptions{Name: "bad", Dir: filepath.Join(t.TempDir(), "bad"), PermittedDNS: []string{"bad domain"}}); !errors.Is(err, authority.ErrInvalidName) {
		t.Errorf("bad permitted domain: %v", err)
	}
	if _, err := server.CreateSubCA(authority.SubCAOptions{Name: "branch"}); !errors.Is(err, authority.ErrExists) {
		t.Errorf("existing sub-CA dir: %v", err)
	}

	// The root has no limit: a sub-CA under it may itself allow sub-CAs,
	// and an RSA CA signs with SHA-256.
	rootCA := openCA(t, res.Root.Dir)
	mid, err := rootCA.CreateSubCA(authority.SubCAOptions{Name: "partner CA", Dir: filepath.Join(dir, "partner"), PathLen: 1, Days: 30, KeyType: authority.KeyRSA3072, Password: []byte("pw")})
	if err != nil {
		t.Fatal(err)
	}
	if mid.Cert.MaxPathLen != 1 || mid.Cert.NotAfter.Sub(mid.Cert.NotBefore) > 30*24*time.Hour+time.Hour {
		t.Errorf("partner CA: path len %d, validity %v", mid.Cert.MaxPathLen, mid.Cert.NotAfter.Sub(mid.Cert.NotBefore))
	}
	reopened, err := authority.OpenCA(mid.Dir, staticPW("pw"))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := reopened.Issue(authority.IssueRequest{Kind: authority.KindClient, Name: "bob", OutDir: t.TempDir(), Days: 10})
	if err != nil {
		t.Fatal(err)
	}
	if leaf.Cert.SignatureAlgorithm != x509.SHA256WithRSA {
		t.Errorf("RSA CA signature algorithm %v", leaf.Cert.SignatureAlgorithm)
	}
}

// TestCAConcurrentUse issues certificates from many goroutines, half on
// one shared handle and half on handles of their own: the database lock
// loses no record, and no serial repeats.
func TestCAConcurrentUse(t *testing.T) {
	_, res := initPKI(t, "")
	shared := openCA(t, res.ClientCA.Dir)
	out := t.TempDir()
	var wg sync.WaitGroup
	for i := range 16 {
		ca := shared
		if i%2 == 1 {
			ca = openCA(t, res.ClientCA.Dir)
		}
		wg.Go(func() {
			if _, err := ca.Issue(authority.IssueRequest{Kind: authority.KindClient, Name: fmt.Sprintf("c%d", i), OutDir: out}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	certs := listAt(t, shared, time.Now())
	serials := map[string]bool{}
	for _, c := range certs {
		serials[c.Serial] = true
	}
	if len(certs) != 16 || len(serials) != 16 {
		t.Errorf("%d certificates recorded (%d serials), want 16", len(certs), len(serials))
	}
	checkMode(t, filepath.Join(res.ClientCA.Dir, authority.DBFile), 0o600)
}
