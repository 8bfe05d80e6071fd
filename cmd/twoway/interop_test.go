package main

// Interoperability with the openssl command line tool, in both directions:
// openssl reads what twoway writes (PKCS#12, encrypted keys), and twoway
// inspects and verifies what openssl makes (a root, an intermediate with
// name constraints, client, server, expired and revoked certificates, a
// CRL, a CSR, PKCS#12 files and encrypted keys). Skipped when openssl is
// not installed.

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twoway/twoway/authority"
	"github.com/twoway/twoway/inspect"
	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/pki/pkitest"
)

// opensslTool runs openssl in a scratch directory with a minimal
// configuration, so that the system's openssl.cnf cannot change results.
type opensslTool struct {
	t     *testing.T
	dir   string
	env   []string
	major int  // OpenSSL major version; 0 for LibreSSL
	libre bool // LibreSSL has no -legacy and different defaults
}

func newOpenSSL(t *testing.T) *opensslTool {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not found in PATH; skipping openssl interoperability test")
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "openssl-min.cnf")
	if err := os.WriteFile(conf, []byte("[req]\ndistinguished_name = req_dn\n[req_dn]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o := &opensslTool{t: t, dir: dir, env: append(os.Environ(), "OPENSSL_CONF="+conf)}
	v := o.run("version")
	t.Logf("using %s", strings.TrimSpace(v))
	if strings.HasPrefix(v, "LibreSSL") {
		o.libre = true
	} else if m := regexp.MustCompile(`^OpenSSL (\d+)\.`).FindStringSubmatch(v); m != nil {
		o.major, _ = strconv.Atoi(m[1])
	}
	return o
}

// try runs openssl and returns its combined output and error.
func (o *opensslTool) try(args ...string) (string, error) {
	cmd := exec.Command("openssl", args...)
	cmd.Dir = o.dir
	cmd.Env = o.env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// run runs openssl and fails the test if it fails.
func (o *opensslTool) run(args ...string) string {
	o.t.Helper()
	out, err := o.try(args...)
	if err != nil {
		o.t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (o *opensslTool) path(name string) string { return filepath.Join(o.dir, name) }

func (o *opensslTool) write(name, content string) string {
	o.t.Helper()
	p := o.path(name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		o.t.Fatal(err)
	}
	return p
}

func (o *opensslTool) read(name string) []byte {
	o.t.Helper()
	b, err := os.ReadFile(o.path(name))
	if err != nil {
		o.t.Fatal(err)
	}
	return b
}

// legacyFlag is what openssl needs to read RC2-encrypted PKCS#12 files:
// OpenSSL 3 moved RC2 into the legacy provider.
func (o *opensslTool) legacyFlag() []string {
	if o.major >= 3 {
		return []string{"-legacy"}
	}
	return nil
}

func TestInteropOpenSSLReadsTwowayPKCS12(t *testing.T) {
	o := newOpenSSL(t)
	h := pkitest.NewHierarchy(t)
	dave := h.ClientCA.Client(t, "dave", "eng")
	certFile := o.write("dave.crt", string(pkitest.PEM(dave.Certs()...)))
	rootFile := o.write("root.crt", string(pkitest.PEM(h.Root.Cert)))
	keyFile := o.write("dave.key", string(pkitest.KeyPEM(t, dave.Key)))
	pwFile := o.write("p12.pw", "correct horse\n")
	o.write("wrong.pw", "battery staple\n")

	for _, tc := range []struct {
		name   string
		legacy bool
		info   []string // what openssl -info must report
	}{
		{"modern", false, []string{"AES-256-CBC", "MAC: sha256"}},
		{"legacy", true, []string{"pbeWithSHA1And40BitRC2-CBC", "pbeWithSHA1And3-KeyTripleDES-CBC", "MAC: sha1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := o.path(tc.name + ".p12")
			args := []string{"pki", "export-p12", "--cert", certFile, "--key", keyFile, "--chain", rootFile, "--out", out, "--password-file", pwFile}
			if tc.legacy {
				args = append(args, "--legacy")
			}
			if _, _, err := twowayRun(t, args...); err != nil {
				t.Fatal(err)
			}
			// The modern file must open without -legacy.
			base := []string{"pkcs12", "-in", out}
			if tc.legacy {
				base = append(base, o.legacyFlag()...)
			}

			certsOut := o.run(append(base, "-passin", "file:p12.pw", "-nokeys")...)
			certs, err := pki.ParseCertificatesPEM([]byte(certsOut))
			if err != nil {
				t.Fatalf("openssl -nokeys output: %v\n%s", err, certsOut)
			}
			want := []*x509.Certificate{dave.Cert, h.ClientCA.Cert, h.Root.Cert}
			for _, w := range want {
				if !slices.ContainsFunc(certs, w.Equal) {
					t.Errorf("openssl did not find %q in the PKCS#12 file", w.Subject.CommonName)
				}
			}
			if len(certs) != len(want) {
				t.Errorf("openssl found %d certificates, want %d", len(certs), len(want))
			}

			keyOut := o.run(append(base, "-passin", "file:p12.pw", "-nodes", "-nocerts")...)
			key, err := pki.ParsePrivateKeyPEM([]byte(keyOut), nil)
			if err != nil {
				t.Fatalf("key from openssl -nodes: %v", err)
			}
			if err := pki.KeyMatches(dave.Cert, key); err != nil {
				t.Errorf("openssl extracted a key that does not match the certificate")
			}

			info := o.run(append(base, "-passin", "file:p12.pw", "-info", "-noout")...)
			for _, s := range tc.info {
				if !strings.Contains(info, s) {
					t.Errorf("openssl -info lacks %q:\n%s", s, info)
				}
			}
			if out, err := o.try(append(base, "-passin", "file:wrong.pw", "-nokeys")...); err == nil {
				t.Errorf("openssl opened the file with the wrong password:\n%s", out)
			}
		})
	}
}

func TestInteropOpenSSLReadsTwowayKeys(t *testing.T) {
	o := newOpenSSL(t)
	o.write("key.pw", "key pass\n")
	o.write("wrong.pw", "nope\n")
	for _, kt := range []authority.KeyType{authority.KeyECDSAP256, authority.KeyEd25519} {
		key, err := authority.GenerateKey(kt)
		if err != nil {
			t.Fatal(err)
		}
		enc, err := authority.MarshalPrivateKeyPEM(key, []byte("key pass"))
		if err != nil {
			t.Fatal(err)
		}
		name := string(kt) + ".key"
		o.write(name, string(enc))
		pubOut := o.run("pkey", "-in", name, "-passin", "file:key.pw", "-pubout")
		assertSamePublicKey(t, pubOut, key)
		if out, err := o.try("pkey", "-in", name, "-passin", "file:wrong.pw", "-noout"); err == nil {
			t.Errorf("%s: openssl accepted the wrong password:\n%s", kt, out)
		}
	}
}

func assertSamePublicKey(t *testing.T, pemOut string, key crypto.Signer) {
	t.Helper()
	b, _ := pem.Decode([]byte(pemOut))
	if b == nil || b.Type != "PUBLIC KEY" {
		t.Fatalf("no public key in openssl output:\n%s", pemOut)
	}
	want, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	if string(b.Bytes) != string(want) {
		t.Errorf("openssl decrypted a different key")
	}
}

// opensslCAConfig drives `openssl ca` for the intermediate of the hierarchy
// buildHierarchy makes entirely with openssl.
const opensslCAConfig = `[ca]
default_ca = int
[int]
dir = .
database = index.txt
new_certs_dir = issued
certificate = int.crt
private_key = int.key
serial = serial
crlnumber = crlnumber
default_md = sha256
default_days = 30
default_crl_days = 7
policy = pol
unique_subject = no
[pol]
commonName = supplied
organizationalUnitName = optional
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectAltName = email:alice@corp.test
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:gw.corp.test,IP:127.0.0.1
[outside]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:gw.evil.example
`

const opensslCAExtensions = `[v3_ca]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
nameConstraints = critical,permitted;DNS:corp.test,permitted;email:corp.test
`

// newKeyAndCSR makes an ECDSA P-256 key NAME.key and a CSR NAME.csr.
func (o *opensslTool) newKeyAndCSR(name, subj string) {
	o.t.Helper()
	o.run("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
		"-keyout", name+".key", "-out", name+".csr", "-subj", subj)
}

// caIssue signs NAME.csr with the intermediate using an extension section.
func (o *opensslTool) caIssue(name, csr, section string, extra ...string) {
	o.t.Helper()
	args := []string{"ca", "-batch", "-config", "ca.cnf", "-extensions", section, "-in", csr, "-out", name + ".crt", "-notext", "-preserveDN"}
	o.run(append(args, extra...)...)
}

// serial asks openssl for a certificate's serial, as lowercase hex
// without leading zeros (how twoway prints serials).
func (o *opensslTool) serial(file string) string {
	o.t.Helper()
	out := o.run("x509", "-in", file, "-noout", "-serial")
	s := strings.ToLower(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(out), "serial=")))
	if s = strings.TrimLeft(s, "0"); s == "" {
		s = "0"
	}
	return s
}

func (o *opensslTool) buildHierarchy() {
	o.t.Helper()
	o.run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
		"-keyout", "root.key", "-out", "root.crt", "-days", "3650", "-subj", "/O=Interop/CN=OpenSSL Root",
		"-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
	o.write("ca-ext.cnf", opensslCAExtensions)
	for _, ca := range []struct{ name, cn string }{{"int", "OpenSSL Client CA"}, {"other", "OpenSSL Other CA"}} {
		o.newKeyAndCSR(ca.name, "/O=Interop/CN="+ca.cn)
		o.run("x509", "-req", "-in", ca.name+".csr", "-CA", "root.crt", "-CAkey", "root.key", "-CAcreateserial",
			"-days", "1000", "-extfile", "ca-ext.cnf", "-extensions", "v3_ca", "-out", ca.name+".crt")
	}
	// A root that has nothing to do with ours.
	o.run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
		"-keyout", "stranger.key", "-out", "stranger.crt", "-days", "30", "-subj", "/CN=Stranger Root",
		"-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")

	if err := os.Mkdir(o.path("issued"), 0o700); err != nil {
		o.t.Fatal(err)
	}
	o.write("index.txt", "")
	o.write("serial", "1000\n")
	o.write("crlnumber", "01\n")
	o.write("ca.cnf", opensslCAConfig)

	o.newKeyAndCSR("alice", "/CN=alice/OU=eng/OU=ops")
	o.caIssue("alice", "alice.csr", "client")
	o.newKeyAndCSR("gw", "/CN=gw.corp.test")
	o.caIssue("gw", "gw.csr", "server")
	o.caIssue("old", "alice.csr", "client", "-startdate", "20200101000000Z", "-enddate", "20200201000000Z")
	o.caIssue("revoked", "alice.csr", "client")
	o.newKeyAndCSR("outside", "/CN=gw.evil.example")
	o.caIssue("outside", "outside.csr", "outside")
	o.run("ca", "-batch", "-config", "ca.cnf", "-revoke", "revoked.crt", "-crl_reason", "keyCompromise")
	o.run("ca", "-batch", "-config", "ca.cnf", "-gencrl", "-out", "crl.pem")
	o.run("crl", "-in", "crl.pem", "-outform", "DER", "-out", "crl.der")

	// A client certificate from a sibling CA under the same root, and one
	// from the stranger root, both signed directly with openssl x509.
	o.write("client-ext.cnf", "[c]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n")
	o.newKeyAndCSR("sibling", "/CN=sibling")
	o.run("x509", "-req", "-in", "sibling.csr", "-CA", "other.crt", "-CAkey", "other.key", "-CAcreateserial",
		"-days", "10", "-extfile", "client-ext.cnf", "-extensions", "c", "-out", "sibling.crt")
	o.newKeyAndCSR("eve", "/CN=eve")
	o.run("x509", "-req", "-in", "eve.csr", "-CA", "stranger.crt", "-CAkey", "stranger.key", "-CAcreateserial",
		"-days", "10", "-extfile", "client-ext.cnf", "-extensions", "c", "-out", "eve.crt")

	// What a peer presents: leaf then intermediate; what trusts: bundle.
	for _, n := range []string{"alice", "gw", "old", "revoked", "outside"} {
		o.write(n+"-chain.crt", string(o.read(n+".crt"))+string(o.read("int.crt")))
	}
	o.write("sibling-chain.crt", string(o.read("sibling.crt"))+string(o.read("other.crt")))
	o.write("bundle.crt", string(o.read("int.crt"))+string(o.read("root.crt")))
}

func inspectJSON(t *testing.T, args ...string) inspect.Report {
	t.Helper()
	out, _, err := twowayRun(t, append([]string{"pki", "inspect", "--json"}, args...)...)
	if err != nil {
		t.Fatalf("inspect %v: %v", args, err)
	}
	var r inspect.Report
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("inspect %v JSON: %v", args, err)
	}
	return r
}

