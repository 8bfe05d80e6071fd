package main

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twoway/twoway/authority"
	"github.com/twoway/twoway/pki"
)

// TestProcessStaleCRL: a gateway with crl_stale = "reject" whose CRL is
// past its next update says so at start and refuses the client, naming the
// check; a fresh CRL and SIGHUP let the client in.
func TestProcessStaleCRL(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	echo := echoServer(t)
	g := startProcGatewayWith(t, "frank", echo, `crl_stale = "reject"`, func(g *procGateway) {
		// A CRL signed by the client CA whose next update was an hour ago,
		// numbered like the one the CA published (1), so that the CA's
		// next one (2) is newer: a reload refuses an older number.
		ca := g.res.ClientCA
		key, err := pki.LoadPrivateKey(filepath.Join(ca.Dir, authority.CAKeyFile), nil)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
			Number: big.NewInt(1), ThisUpdate: now.Add(-2 * time.Hour), NextUpdate: now.Add(-time.Hour),
		}, ca.Cert, key)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(ca.Dir, authority.CRLFile), pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), 0o644); err != nil {
			t.Fatal(err)
		}
	})
	g.gw.waitLog("revocation list is stale (past its next update): publish a new one (twoway pki crl) and reload", 5*time.Second,
		func(l map[string]any) bool { return l["crl_number"] == "1" })

	fwd := startProc(t, "forward", "--server", g.addr, "--cert", g.cli.CertFile, "--key", g.cli.KeyFile,
		"--ca", filepath.Join(g.dir, "pki/server-ca/bundle.crt"), "--control-socket", "off", "-L", "127.0.0.1:0:"+echo)
	g.gw.waitLog("connection refused", 10*time.Second, func(l map[string]any) bool {
		return l["check"] == "revocation" && strings.Contains(fmt.Sprint(l), "stale")
	})

	// Publish a fresh CRL and reload: the client gets in.
	if _, _, err := g.res.ClientCA.CRL(authority.CRLOptions{}); err != nil {
		t.Fatal(err)
	}
	g.gw.cmd.Process.Signal(syscall.SIGHUP)
	g.gw.waitLog("reloaded configuration, certificates and CRLs", 5*time.Second, nil)
	fwd.waitLog("connected to gateway", 30*time.Second, nil)
}
