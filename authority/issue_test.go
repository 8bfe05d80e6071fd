package authority_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twoway/twoway/authority"
	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/pki/pkitest"
)

// checkLeaf asserts what every leaf must carry: CA:false, SKI, AKI of
// its issuer, a positive 128-bit serial, one EKU, NotBefore pulled back for
// clock skew, and the requested lifetime.
func checkLeaf(t *testing.T, c, issuer *x509.Certificate, eku x509.ExtKeyUsage, days int, issuedAt time.Time) {
	t.Helper()
	if !c.BasicConstraintsValid || c.IsCA {
		t.Error("leaf is not CA:false")
	}
	if len(c.ExtKeyUsage) != 1 || c.ExtKeyUsage[0] != eku || len(c.UnknownExtKeyUsage) != 0 {
		t.Errorf("EKU %v, want only %v", c.ExtKeyUsage, eku)
	}
	if len(c.SubjectKeyId) == 0 || !bytes.Equal(c.AuthorityKeyId, issuer.SubjectKeyId) {
		t.Errorf("SKI %x AKI %x, issuer SKI %x", c.SubjectKeyId, c.AuthorityKeyId, issuer.SubjectKeyId)
	}
	if err := c.CheckSignatureFrom(issuer); err != nil {
		t.Errorf("not signed by the CA: %v", err)
	}
	checkSerial(t, c.SerialNumber)
	if skew := issuedAt.Sub(c.NotBefore); skew < 4*time.Minute || skew > 6*time.Minute+time.Second {
		t.Errorf("NotBefore %v is %v before issuance, want 5 minutes", c.NotBefore, skew)
	}
	if life := c.NotAfter.Sub(issuedAt); life < time.Duration(days)*24*time.Hour-time.Minute || life > time.Duration(days)*24*time.Hour+time.Minute {
		t.Errorf("lifetime %v, want %d days", life, days)
	}
}

