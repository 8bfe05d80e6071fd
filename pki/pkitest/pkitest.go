// Package pkitest builds throwaway certificate hierarchies in memory for
// tests: roots, intermediates, leaves with any validity or usage, and CRLs.
// It takes shortcuts a real CA must not (no database, no key protection).
package pkitest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/twoway/twoway/pki"
)

// CA is an in-memory certificate authority.
type CA struct {
	Cert   *x509.Certificate
	Key    crypto.Signer
	Parent *CA // nil for a root
}

// Leaf is an issued end-entity certificate with its key and the chain
// between it and the root (exclusive).
type Leaf struct {
	Cert  *x509.Certificate
	Key   crypto.Signer
	Chain []*x509.Certificate // issuing CAs, nearest first, root excluded
}

// LeafOptions describe a leaf. Zero validity means "valid now for a day".
type LeafOptions struct {
	CommonName string
	DNSNames   []string
	IPs        []net.IP
	Emails     []string
	Groups     []string
	EKU        []x509.ExtKeyUsage
	NotBefore  time.Time
	NotAfter   time.Time
	// Key, if set, is used instead of a fresh one (pin tests).
	Key crypto.Signer
}

func newKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	return n.Add(n, big.NewInt(1))
}

func ski(t testing.TB, pub crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha1.Sum(der) // RFC 5280 method 1 identifier, not a security use
	return sum[:]
}

// NewRoot makes a self-signed root CA valid for a year around now.
func NewRoot(t testing.TB, name string) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"twoway test"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		SubjectKeyId:          ski(t, key.Public()),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &CA{Cert: c, Key: key}
}

// Sub makes an intermediate CA under ca.
func (ca *CA) Sub(t testing.TB, name string) *CA {
	t.Helper()
	return ca.SubWithValidity(t, name, time.Now().Add(-time.Hour), time.Now().Add(180*24*time.Hour))
}

// SubWithValidity makes an intermediate CA with the given validity.
func (ca *CA) SubWithValidity(t testing.TB, name string, notBefore, notAfter time.Time) *CA {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"twoway test"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		SubjectKeyId:          ski(t, key.Public()),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &CA{Cert: c, Key: key, Parent: ca}
}

// Chain returns ca and its ancestors, nearest first, root included.
func (ca *CA) Chain() []*x509.Certificate {
	var out []*x509.Certificate
	for c := ca; c != nil; c = c.Parent {
		out = append(out, c.Cert)
	}
	return out
}

// Issue makes a leaf certificate.
func (ca *CA) Issue(t testing.TB, o LeafOptions) *Leaf {
	t.Helper()
	key := o.Key
	if key == nil {
		key = newKey(t)
	}
	nb, na := o.NotBefore, o.NotAfter
	if nb.IsZero() {
		nb = time.Now().Add(-time.Hour)
	}
	if na.IsZero() {
		na = time.Now().Add(24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: o.CommonName, OrganizationalUnit: o.Groups},
		DNSNames:              o.DNSNames,
		IPAddresses:           o.IPs,
		EmailAddresses:        o.Emails,
		NotBefore:             nb,
		NotAfter:              na,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           o.EKU,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	l := &Leaf{Cert: c, Key: key}
	for p := ca; p != nil && p.Parent != nil; p = p.Parent {
		l.Chain = append(l.Chain, p.Cert)
	}
	return l
}

// Client issues a clientAuth leaf named cn with the given groups.
func (ca *CA) Client(t testing.TB, cn string, groups ...string) *Leaf {
	t.Helper()
	return ca.Issue(t, LeafOptions{CommonName: cn, Groups: groups, EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
}

// Server issues a serverAuth leaf for host (a DNS name or IP literal).
func (ca *CA) Server(t testing.TB, host string) *Leaf {
	t.Helper()
	o := LeafOptions{CommonName: host, EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if ip := net.ParseIP(host); ip != nil {
		o.IPs = []net.IP{ip}
	} else {
		o.DNSNames = []string{host}
	}
	return ca.Issue(t, o)
}

// CRL makes a CRL signed by ca revoking the given certificates.
func (ca *CA) CRL(t testing.TB, number int64, revoked ...*x509.Certificate) *x509.RevocationList {
	t.Helper()
	tmpl := &x509.RevocationList{
		Number:     big.NewInt(number),
		ThisUpdate: time.Now().Add(-time.Minute),
		NextUpdate: time.Now().Add(24 * time.Hour),
	}
	for _, c := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{
			SerialNumber: c.SerialNumber, RevocationTime: time.Now().Add(-time.Minute), ReasonCode: 1,
		})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	return crl
}

// TLSCertificate returns the leaf and its chain as a tls.Certificate.
func (l *Leaf) TLSCertificate() tls.Certificate {
	tc := tls.Certificate{Certificate: [][]byte{l.Cert.Raw}, PrivateKey: l.Key, Leaf: l.Cert}
	for _, c := range l.Chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return tc
}

// Certs returns the leaf followed by its chain.
func (l *Leaf) Certs() []*x509.Certificate {
	return append([]*x509.Certificate{l.Cert}, l.Chain...)
}

// PEM encodes certificates as concatenated PEM blocks.
func PEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// CRLPEM encodes a CRL as PEM.
func CRLPEM(crl *x509.RevocationList) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: crl.Raw})
}

// KeyPEM encodes a key as unencrypted PKCS#8 PEM.
func KeyPEM(t testing.TB, k crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// WriteFile writes data under dir with mode 0600 and returns the path.
func WriteFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Hierarchy is the standard twoway layout: one root with a server CA and a
// client CA under it.
type Hierarchy struct {
	Root, ServerCA, ClientCA *CA
}

// NewHierarchy builds the standard layout.
func NewHierarchy(t testing.TB) *Hierarchy {
	t.Helper()
	root := NewRoot(t, "test root")
	return &Hierarchy{Root: root, ServerCA: root.Sub(t, "test server CA"), ClientCA: root.Sub(t, "test client CA")}
}

// ClientBundle is what a gateway trusts: the client CA and the root.
func (h *Hierarchy) ClientBundle() []*x509.Certificate { return h.ClientCA.Chain() }

// ServerBundle is what a client trusts: the server CA and the root.
func (h *Hierarchy) ServerBundle() []*x509.Certificate { return h.ServerCA.Chain() }

// Snapshot reads every file under dir, so a test can prove that a failed
// command changed nothing (compare with SameSnapshot).
func Snapshot(t testing.TB, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		out[p] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// SameSnapshot fails the test for every file that changed, appeared or
// disappeared between two snapshots.
func SameSnapshot(t testing.TB, before, after map[string]string) {
	t.Helper()
	for p, b := range before {
		if a, ok := after[p]; !ok || a != b {
			t.Errorf("%s changed or disappeared", p)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s appeared", p)
		}
	}
}

// Verifier is a pki.Verifier of bundle and crls, built as the gateway
// builds one; t fails if it cannot be.
func Verifier(t testing.TB, bundle []*x509.Certificate, crls ...*x509.RevocationList) *pki.Verifier {
	t.Helper()
	v, err := pki.NewVerifier(bundle, crls)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// CSR makes a certificate request signed by key (a fresh ECDSA P-256 key
// when nil) and returns it with the key, as a laptop asking for its first
// certificate would.
func CSR(t testing.TB, key crypto.Signer, subject pkix.Name) (*x509.CertificateRequest, crypto.Signer) {
	t.Helper()
	if key == nil {
		key = newKey(t)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: subject}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return csr, key
}
