package pki

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// StoreConfig names the files a Store loads.
type StoreConfig struct {
	// CertFile holds this side's certificate followed by its issuing
	// chain; KeyFile its private key. Both empty means verify-only.
	CertFile, KeyFile string
	// KeyPassword decrypts an encrypted KeyFile.
	KeyPassword []byte
	// CABundle holds the CAs peers must chain to (see Verifier).
	CABundle string
	// CRLFiles are revocation lists, PEM or DER.
	CRLFiles []string
	// RejectStaleCRLs refuses every certificate a CRL covers once the
	// CRL's next update has passed, until a fresh one is loaded. Off, a
	// stale CRL keeps being used (and the daemon warns), so a CRL nobody
	// republished does not lock every user out.
	RejectStaleCRLs bool
}

// Store holds this side's certificate and the peer verifier, and swaps both
// atomically on Reload so that live connections keep working while new
// handshakes use the new files. It is safe for concurrent use.
type Store struct {
	cfg  StoreConfig
	cert atomic.Pointer[tls.Certificate]
	ver  atomic.Pointer[Verifier]

	mu   sync.Mutex // guards subs and serialises Reload
	subs []chan struct{}
}

// NewStore loads everything cfg names; any problem is an error and nothing
// is returned half-loaded.
func NewStore(cfg StoreConfig) (*Store, error) {
	s := &Store{cfg: cfg}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Reload re-reads every file. It is all-or-nothing: on error the previous
// certificate and verifier stay in use. A CRL whose number is lower than
// that of the CRL in use for the same issuer is such an error
// (ErrCRLRollback): an old list must not bring revoked certificates back.
func (s *Store) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cert, ver, err := load(s.cfg)
	if err != nil {
		return err
	}
	if prev := s.ver.Load(); prev != nil {
		if err := checkCRLNumbers(prev.CRLs(), ver.CRLs()); err != nil {
			return err
		}
	}
	s.cert.Store(cert)
	s.ver.Store(ver)
	for _, ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default: // a signal is already pending; one is enough
		}
	}
	return nil
}

// Certificate returns the current certificate (nil in verify-only mode).
func (s *Store) Certificate() *tls.Certificate { return s.cert.Load() }

// Verifier returns the current verifier.
func (s *Store) Verifier() *Verifier { return s.ver.Load() }

// Subscribe returns a channel signalled after each successful reload.
func (s *Store) Subscribe() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan struct{}, 1)
	s.subs = append(s.subs, ch)
	return ch
}

func load(cfg StoreConfig) (*tls.Certificate, *Verifier, error) {
	if cfg.CABundle == "" {
		return nil, nil, errors.New("no CA bundle configured")
	}
	bundle, err := LoadCertificates(cfg.CABundle)
	if err != nil {
		return nil, nil, fmt.Errorf("CA bundle: %w", err)
	}
	var crls []*x509.RevocationList
	for _, f := range cfg.CRLFiles {
		crl, err := LoadCRL(f)
		if err != nil {
			return nil, nil, fmt.Errorf("CRL: %w", err)
		}
		crls = append(crls, crl)
	}
	ver, err := NewVerifier(bundle, crls)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", cfg.CABundle, err)
	}
	ver.rejectStale = cfg.RejectStaleCRLs
	if cfg.CertFile == "" && cfg.KeyFile == "" {
		return nil, ver, nil
	}
	cert, err := LoadKeyPair(cfg.CertFile, cfg.KeyFile, cfg.KeyPassword)
	if err != nil {
		return nil, nil, err
	}
	return cert, ver, nil
}

// LoadKeyPair reads a certificate chain and its private key (possibly
// encrypted) into a tls.Certificate, checking that they belong together.
func LoadKeyPair(certFile, keyFile string, password []byte) (*tls.Certificate, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("both a certificate and a key file are needed")
	}
	chain, err := LoadCertificates(certFile)
	if err != nil {
		return nil, fmt.Errorf("certificate: %w", err)
	}
	key, err := LoadPrivateKey(keyFile, password)
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	if err := KeyMatches(chain[0], key); err != nil {
		return nil, fmt.Errorf("%s and %s: %w", certFile, keyFile, err)
	}
	tc := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	return tc, nil
}

// ErrKeyMismatch means a private key does not belong to a certificate.
var ErrKeyMismatch = errors.New("private key does not match certificate")

// KeyMatches reports whether key is the private half of cert's public key.
func KeyMatches(cert *x509.Certificate, key crypto.Signer) error {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	pub, ok := key.Public().(equaler)
	if !ok || !pub.Equal(cert.PublicKey) {
		return ErrKeyMismatch
	}
	return nil
}
