package inspect

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/twoway/twoway/authority"
	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/pki/pkitest"
)

// testNow is the instant the inspect tests look at certificates from.
var testNow = time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)

func ecKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// sign creates a certificate from tmpl signed by parent (self-signed when
// parent is nil).
func sign(t *testing.T, tmpl *x509.Certificate, pub crypto.PublicKey, parent *x509.Certificate, parentKey crypto.Signer) *x509.Certificate {
	t.Helper()
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type testCA struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newTestCA(t *testing.T) testCA {
	t.Helper()
	key := ecKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "inspect root"},
		NotBefore:             testNow.Add(-24 * time.Hour),
		NotAfter:              testNow.Add(3650 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            1,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		PermittedDNSDomains:   []string{".corp.example"},
		ExcludedIPRanges:      []*net.IPNet{{IP: net.IPv4(10, 0, 0, 0).To4(), Mask: net.CIDRMask(8, 32)}},
	}
	return testCA{cert: sign(t, tmpl, key.Public(), nil, key), key: key}
}

func (ca testCA) leaf(t *testing.T, key crypto.Signer, notBefore, notAfter time.Time) *x509.Certificate {
	t.Helper()
	u, _ := url.Parse("spiffe://corp.example/alice")
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(0xbeef),
		Subject:               pkix.Name{CommonName: "alice", OrganizationalUnit: []string{"eng", "ops"}},
		DNSNames:              []string{"alice.corp.example"},
		IPAddresses:           []net.IP{net.ParseIP("192.0.2.7"), net.ParseIP("2001:db8::7")},
		EmailAddresses:        []string{"alice@corp.example"},
		URIs:                  []*url.URL{u},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		CRLDistributionPoints: []string{"http://crl.corp.example/client.crl"},
	}
	return sign(t, tmpl, key.Public(), ca.cert, ca.key)
}

func pemCerts(certs ...*x509.Certificate) []byte { return pkitest.PEM(certs...) }

func mustInspect(t *testing.T, data []byte, pw func() ([]byte, error)) *Report {
	t.Helper()
	r, err := inspectAt(data, pw, testNow)
	if err != nil {
		t.Fatalf("inspect: %v", err)
	}
	return r
}

func staticPassword(p string) func() ([]byte, error) {
	return func() ([]byte, error) { return []byte(p), nil }
}

func TestInspectCertificate(t *testing.T) {
	ca := newTestCA(t)
	key := ecKey(t)
	leaf := ca.leaf(t, key, testNow.Add(-time.Hour), testNow.Add(90*24*time.Hour+time.Hour))

	for _, tc := range []struct {
		name, encoding string
		data           []byte
	}{
		{"PEM", "PEM", pemCerts(leaf)},
		{"DER", "DER", leaf.Raw},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := mustInspect(t, tc.data, nil)
			if r.Type != TypeCertificate || r.Encoding != tc.encoding || len(r.Certificates) != 1 {
				t.Fatalf("got type %q encoding %q with %d certificates", r.Type, r.Encoding, len(r.Certificates))
			}
			c := r.Certificates[0]
			want := CertificateInfo{
				Subject:               "CN=alice,OU=eng+OU=ops",
				CommonName:            "alice",
				Groups:                []string{"eng", "ops"},
				DNSNames:              []string{"alice.corp.example"},
				IPAddresses:           []string{"192.0.2.7", "2001:db8::7"},
				Emails:                []string{"alice@corp.example"},
				URIs:                  []string{"spiffe://corp.example/alice"},
				Issuer:                "CN=inspect root",
				Serial:                "beef",
				NotBefore:             leaf.NotBefore,
				NotAfter:              leaf.NotAfter,
				Status:                pki.StatusValid,
				DaysLeft:              90,
				KeyUsage:              []string{"digitalSignature"},
				ExtKeyUsage:           []string{"clientAuth"},
				Key:                   KeyInfo{Algorithm: "ECDSA", Curve: "P-256", Bits: 256, SPKIPin: pki.SPKIPin(leaf)},
				SignatureAlgorithm:    "ECDSA-SHA256",
				Fingerprint:           pki.Fingerprint(leaf),
				SPKIPin:               pki.SPKIPin(leaf),
				AuthorityKeyID:        colonHex(ca.cert.SubjectKeyId),
				CRLDistributionPoints: []string{"http://crl.corp.example/client.crl"},
			}
			want.SubjectKeyID = colonHex(leaf.SubjectKeyId)
			gotJSON, _ := json.Marshal(c)
			wantJSON, _ := json.Marshal(want)
			if !bytes.Equal(gotJSON, wantJSON) {
				t.Errorf("certificate info\n got %s\nwant %s", gotJSON, wantJSON)
			}
			if c.Key.String() != "ECDSA P-256" {
				t.Errorf("key string %q", c.Key.String())
			}
		})
	}
}

