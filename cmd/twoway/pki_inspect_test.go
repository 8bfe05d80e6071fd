package main

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/twoway/twoway/authority"
	"github.com/twoway/twoway/inspect"
	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/pki/pkitest"
)

// twowayRun runs the CLI in-process and returns what it printed and the
// error main would report.
func twowayRun(t *testing.T, args ...string) (stdout, stderr string, err error) {
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

// wantLines fails unless every pattern (a regexp) matches some of out.
func wantLines(t *testing.T, out string, patterns ...string) {
	t.Helper()
	for _, p := range patterns {
		if !regexp.MustCompile(p).MatchString(out) {
			t.Errorf("output lacks %q:\n%s", p, out)
		}
	}
}

// wantFailure fails unless err is a one-line error containing every part.
func wantFailure(t *testing.T, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("command succeeded; want an error containing %q", parts)
	}
	msg := err.Error()
	if strings.Contains(msg, "\n") {
		t.Errorf("error is not one line: %q", msg)
	}
	for _, p := range parts {
		if !strings.Contains(msg, p) {
			t.Errorf("error %q does not contain %q", msg, p)
		}
	}
}

func TestPKIInspectCertificates(t *testing.T) {
	dir := t.TempDir()
	h := pkitest.NewHierarchy(t)
	alice := h.ClientCA.Client(t, "alice", "eng", "ops")
	chainFile := pkitest.WriteFile(t, dir, "alice.crt", pkitest.PEM(alice.Certs()...))

	out, _, err := twowayRun(t, "pki", "inspect", chainFile)
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, out,
		`alice\.crt: certificate chain \(PEM\)`,
		`Certificate 1 of 2`,
		`Subject:\s+CN=alice,OU=eng\+OU=ops`,
		`Groups:\s+eng, ops`,
		`Issuer:\s+CN=test client CA,O=twoway test`,
		`Serial:\s+`+alice.Cert.SerialNumber.Text(16)+`\n`,
		`Validity:\s+valid, expires in less than a day`,
		`Key:\s+ECDSA P-256`,
		`Extended key usage:\s+clientAuth`,
		`Key usage:\s+digitalSignature`,
		`CA:\s+no`,
		`CA:\s+yes, no path length limit`,
		`Key usage:\s+keyCertSign, cRLSign`,
		`SHA-256 fingerprint:\s+`+pki.Fingerprint(alice.Cert),
		`SPKI pin:\s+`+regexp.QuoteMeta(pki.SPKIPin(alice.Cert)),
	)

	out, _, err = twowayRun(t, "pki", "inspect", "--json", chainFile)
	if err != nil {
		t.Fatal(err)
	}
	var r inspect.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("JSON output: %v\n%s", err, out)
	}
	if r.Type != inspect.TypeCertificateChain || len(r.Certificates) != 2 || r.Certificates[0].Serial != alice.Cert.SerialNumber.Text(16) ||
		r.Certificates[0].Status != pki.StatusValid || !r.Certificates[1].IsCA {
		t.Errorf("JSON report: %s", out)
	}

	expired := h.ClientCA.Issue(t, pkitest.LeafOptions{CommonName: "old",
		NotBefore: time.Now().Add(-40 * 24 * time.Hour), NotAfter: time.Now().Add(-3*24*time.Hour - time.Hour)})
	future := h.ClientCA.Issue(t, pkitest.LeafOptions{CommonName: "new",
		NotBefore: time.Now().Add(2*24*time.Hour + time.Hour), NotAfter: time.Now().Add(9 * 24 * time.Hour)})
	out, _, err = twowayRun(t, "pki", "inspect", pkitest.WriteFile(t, dir, "old.crt", pkitest.PEM(expired.Cert)))
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, out, `Validity:\s+EXPIRED 3 days ago`)
	out, _, err = twowayRun(t, "pki", "inspect", pkitest.WriteFile(t, dir, "new.crt", pkitest.PEM(future.Cert)))
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, out, `Validity:\s+NOT YET VALID \(starts in 2 days\)`)

	// DER works as well as PEM.
	out, _, err = twowayRun(t, "pki", "inspect", pkitest.WriteFile(t, dir, "alice.der", alice.Cert.Raw))
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, out, `alice\.der: certificate \(DER\)`, `Subject:\s+CN=alice`)
}

