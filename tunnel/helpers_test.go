package tunnel

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/pki/pkitest"
	"github.com/twoway/twoway/policy"
	"go.uber.org/goleak"
)

// memCreds are in-memory Credentials whose verifier can be swapped, the
// way a pki.Store reload would.
type memCreds struct {
	cert atomic.Pointer[tls.Certificate]
	ver  atomic.Pointer[pki.Verifier]
}

func (m *memCreds) Certificate() *tls.Certificate { return m.cert.Load() }
func (m *memCreds) Verifier() *pki.Verifier       { return m.ver.Load() }

func newCreds(t testing.TB, leaf *pkitest.Leaf, bundle []*x509.Certificate, crls ...*x509.RevocationList) *memCreds {
	t.Helper()
	m := &memCreds{}
	if leaf != nil {
		c := leaf.TLSCertificate()
		m.cert.Store(&c)
	}
	m.setVerifier(t, bundle, crls...)
	return m
}

func (m *memCreds) setVerifier(t testing.TB, bundle []*x509.Certificate, crls ...*x509.RevocationList) {
	t.Helper()
	v, err := pki.NewVerifier(bundle, crls)
	if err != nil {
		t.Fatal(err)
	}
	m.ver.Store(v)
}

// fakePolicy stands in for package policy: every function is optional and
// absent ones allow, with rule "test".
type fakePolicy struct {
	admit func(*pki.Identity) policy.Decision
	dial  func(*pki.Identity, policy.Target) policy.Decision
	bind  func(*pki.Identity, netip.Addr, uint16) policy.Decision
}

func (p *fakePolicy) Admit(id *pki.Identity) policy.Decision {
	if p.admit != nil {
		return p.admit(id)
	}
	return policy.Decision{Allow: true, Rule: "test"}
}

func (p *fakePolicy) Dial(id *pki.Identity, t policy.Target) policy.Decision {
	if p.dial != nil {
		return p.dial(id, t)
	}
	return policy.Decision{Allow: true, Rule: "test"}
}

func (p *fakePolicy) Bind(id *pki.Identity, a netip.Addr, port uint16) policy.Decision {
	if p.bind != nil {
		return p.bind(id, a, port)
	}
	return policy.Decision{Allow: true, Rule: "test"}
}

func (p *fakePolicy) Honour(id *pki.Identity) *pki.Identity { return id }

func (p *fakePolicy) Grants(id *pki.Identity) []string {
	return []string{"test grants for " + id.Name()}
}

// testLogger discards unless TUNNEL_TEST_LOG is set, then writes to stderr
// (t.Log cannot be used from goroutines that may outlive a subtest).
func testLogger() *slog.Logger {
	if os.Getenv("TUNNEL_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// fixture is a PKI hierarchy with a gateway and a client certificate.
type fixture struct {
	h           *pkitest.Hierarchy
	serverLeaf  *pkitest.Leaf
	clientLeaf  *pkitest.Leaf
	serverCreds *memCreds
	clientCreds *memCreds
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	h := pkitest.NewHierarchy(t)
	f := &fixture{h: h}
	f.serverLeaf = h.ServerCA.Server(t, "127.0.0.1")
	f.clientLeaf = h.ClientCA.Client(t, "alice", "eng")
	f.serverCreds = newCreds(t, f.serverLeaf, h.ClientBundle())
	f.clientCreds = newCreds(t, f.clientLeaf, h.ServerBundle())
	return f
}

// testServerConfig is a server on a loopback port with fast timeouts.
func (f *fixture) serverConfig(pol Policy) ServerConfig {
	if pol == nil {
		pol = &fakePolicy{}
	}
	return ServerConfig{
		Listen:                 "127.0.0.1:0",
		Credentials:            f.serverCreds,
		Policy:                 pol,
		HandshakeTimeout:       5 * time.Second,
		HandshakeRate:          0, // off
		MaxSessionsPerIdentity: DefaultMaxSessionsPerIdentity,
		DrainTimeout:           5 * time.Second,
		DialTimeout:            5 * time.Second,
	}
}

func startServer(t testing.TB, cfg ServerConfig) *Server {
	t.Helper()
	s, err := NewServer(cfg, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// clientConfig connects to srv with the fixture's client certificate.
func (f *fixture) clientConfig(addr string, fwds ...Forward) ClientConfig {
	return ClientConfig{
		Endpoints:        []string{addr},
		Credentials:      f.clientCreds,
		Forwards:         fwds,
		BackoffMin:       10 * time.Millisecond,
		BackoffMax:       200 * time.Millisecond,
		SessionWait:      10 * time.Second,
		HandshakeTimeout: 5 * time.Second,
		DrainTimeout:     5 * time.Second,
	}
}

// sessionEvents collects OnSession and OnDisconnect calls.
type sessionEvents struct {
	up   chan SessionInfo
	down chan error
}

func (e *sessionEvents) hook(cfg *ClientConfig) {
	e.up = make(chan SessionInfo, 16)
	e.down = make(chan error, 16)
	cfg.OnSession = func(si SessionInfo) { e.up <- si }
	cfg.OnDisconnect = func(err error) { e.down <- err }
}

func startClient(t testing.TB, cfg ClientConfig) *Client {
	t.Helper()
	c, err := NewClient(cfg, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	return c
}

func waitFor[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(20 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
	var zero T
	return zero
}

func mustForward(t testing.TB, kind ForwardKind, listen, target string) Forward {
	t.Helper()
	f := Forward{Kind: kind, Listen: listen, Target: target}
	if err := f.Validate(); err != nil {
		t.Fatal(err)
	}
	return f
}

// target is a loopback TCP server running handle for each connection.
type testTarget struct {
	ln net.Listener
	wg sync.WaitGroup
}

func startTarget(t testing.TB, handle func(net.Conn)) *testTarget {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tt := &testTarget{ln: ln}
	tt.wg.Add(1)
	go func() {
		defer tt.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tt.wg.Add(1)
			go func() {
				defer tt.wg.Done()
				defer c.Close()
				handle(c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); tt.wg.Wait() })
	return tt
}

func (tt *testTarget) addr() string { return tt.ln.Addr().String() }

// echo copies the connection back to itself and half-closes when the
// peer does.
func echo(c net.Conn) {
	_, _ = io.Copy(c, c)
	_ = c.(*net.TCPConn).CloseWrite()
}

// testHelpers ignores the goroutines of the tests' own loopback targets
// (startTarget), which run until the test's cleanup, so a check in the
// middle of a test sees only what the package under test started.
var testHelpers = []goleak.Option{
	goleak.IgnoreAnyFunction("github.com/twoway/twoway/tunnel.startTarget.func1"),
	goleak.IgnoreAnyFunction("github.com/twoway/twoway/tunnel.startTarget.func1.1"),
}

// checkNoLeaks fails if goroutines outlive what the test has stopped,
// beyond the test helpers' and those opts ignore. goleak looks again for a
// bounded time, since goroutines yamux starts without waiting for them (ping
// replies, open timers) end just after their session is shut down. TestMain
// checks the whole package once every test has run.
func checkNoLeaks(t testing.TB, opts ...goleak.Option) {
	t.Helper()
	goleak.VerifyNone(t, append(opts, testHelpers...)...)
}

// isRefusedLocally reports whether a local connection was closed on us
// without data: reset or EOF.
func isRefusedLocally(err error) bool {
	return errors.Is(err, io.EOF) || strings.Contains(fmtErr(err), "reset")
}

func fmtErr(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func contextWithCancel() (context.Context, context.CancelFunc) {
	return context.WithCancel(context.Background())
}