func TestInspectCAChain(t *testing.T) {
	ca := newTestCA(t)
	leaf := ca.leaf(t, ecKey(t), testNow.Add(-time.Hour), testNow.Add(time.Hour))
	r := mustInspect(t, pemCerts(leaf, ca.cert), nil)
	if r.Type != TypeCertificateChain || len(r.Certificates) != 2 {
		t.Fatalf("type %q, %d certificates", r.Type, len(r.Certificates))
	}
	root := r.Certificates[1]
	if !root.IsCA || !root.SelfSigned || root.MaxPathLen == nil || *root.MaxPathLen != 1 {
		t.Errorf("root: is_ca=%v self_signed=%v max_path_len=%v", root.IsCA, root.SelfSigned, root.MaxPathLen)
	}
	if !slices.Equal(root.KeyUsage, []string{"keyCertSign", "cRLSign"}) {
		t.Errorf("root key usage %v", root.KeyUsage)
	}
	nc := root.NameConstraints
	if nc == nil || !slices.Equal(nc.PermittedDNS, []string{".corp.example"}) || !slices.Equal(nc.ExcludedIPs, []string{"10.0.0.0/8"}) {
		t.Errorf("name constraints %+v", nc)
	}
	if l := r.Certificates[0]; l.IsCA || l.MaxPathLen != nil || l.SelfSigned || l.NameConstraints != nil {
		t.Errorf("leaf reported as CA-ish: %+v", l)
	}

	// A CA with no path length limit reports none, and an explicit zero
	// is kept apart from "no limit".
	key := ecKey(t)
	for _, tc := range []struct {
		maxPathLen int
		zero       bool
		want       *int
	}{
		{-1, false, nil},
		{0, true, new(int)},
	} {
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "ca"}, NotBefore: testNow, NotAfter: testNow.Add(time.Hour),
			IsCA: true, BasicConstraintsValid: true, MaxPathLen: tc.maxPathLen, MaxPathLenZero: tc.zero}
		c := mustInspect(t, pemCerts(sign(t, tmpl, key.Public(), nil, key)), nil).Certificates[0]
		if (c.MaxPathLen == nil) != (tc.want == nil) || (c.MaxPathLen != nil && *c.MaxPathLen != *tc.want) {
			t.Errorf("MaxPathLen %d zero=%v: got %v", tc.maxPathLen, tc.zero, c.MaxPathLen)
		}
	}
}