func TestPKIInspectCRL(t *testing.T) {
	dir := t.TempDir()
	h := pkitest.NewHierarchy(t)
	bob := h.ClientCA.Client(t, "bob")
	crl := h.ClientCA.CRL(t, 5, bob.Cert)
	out, _, err := twowayRun(t, "pki", "inspect", pkitest.WriteFile(t, dir, "crl.pem", pkitest.CRLPEM(crl)))
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, out,
		`crl\.pem: CRL \(PEM\)`,
		`Issuer:\s+CN=test client CA`,
		`CRL number:\s+5\n`,
		`Revoked:\s+1 certificate`,
		`serial `+bob.Cert.SerialNumber.Text(16)+`  revoked \d{4}-\d\d-\d\d .*reason keyCompromise`,
	)
}

func TestPKIInspectKeys(t *testing.T) {
	dir := t.TempDir()
	key, err := authority.GenerateKey(authority.KeyECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := authority.MarshalPrivateKeyPEM(key, []byte("key pass"))
	if err != nil {
		t.Fatal(err)
	}
	encFile := pkitest.WriteFile(t, dir, "enc.key", enc)
	plainFile := pkitest.WriteFile(t, dir, "plain.key", pkitest.KeyPEM(t, key))
	goodPW := pkitest.WriteFile(t, dir, "good.pw", []byte("key pass\n"))
	badPW := pkitest.WriteFile(t, dir, "bad.pw", []byte("nope\n"))

	out, _, err := twowayRun(t, "pki", "inspect", encFile)
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, out, `enc\.key: private key \(PEM\)`, `Key:\s+unknown until decrypted`, `Encrypted:\s+yes, PBES2, PBKDF2-HMAC-SHA256 \(\d+ iterations\), AES-256-CBC`)

	out, _, err = twowayRun(t, "pki", "inspect", "--password-file", goodPW, encFile)
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, out, `Key:\s+ECDSA P-256`, `Encrypted:\s+yes`)

	_, _, err = twowayRun(t, "pki", "inspect", "--password-file", badPW, encFile)
	wantFailure(t, err, "enc.key", "wrong password")

	out, _, err = twowayRun(t, "pki", "inspect", plainFile)
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, out, `Key:\s+ECDSA P-256`, `Encrypted:\s+NO`)
	// The key itself never appears.
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	if body := string(pkitest.KeyPEM(t, key)); strings.Contains(out, strings.Split(body, "\n")[1]) || bytes.Contains([]byte(out), der) {
		t.Errorf("inspect printed key material:\n%s", out)
	}
}

func TestPKIInspectPKCS12(t *testing.T) {
	dir := t.TempDir()
	h := pkitest.NewHierarchy(t)
	carol := h.ClientCA.Client(t, "carol", "eng")
	der, err := authority.ExportPKCS12(carol.Key, carol.Certs(), []byte("p12 pass"), authority.PKCS12Modern)
	if err != nil {
		t.Fatal(err)
	}
	p12 := pkitest.WriteFile(t, dir, "carol.p12", der)

	_, _, err = twowayRun(t, "pki", "inspect", p12)
	wantFailure(t, err, "carol.p12", "password")

	_, _, err = twowayRun(t, "pki", "inspect", "--password-file", pkitest.WriteFile(t, dir, "bad.pw", []byte("x\n")), p12)
	wantFailure(t, err, "carol.p12", "wrong password")

	out, _, err := twowayRun(t, "pki", "inspect", "--password-file", pkitest.WriteFile(t, dir, "good.pw", []byte("p12 pass\n")), p12)
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, out,
		`carol\.p12: PKCS#12 \(DER\)`,
		`Certificates:\s+PBES2, PBKDF2-HMAC-SHA256 \(2048 iterations\), AES-256-CBC`,
		`Certificate 1 of 2`,
		`Subject:\s+CN=carol,OU=eng`,
		`Private key`,
		`Format:\s+PKCS#12`,
		`Matches:\s+CN=carol,OU=eng`,
	)
}

