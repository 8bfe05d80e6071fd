package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/twoway/twoway/pki/pkitest"
)

// TestProbeExitStatus: probe fails (exit status 1) when a check asked for
// fails, the chain against --ca or the server's answer to --cert, and
// succeeds when they pass.
func TestProbeExitStatus(t *testing.T) {
	h := pkitest.NewHierarchy(t)
	other := pkitest.NewHierarchy(t)
	srv := h.ServerCA.Server(t, "127.0.0.1")
	pool := x509.NewCertPool()
	for _, c := range h.ClientBundle() {
		pool.AddCert(c)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{srv.TLSCertificate()},
		ClientAuth:   tls.RequireAndVerifyClientCert, ClientCAs: pool,
		MinVersion: tls.VersionTLS13,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				_ = c.(*tls.Conn).Handshake()
				_, _ = c.Read(make([]byte, 1))
			}(c)
		}
	}()
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	goodCA := write("good.crt", pkitest.PEM(h.ServerBundle()...))
	wrongCA := write("wrong.crt", pkitest.PEM(other.ServerBundle()...))
	alice := h.ClientCA.Client(t, "alice")
	mallory := other.ClientCA.Client(t, "mallory")
	aliceCrt, aliceKey := write("alice.crt", pkitest.PEM(alice.Certs()...)), write("alice.key", pkitest.KeyPEM(t, alice.Key))
	malCrt, malKey := write("mallory.crt", pkitest.PEM(mallory.Certs()...)), write("mallory.key", pkitest.KeyPEM(t, mallory.Key))
	addr := ln.Addr().String()

	for _, c := range []struct {
		name string
		args []string
		fail bool
	}{
		{"no checks asked for", []string{"probe", addr}, false},
		{"chain verifies", []string{"probe", addr, "--ca", goodCA}, false},
		{"chain does not verify", []string{"probe", addr, "--ca", wrongCA}, true},
		{"certificate accepted", []string{"probe", addr, "--ca", goodCA, "--cert", aliceCrt, "--key", aliceKey}, false},
		{"certificate refused", []string{"probe", addr, "--ca", goodCA, "--cert", malCrt, "--key", malKey}, true},
		{"certificate refused, json", []string{"probe", addr, "--ca", goodCA, "--cert", malCrt, "--key", malKey, "--json"}, true},
	} {
		out, err := runCLI(t, c.args...)
		var ee exitError
		switch {
		case c.fail && (!errors.As(err, &ee) || ee.code != 1):
			t.Errorf("%s: error %v, want exit status 1\n%s", c.name, err, out)
		case !c.fail && err != nil:
			t.Errorf("%s: %v\n%s", c.name, err, out)
		}
	}
}