func TestInspectValidityStatus(t *testing.T) {
	ca := newTestCA(t)
	key := ecKey(t)
	expired := ca.leaf(t, key, testNow.Add(-30*24*time.Hour), testNow.Add(-3*24*time.Hour-time.Hour))
	future := ca.leaf(t, key, testNow.Add(2*24*time.Hour), testNow.Add(40*24*time.Hour))
	soon := ca.leaf(t, key, testNow.Add(-time.Hour), testNow.Add(5*time.Hour))
	justExpired := ca.leaf(t, key, testNow.Add(-30*24*time.Hour), testNow.Add(-time.Hour))

	for _, tc := range []struct {
		name   string
		cert   *x509.Certificate
		status string
		days   int
	}{
		// Floored, as in twoway status: 3 days and an hour ago is -4,
		// an hour ago -1 (never 0 once expired).
		{"expired", expired, pki.StatusExpired, -4},
		{"just expired", justExpired, pki.StatusExpired, -1},
		{"not yet valid", future, pki.StatusNotYetValid, 40},
		{"expires today", soon, pki.StatusValid, 0},
	} {
		c := mustInspect(t, pemCerts(tc.cert), nil).Certificates[0]
		if c.Status != tc.status || c.DaysLeft != tc.days {
			t.Errorf("%s: status %q days %d, want %q %d", tc.name, c.Status, c.DaysLeft, tc.status, tc.days)
		}
	}
}

func TestInspectCertificatesAfterText(t *testing.T) {
	// openssl x509 -text writes a dump before the PEM block.
	ca := newTestCA(t)
	data := append([]byte("Certificate:\n    Data:\n        Version: 3 (0x2)\n"), pemCerts(ca.cert)...)
	r := mustInspect(t, data, nil)
	if r.Type != TypeCertificate || r.Certificates[0].CommonName != "inspect root" {
		t.Fatalf("got %+v", r)
	}
}

func TestInspectDERChain(t *testing.T) {
	ca := newTestCA(t)
	leaf := ca.leaf(t, ecKey(t), testNow.Add(-time.Hour), testNow.Add(time.Hour))
	r := mustInspect(t, append(slices.Clone(leaf.Raw), ca.cert.Raw...), nil)
	if r.Type != TypeCertificateChain || r.Encoding != "DER" || len(r.Certificates) != 2 {
		t.Fatalf("type %q encoding %q certs %d", r.Type, r.Encoding, len(r.Certificates))
	}
}

func TestInspectRequest(t *testing.T) {
	key := ecKey(t)
	u, _ := url.Parse("urn:device:42")
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:        pkix.Name{CommonName: "bob", OrganizationalUnit: []string{"sales"}},
		DNSNames:       []string{"bob.corp.example"},
		IPAddresses:    []net.IP{net.ParseIP("198.18.0.9")},
		EmailAddresses: []string{"bob@corp.example"},
		URIs:           []*url.URL{u},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	good := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	r := mustInspect(t, good, nil)
	if r.Type != TypeRequest || len(r.Requests) != 1 {
		t.Fatalf("type %q", r.Type)
	}
	q := r.Requests[0]
	if q.CommonName != "bob" || !slices.Equal(q.Groups, []string{"sales"}) || !slices.Equal(q.DNSNames, []string{"bob.corp.example"}) ||
		!slices.Equal(q.IPAddresses, []string{"198.18.0.9"}) || !slices.Equal(q.Emails, []string{"bob@corp.example"}) ||
		!slices.Equal(q.URIs, []string{"urn:device:42"}) || q.Key.String() != "ECDSA P-256" || !q.SignatureValid {
		t.Errorf("request info %+v", q)
	}

	// Flip a bit of the signature, which is at the end of the DER.
	bad := slices.Clone(der)
	bad[len(bad)-2] ^= 0x01
	q = mustInspect(t, bad, nil).Requests[0]
	if q.SignatureValid || q.SignatureError == "" {
		t.Errorf("tampered request: valid=%v error=%q", q.SignatureValid, q.SignatureError)
	}
}