func TestIssueServer(t *testing.T) {
	_, res := initPKI(t, "")
	ca := openCA(t, res.ServerCA.Dir)
	out := t.TempDir()
	now := time.Now()
	iss, err := ca.Issue(authority.IssueRequest{Kind: authority.KindServer, Name: "GW.example.com", DNSNames: []string{"vpn.example.com", "*.gw.example.com", "gw.example.com"},
		IPs: []net.IP{net.ParseIP("192.0.2.10")}, OutDir: out})
	if err != nil {
		t.Fatal(err)
	}
	c := iss.Cert
	checkLeaf(t, c, res.ServerCA.Cert, x509.ExtKeyUsageServerAuth, authority.DefaultServerDays, now)
	if c.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("key usage %b, want digitalSignature only for ECDSA", c.KeyUsage)
	}
	if c.Subject.CommonName != "gw.example.com" || !slices.Equal(c.DNSNames, []string{"gw.example.com", "vpn.example.com", "*.gw.example.com"}) ||
		len(c.IPAddresses) != 1 || !c.IPAddresses[0].Equal(net.ParseIP("192.0.2.10")) {
		t.Errorf("names: CN %q DNS %v IP %v", c.Subject.CommonName, c.DNSNames, c.IPAddresses)
	}
	if c.SignatureAlgorithm != x509.ECDSAWithSHA256 {
		t.Errorf("signature algorithm %v", c.SignatureAlgorithm)
	}
	if iss.CertFile != filepath.Join(out, "gw.example.com.crt") || iss.KeyFile != filepath.Join(out, "gw.example.com.key") {
		t.Errorf("files %s %s", iss.CertFile, iss.KeyFile)
	}
	checkMode(t, iss.KeyFile, 0o600)

	// NAME.crt is leaf + server CA; the key matches and is unencrypted.
	certs, err := pki.LoadCertificates(iss.CertFile)
	if err != nil || len(certs) != 2 || !certs[0].Equal(c) || !certs[1].Equal(res.ServerCA.Cert) {
		t.Fatalf("cert file: %d certs, %v", len(certs), err)
	}
	if _, err := pki.LoadKeyPair(iss.CertFile, iss.KeyFile, nil); err != nil {
		t.Errorf("key pair: %v", err)
	}

	// The tunnel's verifier accepts it as a server for its names, not as a
	// client, and not through the client-CA bundle.
	serverBundle, _ := pki.LoadCertificates(filepath.Join(res.ServerCA.Dir, authority.BundleFile))
	clientBundle, _ := pki.LoadCertificates(filepath.Join(res.ClientCA.Dir, authority.BundleFile))
	v := pkitest.Verifier(t, serverBundle)
	for _, name := range []string{"gw.example.com", "vpn.example.com", "x.gw.example.com", "192.0.2.10"} {
		if _, err := v.Verify(certs, pki.VerifyOptions{Usage: pki.UsageServer, ServerName: name}); err != nil {
			t.Errorf("verify as server %s: %v", name, err)
		}
	}
	if _, err := v.Verify(certs, pki.VerifyOptions{Usage: pki.UsageClient}); !errors.Is(err, pki.ErrWrongUsage) {
		t.Errorf("verify as client: %v", err)
	}
	if _, err := pkitest.Verifier(t, clientBundle).Verify(certs, pki.VerifyOptions{Usage: pki.UsageServer}); !errors.Is(err, pki.ErrUntrusted) {
		t.Errorf("verify through the client-CA bundle: %v", err)
	}

	// An IP address as the name becomes an IP SAN.
	ipIss, err := ca.Issue(authority.IssueRequest{Kind: authority.KindServer, Name: "198.51.100.7", OutDir: out, Days: 30})
	if err != nil {
		t.Fatal(err)
	}
	if len(ipIss.Cert.DNSNames) != 0 || len(ipIss.Cert.IPAddresses) != 1 || !ipIss.Cert.IPAddresses[0].Equal(net.ParseIP("198.51.100.7")) {
		t.Errorf("IP name: DNS %v IP %v", ipIss.Cert.DNSNames, ipIss.Cert.IPAddresses)
	}
	checkLeaf(t, ipIss.Cert, res.ServerCA.Cert, x509.ExtKeyUsageServerAuth, 30, now)

	// Both are in the CA database.
	l := listAt(t, ca, time.Now())
	if len(l) != 2 || l[0].Serial != c.SerialNumber.Text(16) || l[0].Kind != authority.KindServer || l[0].SHA256 != pki.Fingerprint(c) ||
		!l[0].NotAfter.Equal(c.NotAfter) || l[0].Subject != c.Subject.String() {
		t.Errorf("database: %+v", l)
	}
	reopened := openCA(t, res.ServerCA.Dir)
	if got := listAt(t, reopened, time.Now()); len(got) != 2 {
		t.Errorf("database after reopening has %d records", len(got))
	}
}

