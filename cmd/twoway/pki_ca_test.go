package main

// CLI tests of the CA commands (init, ca create, issue, csr, sign, revoke,
// crl, list), driving the root command in-process in temporary directories,
// with openssl as an independent judge where it is installed.

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twoway/twoway/authority"
	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/pki/pkitest"
)

// caRun runs twoway with args and returns stdout and the error main would
// print. Stdin is not a terminal, so nothing can prompt.
func caRun(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, _, err := caRunAll(t, args...)
	return out, err
}

// caRunAll is caRun that also returns what went to standard error.
func caRunAll(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetIn(strings.NewReader(""))
	err = root.Execute()
	return out.String(), errOut.String(), err
}

// caOK runs twoway and fails the test if it fails.
func caOK(t *testing.T, args ...string) string {
	t.Helper()
	out, err := caRun(t, args...)
	if err != nil {
		t.Fatalf("twoway %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// caFail runs twoway, expecting a one-line error containing every part.
func caFail(t *testing.T, parts []string, args ...string) {
	t.Helper()
	_, err := caRun(t, args...)
	if err == nil {
		t.Errorf("twoway %s succeeded; want an error containing %q", strings.Join(args, " "), parts)
		return
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") {
		t.Errorf("twoway %s: error is not one line: %q", strings.Join(args, " "), msg)
	}
	for _, p := range parts {
		if !strings.Contains(msg, p) {
			t.Errorf("twoway %s: error %q lacks %q", strings.Join(args, " "), msg, p)
		}
	}
}

func caContains(t *testing.T, out string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(out, p) {
			t.Errorf("output lacks %q:\n%s", p, out)
		}
	}
}

func caCerts(t *testing.T, path string) []*x509.Certificate {
	t.Helper()
	certs, err := pki.LoadCertificates(path)
	if err != nil {
		t.Fatal(err)
	}
	return certs
}

// caPKI runs init in a temporary directory with a password file and
// returns the work directory, the PKI directory and the password file.
func caPKI(t *testing.T) (work, dir, pwFile string) {
	t.Helper()
	work = t.TempDir()
	dir = filepath.Join(work, "pki")
	pwFile = filepath.Join(work, "pw.txt")
	if err := os.WriteFile(pwFile, []byte("correct horse\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	caOK(t, "pki", "init", "--dir", dir, "--org", "Example Corp", "--password-file", pwFile)
	return work, dir, pwFile
}

func TestPKICAFlow(t *testing.T) {
	work, dir, pw := caPKI(t)
	serverCA, clientCA := filepath.Join(dir, "server-ca"), filepath.Join(dir, "client-ca")

	// init again: refused, nothing changed.
	before := pkitest.Snapshot(t, dir)
	caFail(t, []string{"already exists", "--force"}, "pki", "init", "--dir", dir, "--password-file", pw)
	pkitest.SameSnapshot(t, before, pkitest.Snapshot(t, dir))

	out := caOK(t, "pki", "issue", "server", "--ca", serverCA, "--name", "gw.example.com", "--dns", "vpn.example.com",
		"--ip", "127.0.0.1", "--out-dir", work, "--password-file", pw)
	caContains(t, out, "gw.example.com.crt", "gw.example.com.key", "mode 0600", filepath.Join(clientCA, "bundle.crt"))
	gw := caCerts(t, filepath.Join(work, "gw.example.com.crt"))
	if len(gw) != 2 || gw[0].ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || len(gw[0].ExtKeyUsage) != 1 ||
		len(gw[0].DNSNames) != 2 || len(gw[0].IPAddresses) != 1 || gw[0].IsCA {
		t.Errorf("server cert: EKU %v DNS %v IP %v", gw[0].ExtKeyUsage, gw[0].DNSNames, gw[0].IPAddresses)
	}

	out = caOK(t, "pki", "issue", "client", "--ca", clientCA, "--name", "alice", "--group", "eng", "--group", "ops",
		"--email", "alice@example.com", "--out-dir", work, "--password-file", pw, "--days", "30")
	caContains(t, out, "alice.crt", filepath.Join(serverCA, "bundle.crt"))
	alice := caCerts(t, filepath.Join(work, "alice.crt"))
	if alice[0].ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth || len(alice[0].ExtKeyUsage) != 1 ||
		strings.Join(alice[0].Subject.OrganizationalUnit, ",") != "eng,ops" || alice[0].Subject.CommonName != "alice" {
		t.Errorf("client cert: EKU %v subject %s", alice[0].ExtKeyUsage, alice[0].Subject)
	}
	if d := alice[0].NotAfter.Sub(alice[0].NotBefore); d < 30*24*time.Hour || d > 30*24*time.Hour+10*time.Minute {
		t.Errorf("--days 30 gave %v", d)
	}
	caOK(t, "pki", "issue", "client", "--ca", clientCA, "--name", "bob", "--out-dir", work, "--password-file", pw)

	// The tunnel's verifier agrees: alice is a client of the client-CA
	// bundle, the gateway a server of the server-CA bundle.
	clientBundle := caCerts(t, filepath.Join(clientCA, "bundle.crt"))
	v, err := pki.NewVerifier(clientBundle, nil)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := v.Verify(alice, pki.VerifyOptions{Usage: pki.UsageClient}); err != nil || !id.InGroup("ops") {
		t.Errorf("alice: %v", err)
	}
	if _, err := v.Verify(gw, pki.VerifyOptions{Usage: pki.UsageClient}); err == nil {
		t.Error("the gateway certificate passes as a client")
	}

	out = caOK(t, "pki", "list", "--ca", clientCA)
	caContains(t, out, "SERIAL", alice[0].SerialNumber.Text(16), "valid", "CN=alice")

	// Revoke alice by file, bob by serial in colon form.
	out = caOK(t, "pki", "revoke", "--ca", clientCA, "--cert", filepath.Join(work, "alice.crt"), "--reason", "keyCompromise")
	caContains(t, out, "Revoked", alice[0].SerialNumber.Text(16), "keyCompromise", "twoway pki crl --ca "+clientCA)
	bob := caCerts(t, filepath.Join(work, "bob.crt"))
	colon := strings.ToUpper(strings.Join(splitPairs(bob[0].SerialNumber.Text(16)), ":"))
	caOK(t, "pki", "revoke", "--ca", clientCA, "--serial", colon, "--reason", "superseded")
	caFail(t, []string{"already revoked"}, "pki", "revoke", "--ca", clientCA, "--serial", "0x"+bob[0].SerialNumber.Text(16))

	out = caOK(t, "pki", "crl", "--ca", clientCA, "--password-file", pw)
	caContains(t, out, "CRL number 1", filepath.Join(clientCA, "crl.pem"), "2 revoked")
	crl, err := pki.LoadCRL(filepath.Join(clientCA, "crl.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if len(crl.RevokedCertificateEntries) != 2 || crl.Number.Int64() != 1 {
		t.Errorf("CRL: number %v, %d entries", crl.Number, len(crl.RevokedCertificateEntries))
	}
	v, err = pki.NewVerifier(clientBundle, []*x509.RevocationList{crl})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(alice, pki.VerifyOptions{Usage: pki.UsageClient}); err == nil || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("alice after the CRL: %v", err)
	}
	out = caOK(t, "pki", "crl", "--ca", clientCA, "--password-file", pw, "--days", "1", "--out", filepath.Join(work, "c.crl"))
	caContains(t, out, "CRL number 2")

	out = caOK(t, "pki", "list", "--ca", clientCA)
	caContains(t, out, "revoked (keyCompromise)", "revoked (superseded)")
	out = caOK(t, "pki", "list", "--ca", clientCA, "--json")
	var entries []authority.ListEntry
	if err := json.Unmarshal([]byte(out), &entries); err != nil {
		t.Fatalf("list --json: %v\n%s", err, out)
	}
	if len(entries) != 2 || entries[0].Status != "revoked" || entries[0].Serial != alice[0].SerialNumber.Text(16) || entries[0].Kind != authority.KindClient {
		t.Errorf("list --json: %s", out)
	}
	out = caOK(t, "pki", "list", "--ca", filepath.Join(dir, "root"))
	caContains(t, out, "Example Corp server CA", "Example Corp client CA", " ca ")
}

func splitPairs(hex string) []string {
	if len(hex)%2 == 1 {
		hex = "0" + hex
	}
	var out []string
	for i := 0; i < len(hex); i += 2 {
		out = append(out, hex[i:i+2])
	}
	return out
}

func TestPKICAInitOutput(t *testing.T) {
	work := t.TempDir()
	dir := filepath.Join(work, "p")
	out := caOK(t, "pki", "init", "--dir", dir, "--no-password", "--key-type", "ed25519")
	// What each side holds, and the commands that make the rest.
	caContains(t, out,
		"The gateway (server) holds:",
		"twoway pki issue server --ca "+filepath.Join(dir, "server-ca")+" --name HOST",
		filepath.Join(dir, "client-ca", "bundle.crt")+"   (to verify clients)",
		"Each client holds:",
		"twoway pki issue client --ca "+filepath.Join(dir, "client-ca")+" --name ID",
		filepath.Join(dir, "server-ca", "bundle.crt")+"   (to verify the gateway)",
		"unencrypted",
	)
	for _, sub := range []string{"root", "server-ca", "client-ca"} {
		enc, err := pki.IsEncryptedKeyFile(filepath.Join(dir, sub, "ca.key"))
		if err != nil || enc {
			t.Errorf("%s key: encrypted=%v err=%v", sub, enc, err)
		}
	}
	if c := caCerts(t, filepath.Join(dir, "root", "ca.crt"))[0]; c.SignatureAlgorithm != x509.PureEd25519 {
		t.Errorf("--key-type ed25519: %v", c.SignatureAlgorithm)
	}
	// Under an unencrypted parent, --password-file is for the new key.
	pw := filepath.Join(work, "pw.txt")
	os.WriteFile(pw, []byte("sub secret\r\n"), 0o600)
	caOK(t, "pki", "ca", "create", "--parent", filepath.Join(dir, "server-ca"), "--name", "sub", "--password-file", pw)
	if _, err := pki.LoadPrivateKey(filepath.Join(dir, "sub", "ca.key"), []byte("sub secret")); err != nil {
		t.Errorf("sub-CA key with --password-file: %v", err)
	}
	// --force replaces it.
	caOK(t, "pki", "init", "--dir", dir, "--no-password", "--force")
	caFail(t, []string{"password required", "--password-file"}, "pki", "init", "--dir", filepath.Join(work, "q"))
	caFail(t, []string{"contradict"}, "pki", "init", "--dir", filepath.Join(work, "q"), "--no-password", "--password-file", "x")
	caFail(t, []string{"unknown key type"}, "pki", "init", "--dir", filepath.Join(work, "q"), "--no-password", "--key-type", "dsa")
	if _, err := os.Stat(filepath.Join(work, "q")); !os.IsNotExist(err) {
		t.Errorf("failed init left %s behind: %v", filepath.Join(work, "q"), err)
	}
}

func TestPKICAWrongPassword(t *testing.T) {
	work, dir, _ := caPKI(t)
	clientCA := filepath.Join(dir, "client-ca")
	bad := filepath.Join(work, "bad.txt")
	if err := os.WriteFile(bad, []byte("wrong\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(work, "out")
	before := pkitest.Snapshot(t, work)
	keyPath := filepath.Join(clientCA, "ca.key")
	caFail(t, []string{"wrong password for CA key " + keyPath}, "pki", "issue", "client", "--ca", clientCA, "--name", "alice", "--out-dir", out, "--password-file", bad)
	caFail(t, []string{"wrong password for CA key " + keyPath}, "pki", "crl", "--ca", clientCA, "--password-file", bad)
	caFail(t, []string{"wrong password for CA key " + filepath.Join(dir, "server-ca", "ca.key")},
		"pki", "ca", "create", "--parent", filepath.Join(dir, "server-ca"), "--name", "sub", "--password-file", bad)
	// No password file and no terminal: a clear error, not a hang.
	caFail(t, []string{"password required: use --password-file or run on a terminal"}, "pki", "issue", "client", "--ca", clientCA, "--name", "alice", "--out-dir", out)
	caFail(t, []string{"read password file"}, "pki", "crl", "--ca", clientCA, "--password-file", filepath.Join(work, "missing"))
	empty := filepath.Join(work, "empty.txt")
	os.WriteFile(empty, []byte("\nsecond line\n"), 0o600)
	caFail(t, []string{"first line is empty"}, "pki", "crl", "--ca", clientCA, "--password-file", empty)
	os.Remove(empty)
	pkitest.SameSnapshot(t, before, pkitest.Snapshot(t, work))
}

func TestPKICABadInput(t *testing.T) {
	work, dir, pw := caPKI(t)
	clientCA, serverCA := filepath.Join(dir, "client-ca"), filepath.Join(dir, "server-ca")
	caOK(t, "pki", "issue", "client", "--ca", clientCA, "--name", "alice", "--out-dir", work, "--password-file", pw)
	aliceCrt := filepath.Join(work, "alice.crt")

	// A broken CA directory for the corrupt-PEM case.
	broken := filepath.Join(work, "broken")
	os.Mkdir(broken, 0o700)
	data, _ := os.ReadFile(filepath.Join(clientCA, "ca.crt"))
	os.WriteFile(filepath.Join(broken, "ca.crt"), data[:len(data)-40], 0o644)

	// An expired CA: made outside twoway, laid out like a twoway CA.
	root := pkitest.NewRoot(t, "old root")
	old := root.SubWithValidity(t, "old CA", time.Now().Add(-72*time.Hour), time.Now().Add(-48*time.Hour))
	expired := filepath.Join(work, "expired")
	os.Mkdir(expired, 0o700)
	pkitest.WriteFile(t, expired, "ca.crt", pkitest.PEM(old.Cert))
	pkitest.WriteFile(t, expired, "ca.key", pkitest.KeyPEM(t, old.Key))
	pkitest.WriteFile(t, expired, "bundle.crt", pkitest.PEM(old.Chain()...))
	if err := (&authority.DB{}).Save(filepath.Join(expired, "db.json")); err != nil {
		t.Fatal(err)
	}

	before := pkitest.Snapshot(t, work)
	out := filepath.Join(work, "out")
	issue := func(ca string, extra ...string) []string {
		return append([]string{"pki", "issue", "client", "--ca", ca, "--out-dir", out, "--password-file", pw}, extra...)
	}
	caFail(t, []string{aliceCrt + " is not a CA certificate"}, issue(aliceCrt, "--name", "bob")...)
	caFail(t, []string{`invalid group "bad group!"`}, issue(clientCA, "--name", "bob", "--group", "bad group!")...)
	caFail(t, []string{"client ID"}, issue(clientCA, "--name", "bob/../x")...)
	caFail(t, []string{`CA "old CA" (` + expired + `) expired on ` + old.Cert.NotAfter.UTC().Format(time.DateOnly)}, issue(expired, "--name", "bob")...)
	caFail(t, []string{"ca.crt", "PEM"}, issue(broken, "--name", "bob")...)
	caFail(t, []string{"does not exist"}, issue(filepath.Join(work, "nope"), "--name", "bob")...)
	caFail(t, []string{"after its CA", "use --days"}, issue(clientCA, "--name", "bob", "--days", "4000")...)
	caFail(t, []string{"root CA"}, issue(filepath.Join(dir, "root"), "--name", "bob")...)
	caFail(t, []string{"invalid IP address"}, "pki", "issue", "server", "--ca", serverCA, "--name", "gw", "--ip", "300.1.1.1", "--password-file", pw)
	caFail(t, []string{"alice.crt", "already exists"}, "pki", "issue", "client", "--ca", clientCA, "--name", "alice", "--out-dir", work, "--password-file", pw)

	caFail(t, []string{`unknown revocation reason "stolen"`, "keyCompromise"}, "pki", "revoke", "--ca", clientCA, "--cert", aliceCrt, "--reason", "stolen")
	caFail(t, []string{"invalid serial number"}, "pki", "revoke", "--ca", clientCA, "--serial", "xyz")
	caFail(t, []string{"serial abcdef was not issued by CA"}, "pki", "revoke", "--ca", clientCA, "--serial", "0xABCDEF")
	caFail(t, []string{"exactly one of --serial and --cert"}, "pki", "revoke", "--ca", clientCA)
	caFail(t, []string{"was not issued by CA"}, "pki", "revoke", "--ca", serverCA, "--cert", aliceCrt)

	caFail(t, []string{`CA "old CA"`, "expired on"}, "pki", "ca", "create", "--parent", expired, "--name", "x", "--no-password")
	caFail(t, []string{"path length"}, "pki", "ca", "create", "--parent", serverCA, "--name", "deep", "--path-len", "1", "--password-file", pw)
	caFail(t, []string{"invalid CIDR"}, "pki", "ca", "create", "--parent", serverCA, "--name", "x", "--permit-ip", "10.0.0.0", "--password-file", pw)
	pkitest.SameSnapshot(t, before, pkitest.Snapshot(t, work))

	// --force replaces an issued certificate.
	old1, _ := os.ReadFile(aliceCrt)
	caOK(t, "pki", "issue", "client", "--ca", clientCA, "--name", "alice", "--out-dir", work, "--password-file", pw, "--force")
	if now, _ := os.ReadFile(aliceCrt); bytes.Equal(now, old1) {
		t.Error("--force did not replace alice.crt")
	}
}

func TestPKICACreate(t *testing.T) {
	work, dir, pw := caPKI(t)
	serverCA := filepath.Join(dir, "server-ca")
	out := caOK(t, "pki", "ca", "create", "--parent", serverCA, "--name", "branch", "--permit-dns", "example.com",
		"--permit-ip", "10.0.0.0/8", "--password-file", pw)
	branch := filepath.Join(dir, "branch")
	caContains(t, out, `Created CA "branch" in `+branch, "path length 0")
	c := caCerts(t, filepath.Join(branch, "ca.crt"))[0]
	if !c.IsCA || c.MaxPathLen != 0 || !c.MaxPathLenZero || !c.PermittedDNSDomainsCritical ||
		len(c.PermittedDNSDomains) != 1 || len(c.PermittedIPRanges) != 1 {
		t.Errorf("branch CA: pathlen %d/%v constraints %v %v", c.MaxPathLen, c.MaxPathLenZero, c.PermittedDNSDomains, c.PermittedIPRanges)
	}
	// Its key shares the parent's password.
	if _, err := pki.LoadPrivateKey(filepath.Join(branch, "ca.key"), []byte("correct horse")); err != nil {
		t.Errorf("branch key with the parent's password: %v", err)
	}
	caOK(t, "pki", "issue", "server", "--ca", branch, "--name", "gw.example.com", "--out-dir", work, "--password-file", pw)
	chain := caCerts(t, filepath.Join(work, "gw.example.com.crt"))
	if len(chain) != 3 {
		t.Errorf("chain of %d certificates, want leaf, branch, server CA", len(chain))
	}
	caFail(t, []string{"not permitted"}, "pki", "issue", "server", "--ca", branch, "--name", "gw.other.org", "--out-dir", work, "--password-file", pw)
	caFail(t, []string{"cannot issue sub-CAs"}, "pki", "ca", "create", "--parent", branch, "--name", "deeper", "--password-file", pw)
	// The server CA is revoked through the root.
	caOK(t, "pki", "revoke", "--ca", filepath.Join(dir, "root"), "--cert", filepath.Join(serverCA, "ca.crt"), "--reason", "caCompromise")

	// A separate password for the new key, and an unencrypted one.
	pw2 := filepath.Join(work, "pw2.txt")
	os.WriteFile(pw2, []byte("other\n"), 0o600)
	caOK(t, "pki", "ca", "create", "--parent", filepath.Join(dir, "root"), "--name", "partner", "--dir", filepath.Join(work, "partner"),
		"--path-len", "1", "--days", "30", "--password-file", pw, "--new-password-file", pw2)
	if _, err := pki.LoadPrivateKey(filepath.Join(work, "partner", "ca.key"), []byte("other")); err != nil {
		t.Errorf("partner key with its own password: %v", err)
	}
	caOK(t, "pki", "ca", "create", "--parent", filepath.Join(work, "partner"), "--name", "team", "--password-file", pw2, "--no-password")
	if enc, _ := pki.IsEncryptedKeyFile(filepath.Join(work, "team", "ca.key")); enc {
		t.Error("--no-password key is encrypted")
	}
}

func TestPKICACSRSign(t *testing.T) {
	work, dir, pw := caPKI(t)
	clientCA, serverCA := filepath.Join(dir, "client-ca"), filepath.Join(dir, "server-ca")
	kpw := filepath.Join(work, "kpw.txt")
	os.WriteFile(kpw, []byte("keypass\n"), 0o600)

	out := caOK(t, "pki", "csr", "--name", "carol", "--group", "eng", "--email", "carol@example.com", "--out-dir", work, "--key-password-file", kpw)
	caContains(t, out, filepath.Join(work, "carol.key"), "carol.csr")
	if enc, _ := pki.IsEncryptedKeyFile(filepath.Join(work, "carol.key")); !enc {
		t.Error("--key-password-file did not encrypt the key")
	}
	fi, _ := os.Stat(filepath.Join(work, "carol.key"))
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v", fi.Mode().Perm())
	}
	csrFile := filepath.Join(work, "carol.csr")
	// No --name and no terminal: refused, saying what the CSR asks for.
	caFail(t, []string{"neither asserted", `"carol"`, "eng"}, "pki", "sign", "--ca", clientCA, "--csr", csrFile, "client", "--password-file", pw)
	caFail(t, []string{`asks for name "carol", not "ceo"`}, "pki", "sign", "--ca", clientCA, "--csr", csrFile, "client", "--name", "ceo", "--password-file", pw)
	caOK(t, "pki", "sign", "--ca", clientCA, "--csr", csrFile, "client", "--name", "carol", "--group", "eng", "--password-file", pw)
	crt := filepath.Join(work, "carol.crt")
	certs := caCerts(t, crt)
	if certs[0].Subject.CommonName != "carol" || certs[0].Subject.OrganizationalUnit[0] != "eng" || certs[0].ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Errorf("signed: %s %v", certs[0].Subject, certs[0].ExtKeyUsage)
	}
	if _, err := pki.LoadKeyPair(crt, filepath.Join(work, "carol.key"), []byte("keypass")); err != nil {
		t.Errorf("certificate and CSR key: %v", err)
	}

	before := pkitest.Snapshot(t, work)
	caFail(t, []string{"carol.crt", "already exists"}, "pki", "sign", "--ca", clientCA, "--csr", csrFile, "client", "--name", "carol", "--password-file", pw)
	caFail(t, []string{"host names"}, "pki", "sign", "--ca", serverCA, "--csr", csrFile, "server", "--name", "carol", "--group", "eng", "--out", filepath.Join(work, "x.crt"), "--password-file", pw)
	caFail(t, []string{"server or client"}, "pki", "sign", "--ca", clientCA, "--csr", csrFile, "peer")
	// A tampered request: flip a bit of the signature.
	data, _ := os.ReadFile(csrFile)
	b, _ := pem.Decode(data)
	b.Bytes[len(b.Bytes)-3] ^= 0x01
	bad := filepath.Join(work, "bad.csr")
	os.WriteFile(bad, pem.EncodeToMemory(b), 0o644)
	caFail(t, []string{bad, "signature does not verify"}, "pki", "sign", "--ca", clientCA, "--csr", bad, "client", "--name", "carol", "--password-file", pw)
	trunc := filepath.Join(work, "trunc.csr")
	os.WriteFile(trunc, data[:len(data)/2], 0o644)
	caFail(t, []string{trunc}, "pki", "sign", "--ca", clientCA, "--csr", trunc, "client", "--password-file", pw)
	caFail(t, []string{`invalid group "x y"`}, "pki", "csr", "--name", "dave", "--group", "x y", "--out-dir", work)
	os.Remove(bad)
	os.Remove(trunc)
	pkitest.SameSnapshot(t, before, pkitest.Snapshot(t, work))

	caOK(t, "pki", "csr", "--name", "gw.example.com", "--dns", "vpn.example.com", "--out-dir", work)
	caOK(t, "pki", "sign", "--ca", serverCA, "--csr", filepath.Join(work, "gw.example.com.csr"), "server", "--name", "gw.example.com", "--days", "90",
		"--out", filepath.Join(work, "gw.pem"), "--password-file", pw)
	gw := caCerts(t, filepath.Join(work, "gw.pem"))
	if gw[0].ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || strings.Join(gw[0].DNSNames, ",") != "gw.example.com,vpn.example.com" {
		t.Errorf("server from CSR: %v %v", gw[0].ExtKeyUsage, gw[0].DNSNames)
	}
}

// caOpenSSL returns a runner for the openssl binary, skipping the test
// when it is not installed.
func caOpenSSL(t *testing.T) func(args ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not in PATH")
	}
	return func(args ...string) (string, error) {
		out, err := exec.Command("openssl", args...).CombinedOutput()
		return string(out), err
	}
}

func TestPKICAOpenSSL(t *testing.T) {
	openssl := caOpenSSL(t)
	work, dir, pw := caPKI(t)
	clientCA, serverCA := filepath.Join(dir, "client-ca"), filepath.Join(dir, "server-ca")
	clientBundle, serverBundle := filepath.Join(clientCA, "bundle.crt"), filepath.Join(serverCA, "bundle.crt")
	caOK(t, "pki", "issue", "client", "--ca", clientCA, "--name", "alice", "--group", "eng", "--out-dir", work, "--password-file", pw)
	caOK(t, "pki", "issue", "server", "--ca", serverCA, "--name", "gw.example.com", "--out-dir", work, "--password-file", pw)
	alice, gw := filepath.Join(work, "alice.crt"), filepath.Join(work, "gw.example.com.crt")

	verify := func(bundle, purpose, cert string, wantOK bool) {
		t.Helper()
		out, err := openssl("verify", "-CAfile", bundle, "-purpose", purpose, cert)
		if (err == nil) != wantOK || (wantOK && !strings.Contains(out, ": OK")) {
			t.Errorf("openssl verify -CAfile %s -purpose %s %s: ok=%v, want %v\n%s",
				filepath.Base(filepath.Dir(bundle)), purpose, filepath.Base(cert), err == nil, wantOK, out)
		}
	}
	verify(clientBundle, "sslclient", alice, true)
	verify(clientBundle, "sslserver", alice, false)
	verify(serverBundle, "sslserver", gw, true)
	verify(serverBundle, "sslclient", gw, false)

	// The CRL: revoked serial, reason and number as openssl reads them.
	caOK(t, "pki", "revoke", "--ca", clientCA, "--cert", alice, "--reason", "keyCompromise")
	caOK(t, "pki", "crl", "--ca", clientCA, "--password-file", pw)
	caOK(t, "pki", "crl", "--ca", clientCA, "--password-file", pw)
	crlFile := filepath.Join(clientCA, "crl.pem")
	out, err := openssl("crl", "-in", crlFile, "-noout", "-text")
	if err != nil {
		t.Fatalf("openssl crl: %v\n%s", err, out)
	}
	// openssl prints whole bytes: an odd number of hex digits gets a
	// leading 0 (1 serial in 16).
	serial := fmt.Sprintf("%X", caCerts(t, alice)[0].SerialNumber.Bytes())
	if !strings.Contains(out, "Serial Number: "+serial) || !strings.Contains(out, "Key Compromise") {
		t.Errorf("openssl crl lacks serial %s / reason:\n%s", serial, out)
	}
	if !regexp.MustCompile(`X509v3 CRL Number:\s*\n\s*2\n`).MatchString(out) {
		t.Errorf("openssl crl lacks CRL number 2:\n%s", out)
	}
	out, err = openssl("verify", "-crl_check", "-CRLfile", crlFile, "-CAfile", clientBundle, "-purpose", "sslclient", alice)
	if err == nil || !strings.Contains(out, "revoked") {
		t.Errorf("openssl verify -crl_check of a revoked cert: %v\n%s", err, out)
	}

	// The encrypted CA key is standard PKCS#8 that openssl reads with the
	// password and refuses without it.
	key := filepath.Join(clientCA, "ca.key")
	if out, err := openssl("pkey", "-in", key, "-passin", "file:"+pw, "-noout"); err != nil {
		t.Errorf("openssl pkey with the password: %v\n%s", err, out)
	}
	badPW := filepath.Join(work, "bad.txt")
	os.WriteFile(badPW, []byte("wrong\n"), 0o600)
	if out, err := openssl("pkey", "-in", key, "-passin", "file:"+badPW, "-noout"); err == nil {
		t.Errorf("openssl pkey with a wrong password succeeded\n%s", out)
	}

	// A sub-CA chain verifies with the leaf's presented intermediates.
	caOK(t, "pki", "ca", "create", "--parent", serverCA, "--name", "branch", "--permit-dns", "example.com", "--password-file", pw)
	caOK(t, "pki", "issue", "server", "--ca", filepath.Join(dir, "branch"), "--name", "b.example.com", "--out-dir", work, "--password-file", pw)
	leaf := filepath.Join(work, "b.example.com.crt")
	if out, err := openssl("verify", "-CAfile", serverBundle, "-untrusted", leaf, "-purpose", "sslserver", leaf); err != nil {
		t.Errorf("openssl verify through the sub-CA: %v\n%s", err, out)
	}
}

// TestInitWritesCRLs checks that init leaves each CA an empty CRL, so that
// the example server configuration, which names the client CA's, loads
// right after init.
func TestInitWritesCRLs(t *testing.T) {
	work, dir, _ := caPKI(t)
	for _, sub := range []string{authority.RootDir, authority.ServerCADir, authority.ClientCADir} {
		crl, err := pki.LoadCRL(filepath.Join(dir, sub, authority.CRLFile))
		if err != nil {
			t.Fatal(err)
		}
		ca := caCerts(t, filepath.Join(dir, sub, authority.CACertFile))[0]
		if err := crl.CheckSignatureFrom(ca); err != nil || crl.Number.Sign() != 0 || len(crl.RevokedCertificateEntries) != 0 {
			t.Errorf("%s CRL: number %v, %d entries, signature %v", sub, crl.Number, len(crl.RevokedCertificateEntries), err)
		}
	}
	caOK(t, "pki", "issue", "server", "--ca", filepath.Join(dir, authority.ServerCADir), "--name", "gw.example.com",
		"--out-dir", work, "--password-file", filepath.Join(work, "pw.txt"))
	conf := strings.NewReplacer(`"gateway.crt"`, `"gw.example.com.crt"`, `"gateway.key"`, `"gw.example.com.key"`).
		Replace(caOK(t, "config", "example", "server"))
	if !strings.Contains(conf, `crls = ["pki/client-ca/crl.pem"]`) {
		t.Fatalf("the example no longer names the client CA's CRL:\n%s", conf)
	}
	path := filepath.Join(work, "server.toml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	caContains(t, caOK(t, "config", "check", "-c", path), "OK (server")
}
