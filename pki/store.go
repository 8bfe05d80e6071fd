package pki

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/twoway/twoway/keystore"
)

// StoreConfig names the files a Store loads.
type StoreConfig struct {
	// CertFile holds this side's certificate followed by its issuing
	// chain; KeyFile its private key, a file or a key reference such as
	// a pkcs11: URI (see keystore). Both empty means verify-only.
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

	mu        sync.Mutex // guards the fields below and serialises Reload and Publish
	subs      []chan struct{}
	bundle    []*x509.Certificate    // as last loaded
	fileCRLs  []*x509.RevocationList // as last loaded from CRLFiles
	published []*x509.RevocationList // as last given to Publish
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
	files, err := load(s.cfg)
	if err != nil {
		return err
	}
	ver, err := s.verifier(files.bundle, files.crls, s.published)
	if err != nil {
		return err
	}
	s.bundle, s.fileCRLs = files.bundle, files.crls
	old := s.cert.Load()
	s.swap(files.cert, ver)
	// A key in a token holds a session there; the reload opened a new
	// one. (A handshake still signing with the old one fails; the
	// client's retry gets the new one.)
	closeKey(old)
	return nil
}

// Close releases what the current certificate's key holds: the token
// session of a key in a token. Sign fails afterwards. Keys in files hold
// nothing.
func (s *Store) Close() {
	closeKey(s.cert.Load())
}

// closeKey closes c's key if it is one that holds something.
func closeKey(c *tls.Certificate) {
	if c == nil {
		return
	}
	if k, ok := c.PrivateKey.(io.Closer); ok {
		_ = k.Close()
	}
}

// Publish adds CRLs that come from elsewhere than the files, a fleet's
// shared store: per issuer, the CRL with the highest number among the
// files and the published ones is used, now and after every Reload, so a
// revocation published to the fleet holds even where the file is older,
// and a newer file wins over an older publication. Each published CRL
// must be issued and signed by a CA in the bundle. All or nothing, like
// Reload: a CRL numbered below the one in use for its issuer is an error
// wrapping ErrCRLRollback, and the lists in use stay.
func (s *Store) Publish(crls []*x509.RevocationList) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, crl := range crls {
		if len(UnmatchedCRLs(s.bundle, []*x509.RevocationList{crl})) > 0 {
			return fmt.Errorf("published CRL of %q: its issuer is not in the CA bundle", crl.Issuer.String())
		}
	}
	ver, err := s.verifier(s.bundle, s.fileCRLs, crls)
	if err != nil {
		return fmt.Errorf("published CRLs: %w", err)
	}
	s.published = slices.Clone(crls)
	s.swap(s.cert.Load(), ver)
	return nil
}

// verifier builds the verifier of bundle with, per issuer, the newest of
// files and published, refusing a rollback against the one in use.
// Called with mu held.
func (s *Store) verifier(bundle []*x509.Certificate, files, published []*x509.RevocationList) (*Verifier, error) {
	ver, err := NewVerifier(bundle, newestPerIssuer(append(slices.Clone(files), published...)))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.cfg.CABundle, err)
	}
	ver.rejectStale = s.cfg.RejectStaleCRLs
	if prev := s.ver.Load(); prev != nil {
		if err := checkCRLNumbers(prev.CRLs(), ver.CRLs()); err != nil {
			return nil, err
		}
	}
	return ver, nil
}

// swap installs cert and ver and tells the subscribers. Called with mu
// held.
func (s *Store) swap(cert *tls.Certificate, ver *Verifier) {
	s.cert.Store(cert)
	s.ver.Store(ver)
	for _, ch := range s.subs {
		select {
		case ch <- struct{}{}:
		default: // a signal is already pending; one is enough
		}
	}
}

// newestPerIssuer keeps, of several CRLs of one issuer, the one with the
// highest number (the first of equals), in the order given.
func newestPerIssuer(crls []*x509.RevocationList) []*x509.RevocationList {
	best := map[string]int{}
	for i, c := range crls {
		k := crlIssuerKey(c)
		j, ok := best[k]
		if !ok || crls[j].Number == nil || c.Number != nil && c.Number.Cmp(crls[j].Number) > 0 {
			best[k] = i
		}
	}
	var out []*x509.RevocationList
	for i, c := range crls {
		if best[crlIssuerKey(c)] == i {
			out = append(out, c)
		}
	}
	return out
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

// loaded is what the files of a StoreConfig hold.
type loaded struct {
	cert   *tls.Certificate // nil in verify-only mode
	bundle []*x509.Certificate
	crls   []*x509.RevocationList
}

func load(cfg StoreConfig) (*loaded, error) {
	if cfg.CABundle == "" {
		return nil, errors.New("no CA bundle configured")
	}
	bundle, err := LoadCertificates(cfg.CABundle)
	if err != nil {
		return nil, fmt.Errorf("CA bundle: %w", err)
	}
	l := &loaded{bundle: bundle}
	for _, f := range cfg.CRLFiles {
		crl, err := LoadCRL(f)
		if err != nil {
			return nil, fmt.Errorf("CRL: %w", err)
		}
		l.crls = append(l.crls, crl)
	}
	if cfg.CertFile == "" && cfg.KeyFile == "" {
		return l, nil
	}
	if l.cert, err = LoadKeyPair(cfg.CertFile, cfg.KeyFile, cfg.KeyPassword); err != nil {
		return nil, err
	}
	return l, nil
}

// LoadKeyPair reads a certificate chain and its private key (possibly
// encrypted) into a tls.Certificate, checking that they belong together.
// keyFile may be a key reference (keystore.IsReference) instead: the key
// stays in its store, the tls.Certificate's PrivateKey signs there and is
// a keystore.Key (so an io.Closer), and password is not used. A reference
// to an OS store identity (keychain:, certstore:) brings its certificate
// chain along: certFile may then be empty, and when it is not, its chain
// is used (the store may lack the intermediates).
func LoadKeyPair(certFile, keyFile string, password []byte) (*tls.Certificate, error) {
	if keyFile == "" || (certFile == "" && !keystore.CarriesCertificate(keyFile)) {
		return nil, errors.New("both a certificate and a key file are needed")
	}
	var chain []*x509.Certificate
	var err error
	if certFile != "" {
		if chain, err = LoadCertificates(certFile); err != nil {
			return nil, fmt.Errorf("certificate: %w", err)
		}
	}
	var key crypto.Signer
	if keystore.IsReference(keyFile) {
		var k keystore.Key
		if k, err = keystore.Open(keyFile); err == nil {
			key = k
			if chain == nil {
				chain = keystore.ChainOf(k)
				certFile = keyFile
			}
		}
	} else {
		key, err = LoadPrivateKey(keyFile, password)
	}
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	if len(chain) == 0 {
		_ = key.(io.Closer).Close()
		return nil, fmt.Errorf("%s: the store holds no certificate for this key", keyFile)
	}
	if err := KeyMatches(chain[0], key); err != nil {
		if k, ok := key.(io.Closer); ok {
			_ = k.Close()
		}
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