func TestIssueRSAServer(t *testing.T) {
	_, res := initPKI(t, "")
	iss, err := openCA(t, res.ServerCA.Dir).Issue(authority.IssueRequest{Kind: authority.KindServer, Name: "gw", KeyType: authority.KeyRSA3072, OutDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if iss.Cert.KeyUsage != x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment {
		t.Errorf("RSA server key usage %b, want digitalSignature|keyEncipherment", iss.Cert.KeyUsage)
	}
	if iss.Cert.PublicKeyAlgorithm != x509.RSA {
		t.Errorf("public key %v", iss.Cert.PublicKeyAlgorithm)
	}
}

func TestIssueClient(t *testing.T) {
	_, res := initPKI(t, "")
	ca := openCA(t, res.ClientCA.Dir)
	out := filepath.Join(t.TempDir(), "new", "dir")
	now := time.Now()
	iss, err := ca.Issue(authority.IssueRequest{Kind: authority.KindClient, Name: "alice", Groups: []string{"eng", "vpn.users", "eng"},
		Emails: []string{"alice@example.com"}, OutDir: out, KeyPassword: []byte("leafpw")})
	if err != nil {
		t.Fatal(err)
	}
	c := iss.Cert
	checkLeaf(t, c, res.ClientCA.Cert, x509.ExtKeyUsageClientAuth, authority.DefaultClientDays, now)
	if c.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("key usage %b", c.KeyUsage)
	}
	if c.Subject.CommonName != "alice" || !slices.Equal(c.Subject.OrganizationalUnit, []string{"eng", "vpn.users"}) ||
		!slices.Equal(c.EmailAddresses, []string{"alice@example.com"}) || len(c.DNSNames) != 0 {
		t.Errorf("subject %s, emails %v, DNS %v", c.Subject, c.EmailAddresses, c.DNSNames)
	}
	// One OU attribute per group.
	var ous int
	for _, a := range c.Subject.Names {
		if a.Type.Equal(asn1.ObjectIdentifier{2, 5, 4, 11}) {
			ous++
		}
	}
	if ous != 2 {
		t.Errorf("%d OU attributes, want 2", ous)
	}
	// --encrypt: the leaf key is encrypted and 0600.
	checkMode(t, iss.KeyFile, 0o600)
	if enc, _ := pki.IsEncryptedKeyFile(iss.KeyFile); !enc {
		t.Error("leaf key not encrypted")
	}
	if _, err := pki.LoadKeyPair(iss.CertFile, iss.KeyFile, []byte("leafpw")); err != nil {
		t.Errorf("key pair: %v", err)
	}

	clientBundle, _ := pki.LoadCertificates(filepath.Join(res.ClientCA.Dir, authority.BundleFile))
	certs, _ := pki.LoadCertificates(iss.CertFile)
	id, err := pkitest.Verifier(t, clientBundle).Verify(certs, pki.VerifyOptions{Usage: pki.UsageClient})
	if err != nil {
		t.Fatal(err)
	}
	if id.Name() != "alice" || !id.InGroup("eng") || !id.InGroup("vpn.users") || id.Serial != c.SerialNumber.Text(16) {
		t.Errorf("identity %+v", id)
	}
	if _, err := pkitest.Verifier(t, clientBundle).Verify(certs, pki.VerifyOptions{Usage: pki.UsageServer}); !errors.Is(err, pki.ErrWrongUsage) {
		t.Errorf("client cert as server: %v", err)
	}
}

func TestIssueBadInput(t *testing.T) {
	dir, res := initPKI(t, "")
	ca := openCA(t, res.ClientCA.Dir)
	server := openCA(t, res.ServerCA.Dir)
	out := t.TempDir()
	if _, err := ca.Issue(authority.IssueRequest{Kind: authority.KindClient, Name: "alice", OutDir: out}); err != nil {
		t.Fatal(err)
	}
	before := pkitest.Snapshot(t, filepath.Dir(dir))

	cases := []struct {
		name string
		ca   *authority.CA
		req  authority.IssueRequest
		is   error
		msg  string
	}{
		{"group with space", ca, authority.IssueRequest{Kind: authority.KindClient, Name: "bob", Groups: []string{"eng", "bad group"}}, authority.ErrInvalidGroup, `invalid group "bad group"`},
		{"empty group", ca, authority.IssueRequest{Kind: authority.KindClient, Name: "bob", Groups: []string{""}}, authority.ErrInvalidGroup, `invalid group ""`},
		{"long group", ca, authority.IssueRequest{Kind: authority.KindClient, Name: "bob", Groups: []string{strings.Repeat("g", 65)}}, authority.ErrInvalidGroup, "1-64 characters"},
		{"group with comma", ca, authority.IssueRequest{Kind: authority.KindClient, Name: "bob", Groups: []string{"a,b"}}, authority.ErrInvalidGroup, "invalid group"},
		{"bad client ID", ca, authority.IssueRequest{Kind: authority.KindClient, Name: "../bob"}, authority.ErrInvalidName, "client ID"},
		{"empty client ID", ca, authority.IssueRequest{Kind: authority.KindClient}, authority.ErrInvalidName, "client ID"},
		{"bad email", ca, authority.IssueRequest{Kind: authority.KindClient, Name: "bob", Emails: []string{"Bob <bob@example.com>"}}, authority.ErrInvalidName, "e-mail"},
		{"client with DNS", ca, authority.IssueRequest{Kind: authority.KindClient, Name: "bob", DNSNames: []string{"bob.example.com"}}, authority.ErrInvalidName, "not DNS names"},
		{"server with group", server, authority.IssueRequest{Kind: authority.KindServer, Name: "gw", Groups: []string{"eng"}}, authority.ErrInvalidName, "host names"},
		{"bad DNS name", server, authority.IssueRequest{Kind: authority.KindServer, Name: "gw_1.example.com"}, authority.ErrInvalidName, "DNS name"},
		{"wildcard as name", server, authority.IssueRequest{Kind: authority.KindServer, Name: "*.example.com"}, authority.ErrInvalidName, "DNS name"},
		{"bad extra DNS", server, authority.IssueRequest{Kind: authority.KindServer, Name: "gw", DNSNames: []string{"a..b"}}, authority.ErrInvalidName, "label"},
		{"existing files", ca, authority.IssueRequest{Kind: authority.KindClient, Name: "alice"}, authority.ErrExists, "alice.crt"},
		{"outlives CA", ca, authority.IssueRequest{Kind: authority.KindClient, Name: "bob", Days: 3000}, authority.ErrOutlivesCA, "use --days"},
		{"from the root", openCA(t, res.Root.Dir), authority.IssueRequest{Kind: authority.KindClient, Name: "bob"}, authority.ErrRootIssue, "root CA"},
		{"unknown kind", ca, authority.IssueRequest{Kind: "peer", Name: "bob"}, nil, "unknown certificate kind"},
		{"negative days", ca, authority.IssueRequest{Kind: authority.KindClient, Name: "bob", Days: -1}, nil, "--days"},
		{"unknown key type", ca, authority.IssueRequest{Kind: authority.KindClient, Name: "bob", KeyType: "dsa"}, authority.ErrUnknownKeyType, "dsa"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.req.OutDir = out
			_, err := tc.ca.Issue(tc.req)
			if err == nil || (tc.is != nil && !errors.Is(err, tc.is)) || !strings.Contains(err.Error(), tc.msg) || strings.Contains(err.Error(), "\n") {
				t.Errorf("error %v, want %v containing %q", err, tc.is, tc.msg)
			}
		})
	}
	pkitest.SameSnapshot(t, before, pkitest.Snapshot(t, filepath.Dir(dir)))

	// --force replaces the files.
	old, _ := os.ReadFile(filepath.Join(out, "alice.crt"))
	if _, err := ca.Issue(authority.IssueRequest{Kind: authority.KindClient, Name: "alice", OutDir: out, Force: true}); err != nil {
		t.Fatal(err)
	}
	if now, _ := os.ReadFile(filepath.Join(out, "alice.crt")); bytes.Equal(old, now) {
		t.Error("--force did not replace alice.crt")
	}
}