func TestInteropTwowayInspectsOpenSSL(t *testing.T) {
	o := newOpenSSL(t)
	o.buildHierarchy()

	t.Run("client certificate", func(t *testing.T) {
		r := inspectJSON(t, o.path("alice.crt"))
		c := r.Certificates[0]
		fp := o.run("x509", "-in", "alice.crt", "-noout", "-fingerprint", "-sha256")
		_, fp, _ = strings.Cut(strings.TrimSpace(fp), "=")
		pub, _ := pem.Decode([]byte(o.run("x509", "-in", "alice.crt", "-noout", "-pubkey")))
		sum := sha256.Sum256(pub.Bytes)
		if r.Type != inspect.TypeCertificate || c.CommonName != "alice" ||
			!slices.Equal(c.Groups, []string{"eng", "ops"}) || !slices.Equal(c.Emails, []string{"alice@corp.test"}) ||
			!slices.Equal(c.ExtKeyUsage, []string{"clientAuth"}) || !slices.Equal(c.KeyUsage, []string{"digitalSignature"}) ||
			c.IsCA || c.Status != pki.StatusValid || c.Key.String() != "ECDSA P-256" ||
			c.Issuer != "CN=OpenSSL Client CA,O=Interop" {
			t.Errorf("alice.crt: %+v", c)
		}
		if c.Serial != o.serial("alice.crt") {
			t.Errorf("serial %s, openssl says %s", c.Serial, o.serial("alice.crt"))
		}
		if !strings.EqualFold(c.Fingerprint, fp) {
			t.Errorf("fingerprint %s, openssl says %s", c.Fingerprint, fp)
		}
		if want := base64.StdEncoding.EncodeToString(sum[:]); c.SPKIPin != want {
			t.Errorf("SPKI pin %s, computed from openssl's public key %s", c.SPKIPin, want)
		}
	})

	t.Run("intermediate", func(t *testing.T) {
		c := inspectJSON(t, o.path("int.crt")).Certificates[0]
		nc := c.NameConstraints
		if !c.IsCA || c.MaxPathLen == nil || *c.MaxPathLen != 0 || !slices.Equal(c.KeyUsage, []string{"keyCertSign", "cRLSign"}) ||
			nc == nil || !nc.Critical || !slices.Equal(nc.PermittedDNS, []string{"corp.test"}) || !slices.Equal(nc.PermittedEmails, []string{"corp.test"}) {
			t.Errorf("int.crt: %+v (name constraints %+v)", c, nc)
		}
		root := inspectJSON(t, o.path("root.crt")).Certificates[0]
		if !root.IsCA || !root.SelfSigned || root.MaxPathLen != nil {
			t.Errorf("root.crt: %+v", root)
		}
	})

	t.Run("server and expired", func(t *testing.T) {
		r := inspectJSON(t, o.path("gw-chain.crt"))
		gw := r.Certificates[0]
		if r.Type != inspect.TypeCertificateChain || len(r.Certificates) != 2 || !slices.Equal(gw.DNSNames, []string{"gw.corp.test"}) ||
			!slices.Equal(gw.IPAddresses, []string{"127.0.0.1"}) || !slices.Equal(gw.ExtKeyUsage, []string{"serverAuth"}) {
			t.Errorf("gw-chain.crt: %+v", r)
		}
		old := inspectJSON(t, o.path("old.crt")).Certificates[0]
		if old.Status != pki.StatusExpired || !old.NotAfter.Equal(time.Date(2020, 2, 1, 0, 0, 0, 0, time.UTC)) || old.DaysLeft >= 0 {
			t.Errorf("old.crt: status %q not after %v days left %d", old.Status, old.NotAfter, old.DaysLeft)
		}
		out, _, err := twowayRun(t, "pki", "inspect", o.path("old.crt"))
		if err != nil {
			t.Fatal(err)
		}
		wantLines(t, out, `Validity:\s+EXPIRED \d+ days ago`)
	})

	t.Run("CRL", func(t *testing.T) {
		revokedSerial := o.serial("revoked.crt")
		for _, f := range []string{"crl.pem", "crl.der"} {
			r := inspectJSON(t, o.path(f))
			if r.Type != inspect.TypeCRL || len(r.CRLs) != 1 {
				t.Fatalf("%s: %+v", f, r)
			}
			c := r.CRLs[0]
			if c.Issuer != "CN=OpenSSL Client CA,O=Interop" || c.Number != "1" || c.NextUpdate == nil || c.Stale ||
				len(c.Revoked) != 1 || c.Revoked[0].Serial != revokedSerial || c.Revoked[0].Reason != "keyCompromise" {
				t.Errorf("%s: %+v", f, c)
			}
		}
	})

	t.Run("CSR", func(t *testing.T) {
		q := inspectJSON(t, o.path("alice.csr")).Requests[0]
		if q.CommonName != "alice" || !slices.Equal(q.Groups, []string{"eng", "ops"}) || !q.SignatureValid || q.Key.String() != "ECDSA P-256" {
			t.Errorf("alice.csr: %+v", q)
		}
	})

	t.Run("PKCS#12", func(t *testing.T) {
		o.write("p12.pw", "from openssl\n")
		variants := []struct {
			name   string
			flags  []string
			legacy bool
		}{{"default", nil, o.major < 3}}
		if o.major >= 3 {
			variants = append(variants, struct {
				name   string
				flags  []string
				legacy bool
			}{"legacy", []string{"-legacy"}, true})
		}
		for _, v := range variants {
			file := "alice-" + v.name + ".p12"
			o.run(append([]string{"pkcs12", "-export", "-in", "alice.crt", "-inkey", "alice.key", "-certfile", "int.crt",
				"-passout", "file:p12.pw", "-out", file}, v.flags...)...)
			r := inspectJSON(t, "--password-file", o.path("p12.pw"), o.path(file))
			if r.Type != inspect.TypePKCS12 || r.PKCS12.Legacy != v.legacy || len(r.Certificates) != 2 ||
				r.Certificates[0].CommonName != "alice" || len(r.PrivateKeys) != 1 || r.PrivateKeys[0].MatchesCertificate == "" {
				t.Errorf("%s: %+v %+v", file, r.PKCS12, r)
			}
		}
	})

	t.Run("encrypted key", func(t *testing.T) {
		o.write("key.pw", "openssl key pass\n")
		o.run("pkey", "-in", "alice.key", "-aes256", "-passout", "file:key.pw", "-out", "alice-enc.key")
		k := inspectJSON(t, o.path("alice-enc.key")).PrivateKeys[0]
		if !k.Encrypted || k.Key != nil || !strings.Contains(k.Encryption, "AES-256-CBC") {
			t.Errorf("without password: %+v", k)
		}
		k = inspectJSON(t, "--password-file", o.path("key.pw"), o.path("alice-enc.key")).PrivateKeys[0]
		if k.Key == nil || k.Key.String() != "ECDSA P-256" {
			t.Errorf("with password: %+v", k)
		}
		// And export-p12 takes openssl's encrypted key and chain.
		out := o.path("from-openssl-key.p12")
		if _, _, err := twowayRun(t, "pki", "export-p12", "--cert", o.path("alice-chain.crt"), "--key", o.path("alice-enc.key"),
			"--key-password-file", o.path("key.pw"), "--password-file", o.path("key.pw"), "--out", out); err != nil {
			t.Fatal(err)
		}
		o.run("pkcs12", "-in", out, "-passin", "file:key.pw", "-nokeys", "-noout")
	})
}

