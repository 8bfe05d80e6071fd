package tunnel

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/pki/pkitest"
	"github.com/twoway/twoway/policy"
)

// TestHostileClients connects peers that must be refused and checks that
// the gateway refuses each one at the right stage, for the right reason,
// and that the peer gets no session.
func TestHostileClients(t *testing.T) {
	f := newFixture(t)
	h := f.h
	revoked := h.ClientCA.Client(t, "mallory")
	f.serverCreds.setVerifier(t, h.ClientBundle(), h.ClientCA.CRL(t, 1, revoked.Cert))

	other := pkitest.NewRoot(t, "other root").Sub(t, "other client CA")
	clientEKU := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	expired := h.ClientCA.Issue(t, pkitest.LeafOptions{CommonName: "old", EKU: clientEKU, NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	future := h.ClientCA.Issue(t, pkitest.LeafOptions{CommonName: "future", EKU: clientEKU, NotBefore: time.Now().Add(time.Hour), NotAfter: time.Now().Add(48 * time.Hour)})

	refusals := make(chan Refusal, 16)
	cfg := f.serverConfig(nil)
	cfg.HandshakeTimeout = 500 * time.Millisecond
	cfg.OnRefuse = func(r Refusal) { refusals <- r }
	var sessions = make(chan SessionInfo, 16)
	cfg.OnSession = func(si SessionInfo) { sessions <- si }
	srv := startServer(t, cfg)
	addr := srv.Addr().String()

	tlsClient := func(leaf *pkitest.Leaf, mutate func(*tls.Config)) func() error {
		return func() error {
			tc := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{ALPN}, MinVersion: tls.VersionTLS12}
			if leaf != nil {
				// Sent even when its issuer is not among the CA names the
				// gateway asks for (crypto/tls would otherwise hold it back):
				// an attacker does not have to be polite.
				cert := leaf.TLSCertificate()
				tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
			}
			if mutate != nil {
				mutate(tc)
			}
			conn, err := tls.Dial("tcp", addr, tc)
			if err != nil {
				return err
			}
			defer conn.Close()
			// With TLS 1.3 the client finishes first; the gateway's
			// verdict on our certificate arrives as an alert on read.
			_, err = conn.Read(make([]byte, 1))
			return err
		}
	}
	rawClient := func(data []byte, hold bool) func() error {
		return func() error {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				return err
			}
			defer conn.Close()
			if _, err := conn.Write(data); err != nil {
				return err
			}
			// Either way the gateway must be the one to end it: after
			// garbage at once, after stalling at its handshake timeout.
			_, err = io.ReadAll(conn)
			_ = hold
			return err
		}
	}
	// A ClientHello cut off halfway, then silence.
	partialHello := []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03}

	cases := []struct {
		name      string
		run       func() error
		stage     string
		want      error  // matched with errors.Is, if set
		contains  string // else matched against the error text
		presented string // the leaf CN the refusal should name
	}{
		{"no certificate", tlsClient(nil, nil), "tls", nil, "certificate", ""},
		{"wrong CA", tlsClient(other.Client(t, "eve"), nil), "verify", pki.ErrUntrusted, "", "eve"},
		{"sibling CA under the same root", tlsClient(h.ServerCA.Client(t, "sneaky"), nil), "verify", pki.ErrUntrusted, "", "sneaky"},
		{"expired", tlsClient(expired, nil), "verify", pki.ErrExpired, "", "old"},
		{"not yet valid", tlsClient(future, nil), "verify", pki.ErrNotYetValid, "", "future"},
		{"revoked", tlsClient(revoked, nil), "verify", pki.ErrRevoked, "", "mallory"},
		{"server certificate used as client certificate", tlsClient(f.serverLeaf, nil), "verify", pki.ErrWrongUsage, "", "127.0.0.1"},
		{"TLS 1.2 only", tlsClient(f.clientLeaf, func(c *tls.Config) { c.MaxVersion = tls.VersionTLS12 }), "tls", nil, "version", ""},
		{"no ALPN", tlsClient(f.clientLeaf, func(c *tls.Config) { c.NextProtos = nil }), "alpn", ErrALPN, "", "alice"},
		{"other ALPN", tlsClient(f.clientLeaf, func(c *tls.Config) { c.NextProtos = []string{"h2"} }), "tls", nil, "protocol", ""},
		{"garbage bytes", rawClient([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), false), "tls", nil, "", ""},
		{"stops mid-handshake", rawClient(partialHello, true), "tls", nil, "", ""},
		{"garbage after a valid handshake", func() error {
			conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{ALPN}, Certificates: []tls.Certificate{f.clientLeaf.TLSCertificate()}})
			if err != nil {
				return err
			}
			defer conn.Close()
			conn.Write([]byte("this is not yamux at all, not even close"))
			_, err = io.ReadAll(conn)
			return err
		}, "hello", nil, "control stream", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			clientErr := tc.run()
			r := waitFor(t, refusals, "refusal")
			if r.Stage != tc.stage {
				t.Fatalf("stage %q, want %q (err %v)", r.Stage, tc.stage, r.Err)
			}
			if tc.want != nil && !errors.Is(r.Err, tc.want) {
				t.Fatalf("refusal error %v, want %v", r.Err, tc.want)
			}
			if tc.contains != "" && !strings.Contains(r.Err.Error(), tc.contains) {
				t.Fatalf("refusal error %q does not mention %q", r.Err, tc.contains)
			}
			if tc.presented != "" {
				id := r.Presented
				if id == nil {
					id = r.Identity
				}
				if id == nil || id.CommonName != tc.presented {
					t.Fatalf("refusal names %+v, want %q", id, tc.presented)
				}
			}
			if r.Remote == nil || !strings.HasPrefix(r.Remote.String(), "127.0.0.1:") {
				t.Fatalf("refusal remote %v", r.Remote)
			}
			if tc.stage != "tls" && tc.stage != "hello" && clientErr == nil {
				t.Fatal("client saw no error")
			}
			if time.Since(start) > 5*time.Second {
				t.Fatalf("refusal took %s", time.Since(start))
			}
		})
	}
	select {
	case si := <-sessions:
		t.Fatalf("a hostile client got a session: %+v", si.Peer)
	default:
	}
	if n := len(srv.Sessions()); n != 0 {
		t.Fatalf("%d sessions left", n)
	}
}