func TestCSRAndSign(t *testing.T) {
	_, res := initPKI(t, "")
	client := openCA(t, res.ClientCA.Dir)
	server := openCA(t, res.ServerCA.Dir)
	out := t.TempDir()

	r, err := authority.CreateCSR(authority.CSRRequest{Name: "carol", Groups: []string{"ops"}, Emails: []string{"carol@example.com"}, OutDir: out, KeyPassword: []byte("k")})
	if err != nil {
		t.Fatal(err)
	}
	checkMode(t, r.KeyFile, 0o600)
	if enc, _ := pki.IsEncryptedKeyFile(r.KeyFile); !enc {
		t.Error("CSR key not encrypted")
	}
	csr, err := authority.LoadCSR(r.CSRFile)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	crtFile := filepath.Join(out, "carol.crt")
	// Neither asserted nor confirmed: refused, and the refusal shows
	// what the request asks for.
	_, err = client.SignCSR(authority.SignRequest{CSR: csr, Kind: authority.KindClient, Out: crtFile})
	if !errors.Is(err, authority.ErrUnconfirmed) || !strings.Contains(err.Error(), `"carol"`) || !strings.Contains(err.Error(), "ops") || !strings.Contains(err.Error(), "carol@example.com") {
		t.Fatalf("unasserted CSR: %v", err)
	}
	if _, err := client.SignCSR(authority.SignRequest{CSR: csr, Kind: authority.KindClient, Out: crtFile, Name: "ceo"}); !errors.Is(err, authority.ErrBadCSR) {
		t.Fatalf("asserted name differs: %v", err)
	}
	if _, err := client.SignCSR(authority.SignRequest{CSR: csr, Kind: authority.KindClient, Out: crtFile, Name: "carol", Groups: []string{"admins"}}); !errors.Is(err, authority.ErrBadCSR) {
		t.Fatalf("asserted group the CSR does not ask for: %v", err)
	}
	// Confirmed without --group: the groups the CSR asks for are dropped.
	dropped := filepath.Join(out, "carol-nogroups.crt")
	iss, err := client.SignCSR(authority.SignRequest{CSR: csr, Kind: authority.KindClient, Out: dropped, Confirmed: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(iss.Cert.Subject.OrganizationalUnit) != 0 {
		t.Fatalf("unasserted groups signed: %v", iss.Cert.Subject.OrganizationalUnit)
	}
	iss, err = client.SignCSR(authority.SignRequest{CSR: csr, Kind: authority.KindClient, Out: crtFile, Name: "carol", Groups: []string{"ops"}})
	if err != nil {
		t.Fatal(err)
	}
	c := iss.Cert
	checkLeaf(t, c, res.ClientCA.Cert, x509.ExtKeyUsageClientAuth, authority.DefaultClientDays, now)
	if c.Subject.CommonName != "carol" || !slices.Equal(c.Subject.OrganizationalUnit, []string{"ops"}) || !slices.Equal(c.EmailAddresses, []string{"carol@example.com"}) {
		t.Errorf("subject %s emails %v", c.Subject, c.EmailAddresses)
	}
	if iss.KeyFile != "" {
		t.Errorf("SignCSR reports a key file %q", iss.KeyFile)
	}
	// The certificate belongs to the key the requester kept.
	if _, err := pki.LoadKeyPair(crtFile, r.KeyFile, []byte("k")); err != nil {
		t.Errorf("signed cert and CSR key: %v", err)
	}
	if l := listAt(t, client, time.Now()); len(l) != 2 || l[0].Kind != authority.KindClient {
		t.Errorf("database %+v", l)
	}
	// Signing the same request as a server fails: groups and e-mails.
	if _, err := server.SignCSR(authority.SignRequest{CSR: csr, Kind: authority.KindServer, Out: filepath.Join(out, "x.crt"), Name: "carol", Groups: []string{"ops"}}); !errors.Is(err, authority.ErrInvalidName) {
		t.Errorf("client CSR as server: %v", err)
	}
	if _, err := client.SignCSR(authority.SignRequest{CSR: csr, Kind: authority.KindClient, Out: crtFile, Name: "carol"}); !errors.Is(err, authority.ErrExists) {
		t.Errorf("existing output: %v", err)
	}

	// A server request; its name becomes a SAN, with a validity override.
	r, err = authority.CreateCSR(authority.CSRRequest{Name: "gw.example.com", DNSNames: []string{"vpn.example.com"}, IPs: []net.IP{net.ParseIP("192.0.2.1")}, OutDir: out})
	if err != nil {
		t.Fatal(err)
	}
	csr, _ = authority.LoadCSR(r.CSRFile)
	iss, err = server.SignCSR(authority.SignRequest{CSR: csr, Kind: authority.KindServer, Days: 90, Out: filepath.Join(out, "gw.crt"), Name: "gw.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	checkLeaf(t, iss.Cert, res.ServerCA.Cert, x509.ExtKeyUsageServerAuth, 90, now)
	if !slices.Equal(iss.Cert.DNSNames, []string{"gw.example.com", "vpn.example.com"}) || len(iss.Cert.IPAddresses) != 1 {
		t.Errorf("names %v %v", iss.Cert.DNSNames, iss.Cert.IPAddresses)
	}
	if _, err := client.SignCSR(authority.SignRequest{CSR: csr, Kind: authority.KindClient, Out: filepath.Join(out, "y.crt"), Name: "gw.example.com"}); !errors.Is(err, authority.ErrInvalidName) {
		t.Errorf("server CSR as client: %v", err)
	}

	if _, err := authority.CreateCSR(authority.CSRRequest{Name: "dave", Groups: []string{"no way"}, OutDir: out}); !errors.Is(err, authority.ErrInvalidGroup) {
		t.Errorf("CSR with a bad group: %v", err)
	}
	if _, err := authority.CreateCSR(authority.CSRRequest{Name: "carol", OutDir: out}); !errors.Is(err, authority.ErrExists) {
		t.Errorf("CSR over existing files: %v", err)
	}
}

// rawCSR makes a request with whatever content a hostile requester likes.
func rawCSR(t *testing.T, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestSignCSRPolicy(t *testing.T) {
	dir, res := initPKI(t, "")
	client := openCA(t, res.ClientCA.Dir)
	out := t.TempDir()

	// A request asking to be a CA with any usage gets a plain client leaf.
	bc, _ := asn1.Marshal(struct {
		IsCA bool `asn1:"optional"`
	}{true})
	der := rawCSR(t, &x509.CertificateRequest{
		Subject:         pkix.Name{CommonName: "mallory"},
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 19}, Critical: true, Value: bc}},
	})
	csr, err := authority.ParseCSR(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	if err != nil {
		t.Fatal(err)
	}
	iss, err := client.SignCSR(authority.SignRequest{CSR: csr, Kind: authority.KindClient, Out: filepath.Join(out, "m.crt"), Name: "mallory"})
	if err != nil {
		t.Fatal(err)
	}
	if iss.Cert.IsCA || len(iss.Cert.ExtKeyUsage) != 1 || iss.Cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Errorf("requested extensions leaked: CA=%v EKU=%v", iss.Cert.IsCA, iss.Cert.ExtKeyUsage)
	}

	before := pkitest.Snapshot(t, dir)
	// A bad signature: flip a bit in the signature.
	bad := bytes.Clone(der)
	bad[len(bad)-3] ^= 0x40
	csr, err = authority.ParseCSR(bad)
	if err != nil {
		t.Fatal(err)
	}
	_, err = client.SignCSR(authority.SignRequest{CSR: csr, Kind: authority.KindClient, Out: filepath.Join(out, "bad.crt"), Name: "mallory"})
	if !errors.Is(err, authority.ErrBadCSR) || !strings.Contains(err.Error(), "signature does not verify") {
		t.Errorf("bad signature: %v", err)
	}
	// Groups in the request are validated like issue's.
	csr, _ = x509.ParseCertificateRequest(rawCSR(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "eve", OrganizationalUnit: []string{"admins!"}}}))
	if _, err := client.SignCSR(authority.SignRequest{CSR: csr, Kind: authority.KindClient, Out: filepath.Join(out, "eve.crt"), Name: "eve", Groups: []string{"admins!"}}); !errors.Is(err, authority.ErrInvalidGroup) || !strings.Contains(err.Error(), `invalid group "admins!"`) {
		t.Errorf("bad group in CSR: %v", err)
	}
	csr, _ = x509.ParseCertificateRequest(rawCSR(t, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "../../etc/x"}}))
	if _, err := client.SignCSR(authority.SignRequest{CSR: csr, Kind: authority.KindClient, Out: filepath.Join(out, "x.crt"), Confirmed: true}); !errors.Is(err, authority.ErrInvalidName) {
		t.Errorf("bad CN in CSR: %v", err)
	}
	pkitest.SameSnapshot(t, before, pkitest.Snapshot(t, dir))
	if entries, _ := os.ReadDir(out); len(entries) != 1 {
		t.Errorf("output dir holds %d files, want only m.crt", len(entries))
	}

	// Corrupt input.
	good := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	for name, data := range map[string][]byte{
		"truncated PEM": good[:len(good)/2],
		"junk":          []byte("hello"),
		"certificate":   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
	} {
		if _, err := authority.ParseCSR(data); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}
