package tunnel

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twoway/twoway/authority"
	"github.com/twoway/twoway/enroll"
	"github.com/twoway/twoway/pki/pkitest"
)

func TestEnrollALPNMatchesPackageEnroll(t *testing.T) {
	if EnrollALPN != enroll.ALPN {
		t.Fatalf("tunnel.EnrollALPN %q, enroll.ALPN %q", EnrollALPN, enroll.ALPN)
	}
}

// enrollGateway is a gateway whose clients are certified by a real
// issuing CA (in a temporary directory), which also enrolls them.
type enrollGateway struct {
	f        *fixture
	ca       *authority.CA
	srv      *Server
	refusals chan Refusal
	sessions chan SessionInfo
}

func startEnrollGateway(t *testing.T, withEnroll bool, tweak ...func(*ServerConfig)) *enrollGateway {
	t.Helper()
	res, err := authority.Init(filepath.Join(t.TempDir(), "pki"), authority.InitOptions{Org: "Example Corp"})
	if err != nil {
		t.Fatal(err)
	}
	g := &enrollGateway{f: newFixture(t), ca: res.ClientCA, refusals: make(chan Refusal, 16), sessions: make(chan SessionInfo, 16)}
	g.f.serverCreds = newCreds(t, g.f.serverLeaf, []*x509.Certificate{res.ClientCA.Cert, res.Root.Cert})
	cfg := g.f.serverConfig(nil)
	cfg.OnRefuse = func(r Refusal) { g.refusals <- r }
	cfg.OnSession = func(si SessionInfo) { g.sessions <- si }
	if withEnroll {
		cfg.Enroll = enroll.NewHandler(res.ClientCA, testLogger())
	}
	for _, f := range tweak {
		f(&cfg)
	}
	g.srv = startServer(t, cfg)
	return g
}

// dial connects to the gateway as a laptop without a certificate would,
// verifying the gateway against the server CA, offering protos.
func (g *enrollGateway) dial(t *testing.T, protos ...string) (*tls.Conn, error) {
	t.Helper()
	pool := x509.NewCertPool()
	for _, c := range g.f.h.ServerBundle() {
		pool.AddCert(c)
	}
	return tls.Dial("tcp", g.srv.Addr().String(), &tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    pool,
		ServerName: "127.0.0.1",
		NextProtos: protos,
	})
}

// enroll runs one enrollment with token for a fresh key.
func (g *enrollGateway) enroll(t *testing.T, token string) (*tls.Certificate, error) {
	t.Helper()
	conn, err := g.dial(t, enroll.ALPN)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	csr, key := pkitest.CSR(t, nil, pkix.Name{CommonName: "alice"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	certs, err := enroll.Enroll(ctx, conn, token, csr.Raw)
	if err != nil {
		return nil, err
	}
	tc := &tls.Certificate{PrivateKey: key, Leaf: certs[0]}
	for _, c := range certs {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return tc, nil
}

func TestEnrollThenConnect(t *testing.T) {
	g := startEnrollGateway(t, true)
	token, _, err := g.ca.CreateToken(authority.TokenOptions{Name: "alice", Groups: []string{"eng"}, Days: 7})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := g.enroll(t, token)
	if err != nil {
		t.Fatal(err)
	}
	// The gateway lets the slot go after writing its reply, which the
	// client may read first.
	deadline := time.Now().Add(2 * time.Second)
	for g.srv.gate.inFlight() > 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := g.srv.gate.inFlight(); n != 0 {
		t.Errorf("%d handshake slots held after the enrollment", n)
	}

	// The new certificate opens a session like any other.
	creds := &memCreds{}
	creds.cert.Store(cert)
	creds.setVerifier(t, g.f.h.ServerBundle())
	ccfg := g.f.clientConfig(g.srv.Addr().String())
	ccfg.Credentials = creds
	var ev sessionEvents
	ev.hook(&ccfg)
	startClient(t, ccfg)
	waitFor(t, ev.up, "client session")
	si := waitFor(t, g.sessions, "gateway session")
	if si.Peer.Name() != "alice" || !slices.Equal(si.Peer.Groups, []string{"eng"}) {
		t.Errorf("gateway sees %v in %v, want alice in eng", si.Peer.Name(), si.Peer.Groups)
	}

	// The token is spent.
	if _, err := g.enroll(t, token); !errors.Is(err, enroll.ErrRefused) || !errors.Is(err, authority.ErrTokenUsed) {
		t.Errorf("second enrollment with the token: %v, want %v", err, authority.ErrTokenUsed)
	}
}

// refusedWithoutCertificate dials without a certificate offering protos
// and checks the gateway refuses the connection at the TLS stage.
func (g *enrollGateway) refusedWithoutCertificate(t *testing.T, protos ...string) Refusal {
	t.Helper()
	conn, err := g.dial(t, protos...)
	if err == nil {
		// With TLS 1.3 the client finishes first; the verdict on the
		// missing certificate arrives as an alert on read.
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil {
		t.Fatalf("a client without a certificate offering %q got through", protos)
	}
	r := waitFor(t, g.refusals, "refusal")
	if r.Stage != "tls" {
		t.Errorf("refusal at stage %q (%v), want tls", r.Stage, r.Err)
	}
	select {
	case si := <-g.sessions:
		t.Errorf("session for %v", si.Peer)
	default:
	}
	return r
}

func TestEnrollDoesNotOpenSessionsWithoutCertificate(t *testing.T) {
	g := startEnrollGateway(t, true)
	g.refusedWithoutCertificate(t, ALPN)
	g.refusedWithoutCertificate(t, ALPN, "h2")
}

func TestEnrollOffIsRefused(t *testing.T) {
	g := startEnrollGateway(t, false)
	g.refusedWithoutCertificate(t, enroll.ALPN)
}

func TestEnrollStopDoesNotWaitForSilentLaptop(t *testing.T) {
	g := startEnrollGateway(t, true)
	conn, err := g.dial(t, enroll.ALPN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	g.srv.Stop()
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Stop took %v with a silent enrollment open", d)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read after Stop: %v, want the connection closed", err)
	}
}

// TestEnrollRefusalsSpendTheSourcesBudget: a refused enrollment (a guessed
// token) is charged to its source like a failed handshake, so guessing
// tokens is rate-limited as guessing keys is; an enrollment that works is
// not charged.
func TestEnrollRefusalsSpendTheSourcesBudget(t *testing.T) {
	g := startEnrollGateway(t, true, func(c *ServerConfig) { c.HandshakeRate, c.HandshakeBurst = 0.001, 2 })
	src := netip.MustParseAddr("127.0.0.1")
	token, _, err := g.ca.CreateToken(authority.TokenOptions{Name: "alice", Groups: []string{"eng"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.enroll(t, token); err != nil {
		t.Fatal(err)
	}
	if !g.srv.gate.limiter.hasBudget(src, time.Now()) {
		t.Fatal("a successful enrollment spent the source's failure budget")
	}
	for i := range 2 {
		if _, err := g.enroll(t, "tw1-"+strings.Repeat("a", 52)); !errors.Is(err, enroll.ErrRefused) {
			t.Fatalf("guess %d: %v, want a refusal", i, err)
		}
	}
	// The slot is released after the reply is written: wait for it.
	deadline := time.Now().Add(5 * time.Second)
	for g.srv.gate.inFlight() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if g.srv.gate.limiter.hasBudget(src, time.Now()) {
		t.Error("two refused enrollments left the source's failure budget (burst 2) unspent")
	}
}