func TestInspectCRL(t *testing.T) {
	ca := newTestCA(t)
	next := testNow.Add(-time.Hour) // already stale at testNow
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:     big.NewInt(7),
		ThisUpdate: testNow.Add(-48 * time.Hour),
		NextUpdate: next,
		RevokedCertificateEntries: []x509.RevocationListEntry{
			{SerialNumber: big.NewInt(0xbeef), RevocationTime: testNow.Add(-50 * time.Hour), ReasonCode: 1},
			{SerialNumber: big.NewInt(0x10), RevocationTime: testNow.Add(-49 * time.Hour)},
		},
	}, ca.cert, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	for _, data := range [][]byte{der, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})} {
		r := mustInspect(t, data, nil)
		if r.Type != TypeCRL || len(r.CRLs) != 1 {
			t.Fatalf("type %q", r.Type)
		}
		c := r.CRLs[0]
		if c.Issuer != "CN=inspect root" || c.Number != "7" || !c.ThisUpdate.Equal(testNow.Add(-48*time.Hour)) ||
			c.NextUpdate == nil || !c.NextUpdate.Equal(next) || !c.Stale {
			t.Errorf("CRL info %+v", c)
		}
		want := []RevokedEntry{
			{Serial: "beef", RevokedAt: testNow.Add(-50 * time.Hour), Reason: "keyCompromise"},
			{Serial: "10", RevokedAt: testNow.Add(-49 * time.Hour)},
		}
		if len(c.Revoked) != len(want) {
			t.Fatalf("revoked %+v", c.Revoked)
		}
		for i := range want {
			if c.Revoked[i].Serial != want[i].Serial || !c.Revoked[i].RevokedAt.Equal(want[i].RevokedAt) || c.Revoked[i].Reason != want[i].Reason {
				t.Errorf("revoked[%d] = %+v, want %+v", i, c.Revoked[i], want[i])
			}
		}
	}
}

func TestInspectPrivateKeys(t *testing.T) {
	ec := ecKey(t)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	sec1, _ := x509.MarshalECPrivateKey(ec)
	for _, tc := range []struct {
		name   string
		data   []byte
		format string
		key    string
		bits   int
	}{
		{"pkcs8 ecdsa", pkitest.KeyPEM(t, ec), "PKCS#8", "ECDSA P-256", 256},
		{"pkcs8 ed25519", pkitest.KeyPEM(t, ed), "PKCS#8", "Ed25519", 256},
		{"pkcs8 rsa", pkitest.KeyPEM(t, rsaKey), "PKCS#8", "RSA 2048", 2048},
		{"sec1", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), "SEC 1", "ECDSA P-256", 256},
		{"pkcs1", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}), "PKCS#1", "RSA 2048", 2048},
		{"pkcs8 DER", mustPKCS8(t, ec), "PKCS#8", "ECDSA P-256", 256},
		{"pkcs1 DER", x509.MarshalPKCS1PrivateKey(rsaKey), "PKCS#1", "RSA 2048", 2048},
		{"sec1 DER", sec1, "SEC 1", "ECDSA P-256", 256},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := mustInspect(t, tc.data, nil)
			if r.Type != TypePrivateKey || len(r.PrivateKeys) != 1 {
				t.Fatalf("type %q", r.Type)
			}
			k := r.PrivateKeys[0]
			if k.Format != tc.format || k.Encrypted || k.Key == nil || k.Key.String() != tc.key || k.Key.Bits != tc.bits {
				t.Errorf("got %+v key %+v", k, k.Key)
			}
			assertNoKeyMaterial(t, r, tc.data)
		})
	}
}

