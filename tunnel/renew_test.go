package tunnel

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/smallstep/pkcs7"

	"github.com/twoway/twoway/authority"
	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/pki/pkitest"
	"github.com/twoway/twoway/policy"
)

// caRenewer renews with an authority.CA, as the daemon's does.
type caRenewer struct{ ca *authority.CA }

func (r *caRenewer) Renew(cur *x509.Certificate, csr *x509.CertificateRequest) ([]*x509.Certificate, error) {
	iss, err := r.ca.Renew(cur, csr, time.Now(), 0)
	switch {
	case errors.Is(err, authority.ErrNotIssued), errors.Is(err, authority.ErrRevoked),
		errors.Is(err, authority.ErrNotValid), errors.Is(err, authority.ErrBadCSR):
		return nil, fmt.Errorf("%w: %w", ErrRenewRefused, err)
	case err != nil:
		return nil, err
	}
	return append([]*x509.Certificate{iss.Cert}, iss.Chain...), nil
}

// renewGateway is an enrollGateway that also renews, and trusts the
// fixture's own client CA too (whose certificates it does not renew).
type renewGateway struct {
	*enrollGateway
	mu       sync.Mutex
	outcomes []RenewOutcome // guarded by mu
}

func startRenewGateway(t *testing.T) *renewGateway {
	t.Helper()
	r := &caRenewer{}
	g := &renewGateway{}
	g.enrollGateway = startEnrollGateway(t, true, func(c *ServerConfig) {
		c.Renew = r
		c.OnRenew = func(o RenewOutcome) { g.mu.Lock(); g.outcomes = append(g.outcomes, o); g.mu.Unlock() }
	})
	r.ca = g.ca
	v := g.f.serverCreds.Verifier()
	g.f.serverCreds.setVerifier(t, append(slices.Clone(v.CAs()), g.f.h.ClientBundle()...))
	return g
}

func (g *renewGateway) outcomeList() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []string
	for _, o := range g.outcomes {
		out = append(out, o.Via+":"+o.Outcome)
	}
	return out
}

// connect starts a client with cert and returns it once its session is up.
func (g *renewGateway) connect(t *testing.T, cert *tls.Certificate) (*Client, *memCreds, SessionInfo) {
	t.Helper()
	creds := &memCreds{}
	creds.cert.Store(cert)
	creds.setVerifier(t, g.f.h.ServerBundle())
	ccfg := g.f.clientConfig(g.srv.Addr().String())
	ccfg.Credentials = creds
	var ev sessionEvents
	ev.hook(&ccfg)
	c := startClient(t, ccfg)
	waitFor(t, ev.up, "client session")
	return c, creds, waitFor(t, g.sessions, "gateway session")
}

