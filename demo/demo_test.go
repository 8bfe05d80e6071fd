package demo

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twoway/twoway/authority"
	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/probe"
	"github.com/twoway/twoway/tunnel"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// Keys are unencrypted in the demo, but keep any KDF use cheap.
	authority.KDFIterations = 1000
	// Nothing a run starts may outlive the tests.
	goleak.VerifyTestMain(m)
}

// TestDemoRunOnce runs the whole walkthrough and checks that what it printed
// is what the connection really did.
func TestDemoRunOnce(t *testing.T) {
	parent := t.TempDir()
	var out bytes.Buffer
	rep, err := Run(context.Background(), &out, Options{Once: true, TempDir: parent})
	text := out.String()
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, text)
	}
	t.Logf("output:\n%s", text)
	checkNoLeaks(t)
	if ents, err := os.ReadDir(parent); err != nil || len(ents) != 0 {
		t.Errorf("work directory not removed: %v %v", ents, err)
	}
	contains := func(what, s string) {
		t.Helper()
		if !strings.Contains(text, s) {
			t.Errorf("output lacks %s %q", what, s)
		}
	}
	field := func(key, value string) {
		t.Helper()
		re := regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(key) + `\s+` + regexp.QuoteMeta(value))
		if !re.MatchString(text) {
			t.Errorf("output lacks field %q = %q", key, value)
		}
	}

	// The identity and groups the gateway verified.
	g, c := rep.Gateway, rep.Client
	if g.Peer == nil || g.Peer.CommonName != User || !slices.Equal(g.Peer.Groups, []string{Group}) {
		t.Fatalf("gateway saw peer %+v, want %s in group %s", g.Peer, User, Group)
	}
	field("identity", g.Peer.Name())
	field("groups", strings.Join(g.Peer.Groups, ", "))
	contains("client serial", g.Peer.Serial)
	contains("client fingerprint", g.Peer.Fingerprint)
	if c.Peer == nil || !slices.ContainsFunc(c.Peer.IPs, func(ip net.IP) bool { return ip.Equal(net.IPv4(127, 0, 0, 1)) }) {
		t.Fatalf("client saw gateway %+v, want 127.0.0.1", c.Peer)
	}
	contains("gateway fingerprint", c.Peer.Fingerprint)

	// TLS as negotiated, the same on both sides.
	if g.TLS.Version != tls.VersionTLS13 || c.TLS.Version != tls.VersionTLS13 {
		t.Errorf("versions: gateway %x, client %x; want TLS 1.3", g.TLS.Version, c.TLS.Version)
	}
	if g.TLS.CipherSuite != c.TLS.CipherSuite || g.TLS.NegotiatedProtocol != tunnel.ALPN {
		t.Errorf("gateway %s/%q, client %s", tls.CipherSuiteName(g.TLS.CipherSuite), g.TLS.NegotiatedProtocol, tls.CipherSuiteName(c.TLS.CipherSuite))
	}
	field("TLS", "TLS 1.3, cipher suite "+tls.CipherSuiteName(g.TLS.CipherSuite))
	contains("key exchange", "key exchange "+g.TLS.CurveID.String())
	contains("session id", g.ID)
	if g.ID != c.ID {
		t.Errorf("session ids differ: gateway %s, client %s", g.ID, c.ID)
	}

	// The ClientHello on the wire.
	h := rep.Hello
	if h == nil || !slices.Equal(h.Versions, []uint16{tls.VersionTLS13}) || !slices.Equal(h.ALPN, []string{tunnel.ALPN}) {
		t.Fatalf("recorded ClientHello %+v, want TLS 1.3 only and ALPN %s", h, tunnel.ALPN)
	}
	field("TLS versions", "TLS 1.3 only")
	field("ALPN", tunnel.ALPN)
	if !slices.Contains(h.CipherSuites, g.TLS.CipherSuite) {
		t.Errorf("negotiated suite %x not among those offered %x", g.TLS.CipherSuite, h.CipherSuites)
	}

	// Which CAs vouched for whom, by name.
	wantChain := func(side string, chain []*x509.Certificate, want ...string) {
		t.Helper()
		var names []string
		for _, c := range chain {
			names = append(names, c.Subject.CommonName)
		}
		if !slices.Equal(names, want) {
			t.Errorf("%s verified chain %v, want %v", side, names, want)
		}
		contains(side+" chain", strings.Join(want, " <- "))
	}
	wantChain("client's", c.VerifiedChain, "127.0.0.1", "twoway demo server CA", "twoway demo root CA")
	wantChain("gateway's", g.VerifiedChain, User, "twoway demo client CA", "twoway demo root CA")
	contains("server bundle", "pki/server-ca/bundle.crt")
	contains("client bundle", "pki/client-ca/bundle.crt")

	// What policy granted.
	if !rep.Admission.Allow || len(c.Grants) != 1 || !strings.Contains(c.Grants[0], rep.ServiceAddr) {
		t.Errorf("admission %+v, grants %q; want admitted and the service %s granted", rep.Admission, c.Grants, rep.ServiceAddr)
	}
	field("admitted by", rep.Admission.Rule)
	field("grants", c.Grants[0])

	// The round trip through the forward.
	if !strings.Contains(rep.Exchange.Body, "you sent: "+exchangeBody) || rep.Exchange.Status != "200 OK" {
		t.Errorf("exchange %+v", rep.Exchange)
	}
	contains("reply", "| you sent: "+exchangeBody)

	// The three refusals, with the gateway's reasons.
	if len(rep.Refusals) != 3 {
		t.Fatalf("%d refusals, want 3", len(rep.Refusals))
	}
	noCert, other, sibling := rep.Refusals[0], rep.Refusals[1], rep.Refusals[2]
	if noCert.Refusal.Stage != "tls" || noCert.Presented != nil || !strings.Contains(noCert.ClientSaw, "certificate required") {
		t.Errorf("no certificate: %+v", noCert)
	}
	if len(noCert.AcceptableCAs) != 2 || !strings.Contains(noCert.AcceptableCAs[0], "twoway demo client CA") {
		t.Errorf("CertificateRequest named %q, want the client CA and the root", noCert.AcceptableCAs)
	}
	for _, a := range []Attempt{other, sibling} {
		var ve *pki.VerifyError
		if a.Refusal.Stage != "verify" || !errors.As(a.Refusal.Err, &ve) || ve.Check != "chain" || !errors.Is(a.Refusal.Err, pki.ErrUntrusted) {
			t.Errorf("%s: refusal %+v, want stage verify, check chain, untrusted", a.Name, a.Refusal)
		}
		if a.Refusal.Presented == nil || a.Refusal.Presented.Name() != User || a.ClientSaw == "" {
			t.Errorf("%s: presented %+v, client saw %q", a.Name, a.Refusal.Presented, a.ClientSaw)
		}
	}
	if other.Presented.Issuer.CommonName != "unrelated client CA" || sibling.Presented.Issuer.CommonName != "twoway demo server CA" {
		t.Errorf("issuers: %s, %s", other.Presented.Issuer, sibling.Presented.Issuer)
	}
	for _, a := range rep.Refusals {
		contains("refusal", "gateway      "+refusalHead(a.Refusal))
		contains("refusal reason", a.Refusal.Err.Error())
		contains("client's error", a.ClientSaw)
	}
}