func TestInteropTwowayVerifiesOpenSSL(t *testing.T) {
	o := newOpenSSL(t)
	o.buildHierarchy()

	for _, tc := range []struct {
		name    string
		cert    string
		usage   string
		extra   []string // twoway flags
		fail    string   // twoway: "" to accept, else the failing check
		openssl bool     // does openssl verify accept it?
		osslArg []string
	}{
		{"client", "alice-chain.crt", "client", nil, "", true, nil},
		{"client as server", "alice-chain.crt", "server", nil, "usage", false, nil},
		{"server", "gw-chain.crt", "server", []string{"--name", "gw.corp.test"}, "", true, []string{"-verify_hostname", "gw.corp.test"}},
		{"server by IP", "gw-chain.crt", "server", []string{"--name", "127.0.0.1"}, "", true, []string{"-verify_ip", "127.0.0.1"}},
		{"server wrong name", "gw-chain.crt", "server", []string{"--name", "other.corp.test"}, "name", false, []string{"-verify_hostname", "other.corp.test"}},
		{"server as client", "gw-chain.crt", "client", nil, "usage", false, nil},
		{"expired", "old-chain.crt", "client", nil, "validity", false, nil},
		{"revoked", "revoked-chain.crt", "client", []string{"--crl", "crl.pem"}, "revocation", false, []string{"-crl_check", "-CRLfile", "crl.pem"}},
		{"revoked, DER CRL", "revoked-chain.crt", "client", []string{"--crl", "crl.der"}, "revocation", false, []string{"-crl_check", "-CRLfile", "crl.pem"}},
		{"not revoked, CRL checked", "alice-chain.crt", "client", []string{"--crl", "crl.pem"}, "", true, []string{"-crl_check", "-CRLfile", "crl.pem"}},
		{"revoked, no CRL given", "revoked-chain.crt", "client", nil, "", true, nil},
		{"outside name constraints", "outside-chain.crt", "server", nil, "chain", false, nil},
		{"wrong CA", "eve.crt", "client", nil, "chain", false, nil},
		// openssl has no issuing-CA rule: the sibling CA chains to the
		// same root, so openssl accepts what twoway refuses by design.
		{"sibling CA under the same root", "sibling-chain.crt", "client", nil, "chain", true, nil},
		{"pinned intermediate", "alice-chain.crt", "client", []string{"--pin", pinOf(t, o, "int.crt")}, "", true, nil},
		{"pin mismatch", "alice-chain.crt", "client", []string{"--pin", pinOf(t, o, "stranger.crt")}, "pin", true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// twoway, run from the openssl directory's files.
			args := []string{"pki", "verify", "--ca-bundle", o.path("bundle.crt"), "--usage", tc.usage}
			for i := 0; i < len(tc.extra); i++ {
				a := tc.extra[i]
				if a == "--crl" {
					i++
					args = append(args, a, o.path(tc.extra[i]))
					continue
				}
				args = append(args, a)
			}
			out, _, err := twowayRun(t, append(args, o.path(tc.cert))...)
			switch {
			case tc.fail == "" && err != nil:
				t.Errorf("twoway refused: %v", err)
			case tc.fail == "":
				wantLines(t, out, `^OK\n`)
			default:
				wantFailure(t, err, "verification failed: "+tc.fail+": ")
			}

			// openssl, to show the fixture is what the case claims.
			purpose := "sslclient"
			if tc.usage == "server" {
				purpose = "sslserver"
			}
			oargs := []string{"verify", "-CAfile", "bundle.crt", "-purpose", purpose}
			leafFile := strings.TrimSuffix(tc.cert, "-chain.crt") + ".crt"
			if leafFile != tc.cert {
				oargs = append(oargs, "-untrusted", tc.cert)
			}
			oargs = append(oargs, tc.osslArg...)
			res, err := o.try(append(oargs, leafFile)...)
			if ok := err == nil; ok != tc.openssl {
				t.Errorf("openssl verify accepted=%v, want %v:\n%s", ok, tc.openssl, res)
			}
		})
	}
}

