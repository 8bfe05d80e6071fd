package fleet

import (
	"context"
	"crypto/x509"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/twoway/twoway/fleet/fleettest"
	"github.com/twoway/twoway/ipam"
	"github.com/twoway/twoway/pki/pkitest"
	"go.etcd.io/etcd/client/pkg/v3/transport"
)

// writeLeaf writes l's certificate and key under dir and returns their
// paths.
func writeLeaf(t *testing.T, dir, name string, l *pkitest.Leaf) (certFile, keyFile string) {
	return pkitest.WriteFile(t, dir, name+".pem", pkitest.PEM(l.Cert)),
		pkitest.WriteFile(t, dir, name+"-key.pem", pkitest.KeyPEM(t, l.Key))
}

// TestMutualTLSToEtcd: a gateway with a client certificate from the CA
// etcd trusts joins and allocates; one without a certificate, or with one
// from another CA, is refused at Start.
func TestMutualTLSToEtcd(t *testing.T) {
	dir := t.TempDir()
	ca := pkitest.NewRoot(t, "etcd CA")
	caFile := pkitest.WriteFile(t, dir, "etcd-ca.pem", pkitest.PEM(ca.Cert))
	// etcd also dials itself (its gRPC gateway) with its server
	// certificate, so that one is a client certificate too.
	srvCert, srvKey := writeLeaf(t, dir, "etcd-server", ca.Issue(t, pkitest.LeafOptions{
		CommonName: "etcd", IPs: []net.IP{net.IPv4(127, 0, 0, 1)},
		EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}))
	gwCert, gwKey := writeLeaf(t, dir, "gw1", ca.Client(t, "gw1"))
	strangerCert, strangerKey := writeLeaf(t, dir, "stranger", pkitest.NewRoot(t, "other CA").Client(t, "stranger"))

	c, err := fleettest.StartCluster(filepath.Join(dir, "etcd"), 1, &transport.TLSInfo{
		CertFile: srvCert, KeyFile: srvKey, TrustedCAFile: caFile, ClientCertAuth: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		if err := c.PortsFree(); err != nil {
			t.Error(err)
		}
	})

	cfg := Config{Endpoints: c.Endpoints, Name: "gw1", CAFile: caFile, CertFile: gwCert, KeyFile: gwKey, LeaseTTL: 2 * time.Second}
	f, err := New(cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Start(context.Background()); err != nil {
		t.Fatalf("Start with a client certificate: %v", err)
	}
	t.Cleanup(f.Stop)
	p, err := ipam.NewWithStore(ipam.Config{IPv4: pool4}, f.Addresses(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if l, err := p.Acquire("alice", nil); err != nil || l.IPv4.Addr() != addr("198.18.0.2") {
		t.Fatalf("Acquire over mutual TLS: %v %v", l.IPv4, err)
	}

	for name, mod := range map[string]func(*Config){
		"no client certificate": func(c *Config) { c.CertFile, c.KeyFile = "", "" },
		"a stranger's":          func(c *Config) { c.CertFile, c.KeyFile = strangerCert, strangerKey },
	} {
		t.Run(name, func(t *testing.T) {
			bad := cfg
			mod(&bad)
			bad.DialTimeout = time.Second
			f, err := New(bad, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Start(context.Background()); err == nil {
				f.Stop()
				t.Fatal("Start succeeded")
			}
			f.Stop() // safe after a failed Start
		})
	}
}
