package osstore

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"sync"
	"testing"
	"time"
)

// fakeStore is a store holding in-memory identities; its keys sign with
// Go's crypto as the OS would for the algorithm asked.
type fakeStore struct {
	cands []candidate
	pool  [][]byte
	keys  map[string]crypto.Signer // by thumbprint

	listErr error
	keyErr  error

	mu     sync.Mutex
	closed bool // closed at least once (a reopened key opens it again)
	closes int
	opened []*fakeKey
}

func newFakeStore() *fakeStore { return &fakeStore{keys: make(map[string]crypto.Signer)} }

// add puts an identity in the store.
func (s *fakeStore) add(where, label string, cert *x509.Certificate, key crypto.Signer) {
	s.cands = append(s.cands, candidate{der: cert.Raw, label: label, where: where, hasKey: key != nil, handle: thumbprint(cert.Raw)})
	if key != nil {
		s.keys[thumbprint(cert.Raw)] = key
	}
}

func (s *fakeStore) identities() ([]candidate, error) {
	if s.listErr != nil {
		return nil, s.listErr
	}
	// A copy, as an OS would hand out fresh results.
	return append([]candidate(nil), s.cands...), nil
}

func (s *fakeStore) certificates() ([][]byte, error) { return s.pool, nil }

func (s *fakeStore) openKey(c *candidate, pub crypto.PublicKey) (osKey, error) {
	if s.keyErr != nil {
		return nil, s.keyErr
	}
	k, ok := s.keys[c.handle.(string)]
	if !ok {
		return nil, errors.New("fake: no key")
	}
	fk := &fakeKey{key: k}
	s.mu.Lock()
	s.opened = append(s.opened, fk)
	s.mu.Unlock()
	return fk, nil
}

func (s *fakeStore) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.closes++
	return nil
}

// fakeKey signs like the OS: given the algorithm, it does exactly that
// and nothing else, so a wrong mapping makes a signature that does not
// verify. With cng set, ECDSA signatures come out as CNG makes them (r||s)
// and are converted as certstore_windows.go converts them.
type fakeKey struct {
	key crypto.Signer
	cng bool

	mu     sync.Mutex
	asked  []algorithm
	closed int
	fail   error // when set, sign fails with it (a token pulled out)
}

func (k *fakeKey) sign(alg algorithm, digest []byte) ([]byte, error) {
	k.mu.Lock()
	k.asked = append(k.asked, alg)
	fail := k.fail
	k.mu.Unlock()
	if fail != nil {
		return nil, fail
	}
	switch key := k.key.(type) {
	case *ecdsa.PrivateKey:
		if alg.rsa {
			return nil, errors.New("fake: RSA algorithm for an ECDSA key")
		}
		if !k.cng {
			return ecdsa.SignASN1(rand.Reader, key, digest)
		}
		r, s, err := ecdsa.Sign(rand.Reader, key, digest)
		if err != nil {
			return nil, err
		}
		n := (key.Curve.Params().BitSize + 7) / 8
		raw := make([]byte, 2*n)
		r.FillBytes(raw[:n])
		s.FillBytes(raw[n:])
		return ecdsaRawToDER(raw)
	case *rsa.PrivateKey:
		if !alg.rsa {
			return nil, errors.New("fake: ECDSA algorithm for an RSA key")
		}
		if alg.pss {
			return rsa.SignPSS(rand.Reader, key, alg.hash, digest, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		}
		return rsa.SignPKCS1v15(rand.Reader, key, alg.hash, digest)
	}
	return nil, fmt.Errorf("fake: key %T", k.key)
}

func (k *fakeKey) close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.closed++
	return nil
}

func (k *fakeKey) algorithms() []algorithm {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([]algorithm(nil), k.asked...)
}

// testPKI is a root, an intermediate under it, and a way to issue client
// certificates from the intermediate.
type testPKI struct {
	root, inter       *x509.Certificate
	rootKey, interKey crypto.Signer

	mu     sync.Mutex // guards serial: tests issue from several goroutines
	serial int64
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{}
	p.rootKey = genKey(t, "p256")
	p.root = p.sign(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "Test Root"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
	}, nil, p.rootKey.Public(), p.rootKey)
	p.interKey = genKey(t, "p256")
	p.inter = p.sign(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "Test Clients"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
	}, p.root, p.interKey.Public(), p.rootKey)
	return p
}

func (p *testPKI) sign(t *testing.T, tmpl, parent *x509.Certificate, pub crypto.PublicKey, by crypto.Signer) *x509.Certificate {
	t.Helper()
	p.mu.Lock()
	p.serial++
	tmpl.SerialNumber = big.NewInt(p.serial)
	p.mu.Unlock()
	if parent == nil {
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, by)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// client issues a client certificate for cn valid from nb to na.
func (p *testPKI) client(t *testing.T, cn string, pub crypto.PublicKey, nb, na time.Time) *x509.Certificate {
	t.Helper()
	return p.sign(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: cn}, NotBefore: nb, NotAfter: na,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, p.inter, pub, p.interKey)
}

// valid issues a client certificate valid now.
func (p *testPKI) valid(t *testing.T, cn string, key crypto.Signer) *x509.Certificate {
	return p.client(t, cn, key.Public(), time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
}

var (
	keyMu    sync.Mutex
	keyCache = map[string]crypto.Signer{}
)

// genKey makes a key of a kind: p256, p384, p521, rsa2048, ed25519.
// RSA keys are cached per kind+n so the tests stay fast: take a fresh
// kind name ("rsa2048-b") for a second, different key.
func genKey(t *testing.T, kind string) crypto.Signer {
	t.Helper()
	var (
		k   crypto.Signer
		err error
	)
	switch kind {
	case "p256":
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "p384":
		k, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "p521":
		k, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case "ed25519":
		_, k, err = ed25519.GenerateKey(rand.Reader)
	default:
		keyMu.Lock()
		defer keyMu.Unlock()
		if c, ok := keyCache[kind]; ok {
			return c
		}
		k, err = rsa.GenerateKey(rand.Reader, 2048)
		keyCache[kind] = k
	}
	if err != nil {
		t.Fatal(err)
	}
	return k
}

const cryptoSHA256 = crypto.SHA256