// TestDemoRunKeep keeps the directory, whose files are those the session used.
func TestDemoRunKeep(t *testing.T) {
	parent := t.TempDir()
	var out bytes.Buffer
	rep, err := Run(context.Background(), &out, Options{Once: true, Keep: true, TempDir: parent})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, out.String())
	}
	checkNoLeaks(t)
	if !strings.Contains(out.String(), "Kept "+rep.Dir) {
		t.Errorf("output does not say where the directory is")
	}
	certs, err := pki.LoadCertificates(rep.Files.UserCert)
	if err != nil {
		t.Fatal(err)
	}
	if got := pki.IdentityFromCert(certs[0]); got.Serial != rep.Gateway.Peer.Serial {
		t.Errorf("%s has serial %s; the gateway verified %s", rep.Files.UserCert, got.Serial, rep.Gateway.Peer.Serial)
	}
	fi, err := os.Stat(rep.Files.UserKey)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: %v, mode %v; want 0600", rep.Files.UserKey, err, fi.Mode())
	}
	if filepath.Dir(rep.Dir) != parent {
		t.Errorf("work directory %s not in %s", rep.Dir, parent)
	}
}

// TestDemoRunUntilCancelled drives the interactive mode: the printed forward
// works, a refusal shows up as a gateway event, and cancelling stops
// everything and removes the directory.
func TestDemoRunUntilCancelled(t *testing.T) {
	parent := t.TempDir()
	out := newWatchedBuffer()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		rep *Report
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := Run(ctx, out, Options{TempDir: parent})
		done <- result{rep, err}
	}()
	out.waitFor(t, "What the gateway sees from now on:")

	m := regexp.MustCompile(`curl (http://127\.0\.0\.1:\d+/)`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no curl command printed:\n%s", out.String())
	}
	tr := &http.Transport{DisableKeepAlives: true}
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(m[1])
	if err != nil {
		t.Fatalf("GET %s: %v", m[1], err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	tr.CloseIdleConnections()
	if !strings.Contains(string(body), "hello from the twoway demo service") {
		t.Errorf("through the printed forward: %q", body)
	}

	gw := regexp.MustCompile(`probe (127\.0\.0\.1:\d+) `).FindStringSubmatch(out.String())
	if gw == nil {
		t.Fatalf("no probe command printed:\n%s", out.String())
	}
	res, err := probe.Run(ctx, probe.Options{Addr: gw[1], ALPN: []string{tunnel.ALPN}})
	if err != nil || res.ClientCertAccepted == nil || *res.ClientCertAccepted {
		t.Fatalf("probe without a certificate: %+v, %v", res, err)
	}
	out.waitFor(t, "refused 127.0.0.1:")
	out.waitFor(t, "stage tls; no certificate presented: TLS handshake: tls: client didn't provide a certificate")

	cancel()
	r := <-done
	if r.err != nil {
		t.Fatalf("Run after cancel: %v", r.err)
	}
	checkNoLeaks(t)
	if _, err := os.Stat(r.rep.Dir); !os.IsNotExist(err) {
		t.Errorf("work directory %s still there: %v", r.rep.Dir, err)
	}
}

// TestDemoRunCancelledEarly: cancelling before the session is up returns the
// context's error and still cleans up.
func TestDemoRunCancelledEarly(t *testing.T) {
	parent := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Run(ctx, io.Discard, Options{TempDir: parent})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run with a cancelled context: %v, want context.Canceled", err)
	}
	checkNoLeaks(t)
	if ents, _ := os.ReadDir(parent); len(ents) != 0 {
		t.Errorf("work directory not removed: %v", ents)
	}
}

// watchedBuffer is a writer a test can wait on.
type watchedBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer // guarded by mu
	written chan struct{}
}

func newWatchedBuffer() *watchedBuffer { return &watchedBuffer{written: make(chan struct{}, 1)} }

func (w *watchedBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	select {
	case w.written <- struct{}{}:
	default:
	}
	return w.buf.Write(p)
}

func (w *watchedBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func (w *watchedBuffer) waitFor(t *testing.T, s string) {
	t.Helper()
	timer := time.NewTimer(20 * time.Second)
	defer timer.Stop()
	for !strings.Contains(w.String(), s) {
		select {
		case <-w.written:
		case <-timer.C:
			t.Fatalf("output never contained %q:\n%s", s, w.String())
		}
	}
}

// checkNoLeaks fails if goroutines started by a run outlive it. goleak
// looks again for a bounded time, since some (yamux's, the HTTP server's
// connections) end just after the close that ends them.
func checkNoLeaks(t *testing.T) {
	t.Helper()
	goleak.VerifyNone(t)
}