func (g *renewGateway) enrolled(t *testing.T, name string, groups ...string) *tls.Certificate {
	t.Helper()
	token, _, err := g.ca.CreateToken(authority.TokenOptions{Name: name, Groups: groups, Days: 1})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := g.enroll(t, token)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func renewCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestRenewOverSessionThenReconnect: enroll, connect, renew over the live
// session with a new key (the request asking for another name and
// groups), and the session goes on; the next connection, made with the
// renewed certificate, is seen by the gateway with its new serial.
func TestRenewOverSessionThenReconnect(t *testing.T) {
	g := startRenewGateway(t)
	old := g.enrolled(t, "alice", "eng")
	c, creds, si := g.connect(t, old)
	if si.Peer.Serial != old.Leaf.SerialNumber.Text(16) {
		t.Fatalf("gateway sees serial %s, want %s", si.Peer.Serial, old.Leaf.SerialNumber.Text(16))
	}
	csr, key := pkitest.CSR(t, nil, pkix.Name{CommonName: "root", OrganizationalUnit: []string{"admins"}})
	certs, err := c.Renew(renewCtx(t), csr.Raw)
	if err != nil {
		t.Fatal(err)
	}
	leaf := certs[0]
	if leaf.Subject.CommonName != "alice" || !slices.Equal(leaf.Subject.OrganizationalUnit, []string{"eng"}) {
		t.Errorf("renewed certificate for %v, want alice in eng (from the old certificate, not the request)", leaf.Subject)
	}
	if got, want := leaf.NotAfter.Sub(leaf.NotBefore), old.Leaf.NotAfter.Sub(old.Leaf.NotBefore); got != want {
		t.Errorf("renewed lifetime %v, want %v", got, want)
	}
	if got := g.outcomeList(); !slices.Equal(got, []string{"session:renewed"}) {
		t.Errorf("outcomes %v", got)
	}
	// The session is untouched.
	if ss := g.srv.Sessions(); len(ss) != 1 || ss[0].Peer.Serial != old.Leaf.SerialNumber.Text(16) {
		t.Fatalf("after renewal the gateway has %d sessions (want the old one, still up)", len(ss))
	}

	renewed := &tls.Certificate{PrivateKey: key, Leaf: leaf}
	for _, c := range certs {
		renewed.Certificate = append(renewed.Certificate, c.Raw)
	}
	creds.cert.Store(renewed)
	c.Stop()
	_, _, si = g.connect(t, renewed)
	if si.Peer.Serial != leaf.SerialNumber.Text(16) || si.Peer.Name() != "alice" {
		t.Errorf("reconnected as %s serial %s, want alice with the renewed serial %s", si.Peer.Name(), si.Peer.Serial, leaf.SerialNumber.Text(16))
	}
}

func TestRenewRefused(t *testing.T) {
	g := startRenewGateway(t)
	t.Run("revoked", func(t *testing.T) {
		cert := g.enrolled(t, "alice")
		c, _, _ := g.connect(t, cert)
		defer c.Stop() // before the next alice, of another CA, connects
		// Revoked in the CA's database; no CRL has reached the gateway,
		// so the session stays, but it gets no new certificate.
		if _, err := g.ca.RevokeCert(cert.Leaf, "keyCompromise"); err != nil {
			t.Fatal(err)
		}
		csr, _ := pkitest.CSR(t, nil, pkix.Name{})
		_, err := c.Renew(renewCtx(t), csr.Raw)
		var se *StreamError
		if !errors.As(err, &se) || se.Code != CodeDenied || !strings.Contains(se.Message, "revoked") {
			t.Errorf("renewing a revoked certificate: %v, want denied as revoked", err)
		}
	})
	t.Run("other CA", func(t *testing.T) {
		// The fixture's client CA is trusted for sessions but is not
		// the CA the gateway renews with.
		c, _, _ := g.connect(t, ptr(g.f.clientLeaf.TLSCertificate()))
		csr, _ := pkitest.CSR(t, nil, pkix.Name{})
		_, err := c.Renew(renewCtx(t), csr.Raw)
		var se *StreamError
		if !errors.As(err, &se) || se.Code != CodeDenied || !strings.Contains(se.Message, "not issued by") {
			t.Errorf("renewing another CA's certificate: %v, want denied as not issued by it", err)
		}
	})
	t.Run("not admitted", func(t *testing.T) {
		// The policy changed after the session began (no Revalidate
		// yet): the session lives on, but gets no new certificate.
		c, _, _ := g.connect(t, g.enrolled(t, "alice", "eng"))
		defer c.Stop()
		g.srv.SetPolicy(&fakePolicy{admit: func(*pki.Identity) policy.Decision { return policy.Decision{Rule: "nobody"} }})
		defer g.srv.SetPolicy(&fakePolicy{})
		csr, _ := pkitest.CSR(t, nil, pkix.Name{})
		_, err := c.Renew(renewCtx(t), csr.Raw)
		var se *StreamError
		if !errors.As(err, &se) || se.Code != CodeDenied || !strings.Contains(se.Message, `is not admitted (rule "nobody")`) {
			t.Errorf("renewing for an identity the policy no longer admits: %v, want denied", err)
		}
	})
	if got := g.outcomeList(); !slices.Equal(got, []string{"session:refused", "session:refused", "session:refused"}) {
		t.Errorf("outcomes %v", got)
	}
}

func ptr[T any](v T) *T { return &v }

// TestRenewESTWithCurlAndOpenSSL: an independent EST client. openssl
// makes a key and a request (asking for another name and groups), curl
// posts it to simplereenroll with the enrolled certificate over mutual
// TLS, and openssl reads the PKCS#7 reply: a certificate for openssl's
// key with the old certificate's name and groups.
func TestRenewESTWithCurlAndOpenSSL(t *testing.T) {
	tools := map[string]string{}
	for _, tool := range []string{"curl", "openssl", "base64"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("%s not installed (CI must have it: .ci/run)", tool)
			}
			t.Skipf("%s not installed", tool)
		}
		tools[tool] = p
	}
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(tools[name], args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	g := startRenewGateway(t)
	old := g.enrolled(t, "alice", "eng", "ops")
	dir := t.TempDir()
	file := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(old.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	var chainPEM, caPEM []byte
	for _, der := range old.Certificate {
		chainPEM = append(chainPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	for _, c := range g.f.h.ServerBundle() {
		caPEM = append(caPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	certFile, keyFile, caFile := file("client.crt", chainPEM), file("client.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})), file("ca.crt", caPEM)

	newKey, csrDER := filepath.Join(dir, "new.key"), filepath.Join(dir, "new.csr")
	run("openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
		"-keyout", newKey, "-subj", "/CN=mallory/OU=admins", "-outform", "DER", "-out", csrDER)
	csrB64 := filepath.Join(dir, "csr.b64")
	run("openssl", "base64", "-in", csrDER, "-out", csrB64)
	reply := filepath.Join(dir, "reply.b64")
	url := "https://127.0.0.1:" + portOf(g.srv.Addr().String()) + ESTPath
	out := run("curl", "-sS", "--fail-with-body", "--max-time", "20", "--noproxy", "*", "--http1.1",
		"--cacert", caFile, "--cert", certFile, "--key", keyFile,
		"-H", "Content-Type: application/pkcs10", "--data-binary", "@"+csrB64,
		"-o", reply, "-w", "%{content_type}", url)
	if !strings.HasPrefix(out, "application/pkcs7-mime") || !strings.Contains(out, "certs-only") {
		t.Errorf("content type %q, want application/pkcs7-mime; smime-type=certs-only", out)
	}
	p7 := filepath.Join(dir, "reply.p7")
	b64, err := exec.Command(tools["base64"], "-d", reply).Output()
	if err != nil {
		t.Fatalf("base64 -d: %v", err)
	}
	file("reply.p7", b64)
	printed := run("openssl", "pkcs7", "-inform", "DER", "-in", p7, "-print_certs")
	certs, err := pki.ParseCertificatesPEM([]byte(printed))
	if err != nil || len(certs) != 1 {
		t.Fatalf("openssl printed %d certificates (%v):\n%s", len(certs), err, printed)
	}
	c := certs[0]
	if c.Subject.CommonName != "alice" || !slices.Equal(c.Subject.OrganizationalUnit, []string{"eng", "ops"}) {
		t.Errorf("EST renewed certificate for %v, want alice in eng, ops (the old certificate's, not the request's)", c.Subject)
	}
	if c.SerialNumber.Cmp(old.Leaf.SerialNumber) == 0 {
		t.Error("EST reply holds the old certificate")
	}
	keyPEM, err := os.ReadFile(newKey)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(keyPEM)
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !k.(interface{ Public() crypto.PublicKey }).Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(c.PublicKey) {
		t.Error("EST renewed certificate is not for openssl's new key")
	}
	if got := g.outcomeList(); !slices.Equal(got, []string{"est:renewed"}) {
		t.Errorf("outcomes %v", got)
	}
	// No handshake slot stays held once the EST request is answered.
	deadline := time.Now().Add(5 * time.Second)
	for g.srv.gate.inFlight() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := g.srv.gate.inFlight(); n != 0 {
		t.Errorf("%d handshake slots held after the EST request", n)
	}

	// Only simplereenroll is served; a client without a certificate
	// gets no EST at all.
	outb, _ := exec.Command(tools["curl"], "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--noproxy", "*", "--http1.1", "--max-time", "20",
		"--cacert", caFile, "--cert", certFile, "--key", keyFile, strings.Replace(url, "simplereenroll", "cacerts", 1)).CombinedOutput()
	if string(outb) != "404" {
		t.Errorf("GET cacerts: %q, want 404", outb)
	}
	if out, err := exec.Command(tools["curl"], "-sS", "--noproxy", "*", "--http1.1", "--max-time", "20", "--cacert", caFile,
		"--data-binary", "@"+csrB64, url).CombinedOutput(); err == nil {
		t.Errorf("EST without a client certificate worked: %s", out)
	}
}

func portOf(addr string) string { return addr[strings.LastIndexByte(addr, ':')+1:] }

// TestESTEncoding: the reply body is base64 in short lines of a PKCS#7
// certs-only message that holds exactly the certificate, and request
// bodies are read with line breaks anywhere.
func TestESTEncoding(t *testing.T) {
	leaf := pkitest.NewHierarchy(t).ClientCA.Client(t, "alice", "eng")
	p7, err := pkcs7.DegenerateCertificate(leaf.Cert.Raw)
	if err != nil {
		t.Fatal(err)
	}
	body := encodeBase64Lines(p7)
	for _, line := range strings.Split(strings.TrimSuffix(string(body), "\n"), "\n") {
		if len(line) > 64 {
			t.Fatalf("line of %d characters", len(line))
		}
	}
	der, err := decodeBase64Body(body)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := pkcs7.Parse(der)
	if err != nil {
		t.Fatal(err)
	}
	if len(msg.Certificates) != 1 || !msg.Certificates[0].Equal(leaf.Cert) || len(msg.Signers) != 0 {
		t.Errorf("PKCS#7 holds %d certificates and %d signers, want the leaf alone", len(msg.Certificates), len(msg.Signers))
	}
	if _, err := decodeBase64Body([]byte("not base64!")); err == nil {
		t.Error("garbage decoded")
	}
}

// TestRenewNotOffered: a gateway without a Renewer does not announce
// renewal, and the client does not ask.
func TestRenewNotOffered(t *testing.T) {
	g := &renewGateway{enrollGateway: startEnrollGateway(t, true)}
	c, _, _ := g.connect(t, g.enrolled(t, "alice", "eng"))
	csr, _ := pkitest.CSR(t, nil, pkix.Name{})
	if _, err := c.Renew(renewCtx(t), csr.Raw); !errors.Is(err, ErrNoRenewal) {
		t.Errorf("renewing at a gateway that does not renew: %v, want ErrNoRenewal", err)
	}
}