// pinOf is the SPKI pin of an openssl-made certificate, computed from
// openssl's own DER export of the public key.
func pinOf(t *testing.T, o *opensslTool, file string) string {
	t.Helper()
	der := o.run("x509", "-in", file, "-noout", "-pubkey")
	b, _ := pem.Decode([]byte(der))
	if b == nil {
		t.Fatalf("no public key from openssl for %s", file)
	}
	sum := sha256.Sum256(b.Bytes)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// TestInteropTwowayPKIPipeline follows a client identity made by twoway's
// own CA tooling through export and revocation, with openssl reading each
// artefact: the encrypted leaf key, the PKCS#12 built from it, and the
// identity carried inside. (openssl verify of the issued certificates and
// CRLs themselves is in pki_ca_test.go.)
func TestInteropTwowayPKIPipeline(t *testing.T) {
	o := newOpenSSL(t)
	dir := o.path("pki")
	pw := o.write("ca.pw", "ca pass\n")
	keyPW := o.write("key.pw", "alice key pass\n")
	p12PW := o.write("p12.pw", "alice p12 pass\n")
	clientCA, serverCA := filepath.Join(dir, "client-ca"), filepath.Join(dir, "server-ca")
	run := func(args ...string) string {
		t.Helper()
		out, _, err := twowayRun(t, args...)
		if err != nil {
			t.Fatalf("twoway %s: %v", strings.Join(args, " "), err)
		}
		return out
	}
	run("pki", "init", "--dir", dir, "--org", "Interop", "--password-file", pw)
	run("pki", "issue", "client", "--ca", clientCA, "--name", "alice", "--group", "eng", "--key-password-file", keyPW,
		"--out-dir", o.dir, "--password-file", pw)
	run("pki", "issue", "server", "--ca", serverCA, "--name", "gw.test", "--out-dir", o.dir, "--password-file", pw)

	// openssl decrypts the issued leaf key, and it is the certificate's.
	certPub := o.run("x509", "-in", "alice.crt", "-noout", "-pubkey")
	if keyPub := o.run("pkey", "-in", "alice.key", "-passin", "file:key.pw", "-pubout"); keyPub != certPub {
		t.Errorf("openssl: alice.key's public key differs from alice.crt's:\n%s\n%s", keyPub, certPub)
	}
	k := inspectJSON(t, o.path("alice.key")).PrivateKeys[0]
	if !k.Encrypted || !strings.HasPrefix(k.Encryption, "PBES2, PBKDF2-HMAC-SHA256") {
		t.Errorf("inspect alice.key: %+v", k)
	}

	// The PKCS#12 carries a complete identity: openssl takes the leaf and
	// the key out, and the leaf verifies as a client against the bundle.
	run("pki", "export-p12", "--cert", o.path("alice.crt"), "--key", o.path("alice.key"), "--key-password-file", keyPW,
		"--chain", filepath.Join(dir, "root", "ca.crt"), "--out", o.path("alice.p12"), "--password-file", p12PW)
	o.run("pkcs12", "-in", "alice.p12", "-passin", "file:p12.pw", "-nokeys", "-clcerts", "-out", "p12-leaf.crt")
	o.run("pkcs12", "-in", "alice.p12", "-passin", "file:p12.pw", "-nokeys", "-cacerts", "-out", "p12-cas.crt")
	o.run("pkcs12", "-in", "alice.p12", "-passin", "file:p12.pw", "-nocerts", "-nodes", "-out", "p12.key")
	if keyPub := o.run("pkey", "-in", "p12.key", "-pubout"); keyPub != certPub {
		t.Errorf("key in the PKCS#12 is not alice's")
	}
	cas, err := pki.ParseCertificatesPEM(o.read("p12-cas.crt"))
	if err != nil || len(cas) != 2 {
		t.Fatalf("CA certificates in the PKCS#12: %d, %v", len(cas), err)
	}
	o.run("verify", "-CAfile", filepath.Join(clientCA, "bundle.crt"), "-purpose", "sslclient", "p12-leaf.crt")
	run("pki", "verify", "--ca-bundle", filepath.Join(clientCA, "bundle.crt"), "--usage", "client", o.path("p12-leaf.crt"))

	// twoway verify: the right bundle and role only.
	out := run("pki", "verify", "--ca-bundle", filepath.Join(clientCA, "bundle.crt"), "--usage", "client", o.path("alice.crt"))
	wantLines(t, out, `^OK\n`, `Name:\s+alice`, `Groups:\s+eng`)
	run("pki", "verify", "--ca-bundle", filepath.Join(serverCA, "bundle.crt"), "--usage", "server", "--name", "gw.test", o.path("gw.test.crt"))
	_, _, err = twowayRun(t, "pki", "verify", "--ca-bundle", filepath.Join(serverCA, "bundle.crt"), "--usage", "client", o.path("alice.crt"))
	wantFailure(t, err, "verification failed: chain: ")

	// Revoked and published: inspect shows it, verify refuses it, and so
	// does openssl with the same CRL.
	run("pki", "revoke", "--ca", clientCA, "--cert", o.path("alice.crt"), "--reason", "keyCompromise")
	run("pki", "crl", "--ca", clientCA, "--password-file", pw)
	crlFile := filepath.Join(clientCA, "crl.pem")
	c := inspectJSON(t, crlFile).CRLs[0]
	if len(c.Revoked) != 1 || c.Revoked[0].Serial != o.serial("alice.crt") || c.Revoked[0].Reason != "keyCompromise" {
		t.Errorf("inspect CRL: %+v", c)
	}
	_, _, err = twowayRun(t, "pki", "verify", "--ca-bundle", filepath.Join(clientCA, "bundle.crt"), "--crl", crlFile, "--usage", "client", o.path("alice.crt"))
	wantFailure(t, err, "verification failed: revocation: ", "keyCompromise")
	if res, err := o.try("verify", "-crl_check", "-CRLfile", crlFile, "-CAfile", filepath.Join(clientCA, "bundle.crt"), "-purpose", "sslclient", "p12-leaf.crt"); err == nil {
		t.Errorf("openssl accepted the revoked leaf from the PKCS#12:\n%s", res)
	}
}