// TestHostileGateways points the client at gateways it must not accept.
func TestHostileGateways(t *testing.T) {
	f := newFixture(t)
	h := f.h
	other := pkitest.NewRoot(t, "other root").Sub(t, "other server CA")
	otherPin := pki.SPKIPin(other.Cert)

	serve := func(t *testing.T, leaf *pkitest.Leaf, alpn []string) string {
		cert := leaf.TLSCertificate()
		ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: alpn, MinVersion: tls.VersionTLS13})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.(*tls.Conn).Handshake()
				c.Close()
			}
		}()
		t.Cleanup(func() { ln.Close(); <-done })
		return ln.Addr().String()
	}
	cases := []struct {
		name   string
		leaf   *pkitest.Leaf
		alpn   []string
		mutate func(*ClientConfig)
		want   error
	}{
		{"wrong CA", other.Server(t, "127.0.0.1"), []string{ALPN}, nil, pki.ErrUntrusted},
		{"client CA sibling", h.ClientCA.Server(t, "127.0.0.1"), []string{ALPN}, nil, pki.ErrUntrusted},
		{"client certificate as server certificate", h.ServerCA.Client(t, "127.0.0.1"), []string{ALPN}, nil, pki.ErrWrongUsage},
		{"name mismatch", f.serverLeaf, []string{ALPN}, func(c *ClientConfig) { c.ServerName = "gw.example" }, pki.ErrNameMismatch},
		{"pin mismatch", f.serverLeaf, []string{ALPN}, func(c *ClientConfig) { c.Pins = []string{otherPin} }, pki.ErrPinMismatch},
		{"no ALPN", f.serverLeaf, nil, nil, ErrALPN},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr := serve(t, tc.leaf, tc.alpn)
			cfg := f.clientConfig(addr)
			if tc.mutate != nil {
				tc.mutate(&cfg)
			}
			c, err := NewClient(cfg, testLogger())
			if err != nil {
				t.Fatal(err)
			}
			c.ctx, c.cancel = contextWithCancel()
			defer c.cancel()
			_, err = c.connect(addr)
			if !errors.Is(err, tc.want) {
				t.Fatalf("connect: %v, want %v", err, tc.want)
			}
		})
	}
	// The right pin is accepted.
	srv := startServer(t, f.serverConfig(nil))
	cfg := f.clientConfig(srv.Addr().String())
	cfg.Pins = []string{pki.SPKIPin(h.ServerCA.Cert)}
	c, _ := NewClient(cfg, testLogger())
	c.ctx, c.cancel = contextWithCancel()
	defer c.cancel()
	cs, err := c.connect(srv.Addr().String())
	if err != nil {
		t.Fatalf("pinned connect: %v", err)
	}
	cs.close(ErrStopped)
	cs.wait()
}

// TestRefusedClientLearnsWhy checks what our own client reports when the
// gateway refuses it: a TLS alert for a bad certificate, a hello error for
// a policy denial.
func TestRefusedClientLearnsWhy(t *testing.T) {
	f := newFixture(t)
	revoked := f.h.ClientCA.Client(t, "mallory")
	f.serverCreds.setVerifier(t, f.h.ClientBundle(), f.h.ClientCA.CRL(t, 1, revoked.Cert))
	pol := &fakePolicy{admit: func(id *pki.Identity) policy.Decision {
		return policy.Decision{Allow: id.CommonName != "bob", Rule: "no bobs"}
	}}
	srv := startServer(t, f.serverConfig(pol))

	connect := func(leaf *pkitest.Leaf) error {
		cfg := f.clientConfig(srv.Addr().String())
		cfg.Credentials = newCreds(t, leaf, f.h.ServerBundle())
		c, err := NewClient(cfg, testLogger())
		if err != nil {
			t.Fatal(err)
		}
		c.ctx, c.cancel = contextWithCancel()
		defer c.cancel()
		cs, err := c.connect(srv.Addr().String())
		if err == nil {
			cs.close(ErrStopped)
			cs.wait()
		}
		return err
	}
	if err := connect(revoked); err == nil || !strings.Contains(err.Error(), "bad certificate") {
		t.Fatalf("revoked client: %v", err)
	}
	err := connect(f.h.ClientCA.Client(t, "bob"))
	var he *HelloError
	if !errors.Is(err, ErrDenied) || !errors.As(err, &he) || !strings.Contains(he.Message, "no bobs") {
		t.Fatalf("denied client: %v", err)
	}
}