func TestPKIInspectBadInput(t *testing.T) {
	dir := t.TempDir()
	h := pkitest.NewHierarchy(t)
	full := pkitest.PEM(h.ClientCA.Chain()...)
	for _, tc := range []struct {
		name  string
		data  []byte
		parts []string
	}{
		{"truncated.pem", full[:len(full)-30], []string{"truncated.pem", "truncated or corrupt PEM"}},
		{"garbage.bin", []byte{0x30, 0x82, 0x01, 0x00, 0x02}, []string{"garbage.bin", "not a certificate"}},
		{"notes.txt", []byte("just some notes\n"), []string{"notes.txt", "not a certificate"}},
		{"empty.pem", nil, []string{"empty.pem", "file is empty"}},
	} {
		_, _, err := twowayRun(t, "pki", "inspect", pkitest.WriteFile(t, dir, tc.name, tc.data))
		wantFailure(t, err, tc.parts...)
	}
	_, _, err := twowayRun(t, "pki", "inspect", filepath.Join(dir, "missing.crt"))
	wantFailure(t, err, "missing.crt", "no such file")
}

func TestPKIVerify(t *testing.T) {
	dir := t.TempDir()
	h := pkitest.NewHierarchy(t)
	write := func(name string, data []byte) string { return pkitest.WriteFile(t, dir, name, data) }

	clientBundle := write("client-bundle.crt", pkitest.PEM(h.ClientBundle()...))
	serverBundle := write("server-bundle.crt", pkitest.PEM(h.ServerBundle()...))
	alice := h.ClientCA.Client(t, "alice", "eng", "ops")
	aliceFile := write("alice.crt", pkitest.PEM(alice.Certs()...))
	gw := h.ServerCA.Server(t, "gw.test")
	gwFile := write("gw.crt", pkitest.PEM(gw.Certs()...))
	// Same root, wrong issuing CA: the bundle's client CA must be in the path.
	sneakyFile := write("sneaky.crt", pkitest.PEM(h.ServerCA.Client(t, "sneaky").Certs()...))
	revoked := h.ClientCA.Client(t, "mallory")
	revokedFile := write("mallory.crt", pkitest.PEM(revoked.Certs()...))
	crlFile := write("crl.pem", pkitest.CRLPEM(h.ClientCA.CRL(t, 2, revoked.Cert)))
	expired := h.ClientCA.Issue(t, pkitest.LeafOptions{CommonName: "old", EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	expiredFile := write("old.crt", pkitest.PEM(expired.Certs()...))
	shortCA := h.Root.SubWithValidity(t, "short-lived CA", time.Now().Add(-time.Hour), time.Now().Add(2*time.Hour))
	shortBundle := write("short-bundle.crt", pkitest.PEM(shortCA.Chain()...))
	shortFile := write("short.crt", pkitest.PEM(shortCA.Client(t, "frank").Certs()...))
	stranger := pkitest.NewRoot(t, "stranger root").Client(t, "eve")
	strangerFile := write("eve.crt", pkitest.PEM(stranger.Certs()...))

	for _, tc := range []struct {
		name  string
		args  []string
		fail  []string // empty: must succeed
		lines []string
	}{
		{"client ok", []string{"--ca-bundle", clientBundle, "--crl", crlFile, "--usage", "client", aliceFile}, nil,
			[]string{`^OK\n`, `Name:\s+alice`, `Groups:\s+eng, ops`, `Serial:\s+` + alice.Cert.SerialNumber.Text(16), `Expires:\s+\d{4}-`}},
		{"CA expires before the leaf", []string{"--ca-bundle", shortBundle, "--usage", "client", shortFile}, nil,
			[]string{`^OK\n`, `Chain expires:\s+` + shortCA.Cert.NotAfter.UTC().Format("2006-01-02 15:04:05")}},
		{"client as server", []string{"--ca-bundle", clientBundle, "--usage", "server", aliceFile},
			[]string{"verification failed: usage: ", "serverAuth"}, nil},
		{"server ok", []string{"--ca-bundle", serverBundle, "--usage", "server", "--name", "gw.test", gwFile}, nil,
			[]string{`^OK\n`, `Name:\s+gw\.test`}},
		{"server wrong name", []string{"--ca-bundle", serverBundle, "--usage", "server", "--name", "other.test", gwFile},
			[]string{"verification failed: name: ", "other.test"}, nil},
		{"client cert from the server CA", []string{"--ca-bundle", clientBundle, "--usage", "client", sneakyFile},
			[]string{"verification failed: chain: ", "test client CA"}, nil},
		{"revoked", []string{"--ca-bundle", clientBundle, "--crl", crlFile, "--usage", "client", revokedFile},
			[]string{"verification failed: revocation: ", "revoked"}, nil},
		{"revoked but no CRL given", []string{"--ca-bundle", clientBundle, "--usage", "client", revokedFile}, nil,
			[]string{`^OK\n`, `Name:\s+mallory`}},
		{"expired", []string{"--ca-bundle", clientBundle, "--usage", "client", expiredFile},
			[]string{"verification failed: validity: ", "expired"}, nil},
		{"wrong CA", []string{"--ca-bundle", clientBundle, "--usage", "client", strangerFile},
			[]string{"verification failed: chain: ", "stranger root"}, nil},
		{"pin ok", []string{"--ca-bundle", clientBundle, "--usage", "client", "--pin", "AAAA", "--pin", pki.SPKIPin(h.ClientCA.Cert), aliceFile}, nil,
			[]string{`^OK\n`}},
		{"pin mismatch", []string{"--ca-bundle", clientBundle, "--usage", "client", "--pin", pki.SPKIPin(h.ServerCA.Cert), aliceFile},
			[]string{"verification failed: pin: "}, nil},
		{"bad usage", []string{"--ca-bundle", clientBundle, "--usage", "both", aliceFile},
			[]string{"--usage must be client or server"}, nil},
		{"missing bundle", []string{"--ca-bundle", filepath.Join(dir, "nope.crt"), "--usage", "client", aliceFile},
			[]string{"nope.crt"}, nil},
		{"missing cert", []string{"--ca-bundle", clientBundle, "--usage", "client", filepath.Join(dir, "nobody.crt")},
			[]string{"nobody.crt"}, nil},
		{"bad CRL", []string{"--ca-bundle", clientBundle, "--crl", aliceFile, "--usage", "client", aliceFile},
			[]string{"CRL", "alice.crt"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := twowayRun(t, append([]string{"pki", "verify"}, tc.args...)...)
			if len(tc.fail) > 0 {
				wantFailure(t, err, tc.fail...)
				if strings.Contains(out, "OK") {
					t.Errorf("printed OK on failure: %s", out)
				}
				return
			}
			if err != nil {
				t.Fatalf("verify failed: %v", err)
			}
			wantLines(t, out, tc.lines...)
		})
	}
}

func TestPKIExportP12(t *testing.T) {
	dir := t.TempDir()
	h := pkitest.NewHierarchy(t)
	dave := h.ClientCA.Client(t, "dave", "eng")
	write := func(name string, data []byte) string { return pkitest.WriteFile(t, dir, name, data) }
	certFile := write("dave.crt", pkitest.PEM(dave.Certs()...)) // leaf + client CA
	rootFile := write("root.crt", pkitest.PEM(h.Root.Cert))
	plainKey := write("dave.key", pkitest.KeyPEM(t, dave.Key))
	encPEM, err := authority.MarshalPrivateKeyPEM(dave.Key, []byte("key pass"))
	if err != nil {
		t.Fatal(err)
	}
	encKey := write("dave-enc.key", encPEM)
	pw := write("p12.pw", []byte("p12 pass\n"))
	keyPW := write("key.pw", []byte("key pass\n"))
	badKeyPW := write("badkey.pw", []byte("nope\n"))
	emptyPW := write("empty.pw", []byte("\n"))
	otherKey := write("other.key", pkitest.KeyPEM(t, h.ClientCA.Client(t, "other").Key))

	out := filepath.Join(dir, "dave.p12")
	stdout, _, err := twowayRun(t, "pki", "export-p12", "--cert", certFile, "--key", plainKey, "--chain", rootFile, "--out", out, "--password-file", pw)
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, stdout, `wrote .*dave\.p12 \(PKCS#12, AES-256\): "CN=dave,OU=eng" and 2 CA certificate`)
	st, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	data, _ := os.ReadFile(out)
	key, leaf, cas, err := pkcs12.DecodeChain(data, "p12 pass")
	if err != nil {
		t.Fatal(err)
	}
	if !leaf.Equal(dave.Cert) || len(cas) != 2 || !cas[0].Equal(h.ClientCA.Cert) || !cas[1].Equal(h.Root.Cert) {
		t.Errorf("PKCS#12 holds the wrong certificates (%d CA certs)", len(cas))
	}
	if k, ok := key.(crypto.Signer); !ok || pki.KeyMatches(dave.Cert, k) != nil {
		t.Errorf("PKCS#12 key (%T) does not match the certificate", key)
	}

	// An existing file is kept unless --force.
	_, _, err = twowayRun(t, "pki", "export-p12", "--cert", certFile, "--key", plainKey, "--out", out, "--password-file", pw)
	wantFailure(t, err, "dave.p12", "already exists")
	if after, _ := os.ReadFile(out); !bytes.Equal(after, data) {
		t.Errorf("existing file was changed without --force")
	}
	_, _, err = twowayRun(t, "pki", "export-p12", "--cert", certFile, "--key", encKey, "--key-password-file", keyPW,
		"--out", out, "--password-file", pw, "--legacy", "--force")
	if err != nil {
		t.Fatalf("--force with encrypted key: %v", err)
	}
	data, _ = os.ReadFile(out)
	r, err := inspect.Inspect(data, func() ([]byte, error) { return []byte("p12 pass"), nil })
	if err != nil {
		t.Fatal(err)
	}
	if !r.PKCS12.Legacy || r.PKCS12.CertEncryption != "PBE-SHA1-RC2-40 (2048 iterations)" || len(r.Certificates) != 2 {
		t.Errorf("--legacy output: %+v, %d certificates", r.PKCS12, len(r.Certificates))
	}

	newOut := func() string { return filepath.Join(t.TempDir(), "x.p12") }
	for _, tc := range []struct {
		name  string
		args  []string
		parts []string
	}{
		{"wrong key password", []string{"--cert", certFile, "--key", encKey, "--key-password-file", badKeyPW, "--password-file", pw}, []string{"dave-enc.key", "wrong password"}},
		{"encrypted key without password", []string{"--cert", certFile, "--key", encKey, "--password-file", pw}, []string{"password required"}},
		{"empty password", []string{"--cert", certFile, "--key", plainKey, "--password-file", emptyPW}, []string{"password"}},
		{"key mismatch", []string{"--cert", certFile, "--key", otherKey, "--password-file", pw}, []string{"other.key", "dave.crt", "does not match"}},
		{"missing cert", []string{"--cert", filepath.Join(dir, "none.crt"), "--key", plainKey, "--password-file", pw}, []string{"none.crt"}},
		{"key is not a key", []string{"--cert", certFile, "--key", certFile, "--password-file", pw}, []string{"dave.crt", "private key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := newOut()
			_, _, err := twowayRun(t, append([]string{"pki", "export-p12", "--out", o}, tc.args...)...)
			wantFailure(t, err, tc.parts...)
			if _, err := os.Stat(o); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("output written despite the error")
			}
		})
	}
}
