package probe_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/pki/pkitest"
	"github.com/twoway/twoway/probe"
)

// serve runs a TLS server on loopback that answers one byte to each
// connection, until the test ends.
func serve(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if err := c.(*tls.Conn).Handshake(); err != nil {
					return
				}
				c.Write([]byte("x"))
				io.Copy(io.Discard, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func TestProbe(t *testing.T) {
	h := pkitest.NewHierarchy(t)
	srv := h.ServerCA.Server(t, "127.0.0.1")
	srvCert := srv.TLSCertificate()
	clientPool := x509.NewCertPool()
	clientPool.AddCert(h.ClientCA.Cert)
	oneWay := serve(t, &tls.Config{Certificates: []tls.Certificate{srvCert}})
	twoWay := serve(t, &tls.Config{Certificates: []tls.Certificate{srvCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clientPool, MinVersion: tls.VersionTLS13})
	tls12 := serve(t, &tls.Config{Certificates: []tls.Certificate{srvCert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clientPool, MaxVersion: tls.VersionTLS12})

	ver, err := pki.NewVerifier(h.ServerBundle(), nil)
	if err != nil {
		t.Fatal(err)
	}
	good := h.ClientCA.Client(t, "alice").TLSCertificate()
	wrong := pkitest.NewRoot(t, "stranger").Client(t, "mallory").TLSCertificate()

	run := func(addr string, cert *tls.Certificate, v *pki.Verifier) *probe.Result {
		t.Helper()
		r, err := probe.Run(context.Background(), probe.Options{Addr: addr, ClientCert: cert, Verifier: v, AlertWait: 500 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	r := run(oneWay, nil, ver)
	if r.ClientCertRequested || r.ClientCertAccepted != nil {
		t.Errorf("one-way server reported as asking for a client cert: %+v", r)
	}
	if !r.ServerVerified || r.TLSVersion != "TLS 1.3" || len(r.Chain) != 2 || r.Chain[0].SPKIPin != pki.SPKIPin(srv.Cert) {
		t.Errorf("one-way: %+v", r)
	}

	r = run(twoWay, &good, ver)
	if !r.ClientCertRequested || !r.ClientCertSent || r.ClientCertAccepted == nil || !*r.ClientCertAccepted {
		t.Errorf("two-way with a good cert: %+v", r)
	}
	if len(r.AcceptableCAs) != 1 || !strings.Contains(r.AcceptableCAs[0], "test client CA") {
		t.Errorf("acceptable CAs %q", r.AcceptableCAs)
	}

	for name, tc := range map[string]struct {
		addr string
		cert *tls.Certificate
	}{
		"TLS 1.3 wrong CA": {twoWay, &wrong},
		"TLS 1.3 no cert":  {twoWay, nil},
		"TLS 1.2 wrong CA": {tls12, &wrong},
		"TLS 1.2 no cert":  {tls12, nil},
	} {
		r := run(tc.addr, tc.cert, ver)
		if !r.ClientCertRequested || r.ClientCertAccepted == nil || *r.ClientCertAccepted || r.ClientCertError == "" {
			t.Errorf("%s: %+v", name, r)
		}
	}

	// Against the wrong CA bundle the server is reported untrusted.
	other, _ := pki.NewVerifier(h.ClientBundle(), nil)
	if r := run(oneWay, nil, other); r.ServerVerified || r.ServerError == "" {
		t.Errorf("untrusted server reported verified: %+v", r)
	}
}

func TestProbeConnectError(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	if _, err := probe.Run(context.Background(), probe.Options{Addr: addr, Timeout: time.Second}); err == nil {
		t.Fatal("probe of a closed port succeeded")
	}
}

// A server certificate that expired hours ago must not read as "0 days
// left": days left are floored, as in `twoway status`.
func TestProbeRecentlyExpired(t *testing.T) {
	h := pkitest.NewHierarchy(t)
	srv := h.ServerCA.Issue(t, pkitest.LeafOptions{
		CommonName: "127.0.0.1", IPs: []net.IP{net.ParseIP("127.0.0.1")},
		EKU:       []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-5 * time.Hour),
	})
	addr := serve(t, &tls.Config{Certificates: []tls.Certificate{srv.TLSCertificate()}})
	ver, err := pki.NewVerifier(h.ServerBundle(), nil)
	if err != nil {
		t.Fatal(err)
	}
	r, err := probe.Run(context.Background(), probe.Options{Addr: addr, Verifier: ver})
	if err != nil {
		t.Fatal(err)
	}
	if r.ServerVerified {
		t.Errorf("expired server reported verified: %+v", r)
	}
	if d := r.Chain[0].DaysLeft; d >= 0 {
		t.Errorf("certificate expired 5 hours ago has DaysLeft %d, want negative", d)
	}
}