func mustPKCS8(t *testing.T, k crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// assertNoKeyMaterial checks that neither the key file nor its base64 body
// leaks into the JSON report.
func assertNoKeyMaterial(t *testing.T, r *Report, keyFile []byte) {
	t.Helper()
	out, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	der := keyFile
	if b, _ := pem.Decode(keyFile); b != nil {
		der = b.Bytes
	}
	// Any 16-byte window of the encoded key would be a leak.
	b64 := base64.StdEncoding.EncodeToString(der)
	for i := 0; i+24 <= len(b64); i += 24 {
		if bytes.Contains(out, []byte(b64[i:i+24])) {
			t.Fatalf("report contains key material: %s", out)
		}
	}
}

func TestInspectEncryptedKey(t *testing.T) {
	key := ecKey(t)
	data, err := authority.MarshalPrivateKeyPEM(key, []byte("s3cret"))
	if err != nil {
		t.Fatal(err)
	}

	t.Run("no password", func(t *testing.T) {
		r := mustInspect(t, data, nil)
		k := r.PrivateKeys[0]
		if !k.Encrypted || k.Key != nil || k.Format != "PKCS#8" {
			t.Fatalf("got %+v", k)
		}
		want := fmt.Sprintf("PBES2, PBKDF2-HMAC-SHA256 (%d iterations), AES-256-CBC", authority.KDFIterations)
		if k.Encryption != want {
			t.Errorf("encryption %q, want %q", k.Encryption, want)
		}
	})
	t.Run("password unavailable", func(t *testing.T) {
		r := mustInspect(t, data, func() ([]byte, error) { return nil, pki.ErrPasswordRequired })
		if k := r.PrivateKeys[0]; !k.Encrypted || k.Key != nil {
			t.Fatalf("got %+v", k)
		}
	})
	t.Run("password", func(t *testing.T) {
		r := mustInspect(t, data, staticPassword("s3cret"))
		k := r.PrivateKeys[0]
		if !k.Encrypted || k.Key == nil || k.Key.String() != "ECDSA P-256" {
			t.Fatalf("got %+v", k)
		}
		assertNoKeyMaterial(t, r, pkitest.KeyPEM(t, key))
	})
	t.Run("wrong password", func(t *testing.T) {
		_, err := inspectAt(data, staticPassword("nope"), testNow)
		if !errors.Is(err, pki.ErrBadPassword) {
			t.Fatalf("err = %v, want ErrBadPassword", err)
		}
	})
	t.Run("prompt error", func(t *testing.T) {
		boom := errors.New("terminal went away")
		_, err := inspectAt(data, func() ([]byte, error) { return nil, boom }, testNow)
		if !errors.Is(err, boom) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("DER", func(t *testing.T) {
		b, _ := pem.Decode(data)
		r := mustInspect(t, b.Bytes, staticPassword("s3cret"))
		if r.Encoding != "DER" || !r.PrivateKeys[0].Encrypted || r.PrivateKeys[0].Key.String() != "ECDSA P-256" {
			t.Fatalf("got %+v", r.PrivateKeys[0])
		}
	})
	t.Run("legacy PEM encryption", func(t *testing.T) {
		sec1, _ := x509.MarshalECPrivateKey(key)
		legacy := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Headers: map[string]string{
			"Proc-Type": "4,ENCRYPTED", "DEK-Info": "AES-256-CBC,00112233445566778899AABBCCDDEEFF",
		}, Bytes: sec1[:32]})
		k := mustInspect(t, legacy, staticPassword("x")).PrivateKeys[0]
		if !k.Encrypted || k.Encryption != "legacy PEM encryption (AES-256-CBC)" || k.Key == nil || k.Key.Algorithm != "ECDSA" {
			t.Fatalf("got %+v", k)
		}
	})
}

func TestInspectAsksPasswordOnce(t *testing.T) {
	a, _ := authority.MarshalPrivateKeyPEM(ecKey(t), []byte("pw"))
	b, _ := authority.MarshalPrivateKeyPEM(ecKey(t), []byte("pw"))
	calls := 0
	r := mustInspect(t, append(a, b...), func() ([]byte, error) { calls++; return []byte("pw"), nil })
	if calls != 1 || len(r.PrivateKeys) != 2 || r.PrivateKeys[1].Key == nil {
		t.Fatalf("calls=%d keys=%+v", calls, r.PrivateKeys)
	}
	// Nothing encrypted: never asked.
	calls = 0
	mustInspect(t, pemCerts(newTestCA(t).cert), func() ([]byte, error) { calls++; return nil, nil })
	if calls != 0 {
		t.Fatalf("asked for a password for a certificate")
	}
}

func TestInspectBundleMatchesKey(t *testing.T) {
	ca := newTestCA(t)
	key := ecKey(t)
	leaf := ca.leaf(t, key, testNow.Add(-time.Hour), testNow.Add(time.Hour))
	other := ecKey(t)
	data := slices.Concat(pemCerts(leaf, ca.cert), pkitest.KeyPEM(t, other), pkitest.KeyPEM(t, key),
		[]byte("-----BEGIN DH PARAMETERS-----\nMAYCAQACAQI=\n-----END DH PARAMETERS-----\n"))
	r := mustInspect(t, data, nil)
	if r.Type != TypeBundle {
		t.Fatalf("type %q", r.Type)
	}
	if r.PrivateKeys[0].MatchesCertificate != "" || r.PrivateKeys[1].MatchesCertificate != "CN=alice,OU=eng+OU=ops" {
		t.Errorf("matches: %q, %q", r.PrivateKeys[0].MatchesCertificate, r.PrivateKeys[1].MatchesCertificate)
	}
	if !slices.Equal(r.Skipped, []string{"DH PARAMETERS"}) {
		t.Errorf("skipped %v", r.Skipped)
	}
}

func TestInspectPublicKey(t *testing.T) {
	key := ecKey(t)
	der, _ := x509.MarshalPKIXPublicKey(key.Public())
	r := mustInspect(t, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil)
	if r.Type != TypePublicKey || r.PublicKeys[0].String() != "ECDSA P-256" {
		t.Fatalf("got %+v", r)
	}
}

func TestInspectBadInput(t *testing.T) {
	ca := newTestCA(t)
	leaf := ca.leaf(t, ecKey(t), testNow.Add(-time.Hour), testNow.Add(time.Hour))
	good := pemCerts(leaf, ca.cert)
	first := pemCerts(leaf)

	// The second block with a line of its base64 body damaged.
	lines := strings.Split(string(good), "\n")
	mid := len(strings.Split(string(first), "\n")) + 3
	lines[mid] = "!!!!" + lines[mid][4:]
	corruptMiddle := []byte(strings.Join(lines, "\n"))

	// A block whose base64 is fine but whose DER is cut short.
	shortDER := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw[:len(leaf.Raw)/2]})

	for _, tc := range []struct {
		name string
		data []byte
		want error
		msg  string
	}{
		{"empty", nil, ErrEmptyFile, ""},
		{"whitespace", []byte("\n  \n"), ErrEmptyFile, ""},
		{"truncated PEM", good[:len(good)-40], ErrCorruptPEM, "1 of 2 PEM blocks"},
		{"corrupt middle block", corruptMiddle, ErrCorruptPEM, ""},
		{"only unknown PEM", []byte("-----BEGIN DH PARAMETERS-----\nMAYCAQACAQI=\n-----END DH PARAMETERS-----\n"), ErrUnknownFormat, "DH PARAMETERS"},
		{"text", []byte("hello, world\n"), ErrUnknownFormat, ""},
		{"truncated DER", leaf.Raw[:len(leaf.Raw)-10], ErrUnknownFormat, "truncated"},
		{"short DER in PEM", shortDER, nil, "PEM block 1 (CERTIFICATE)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := inspectAt(tc.data, nil, testNow)
			if err == nil {
				t.Fatalf("no error; report %+v", r)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("err %q does not mention %q", err, tc.msg)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
}

func FuzzInspect(f *testing.F) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fuzz"}, NotBefore: testNow, NotAfter: testNow.Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		f.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		f.Fatal(err)
	}
	p12, err := authority.ExportPKCS12(key, []*x509.Certificate{cert}, []byte("pw"), authority.PKCS12Modern)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(der)
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	f.Add(p12)
	f.Fuzz(func(t *testing.T, data []byte) {
		// Must not panic; errors are fine.
		_, _ = inspectAt(data, staticPassword("pw"), testNow)
	})
}
