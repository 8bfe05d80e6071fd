package osstore

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"
)

// store is the OS side: the identities a keychain or certificate store
// holds, and their private keys. A store is used by one goroutine (Open)
// and closed before Open returns; keys it opened outlive it.
type store interface {
	// identities lists the certificates the store holds with a private
	// key (Windows: every certificate of the store, hasKey telling which
	// have one). Their handles stay valid until close.
	identities() ([]candidate, error)
	// certificates returns other certificates the store can see (DER),
	// from which the identity's chain is built: intermediate CAs. Errors
	// are not fatal: the chain is then the leaf alone.
	certificates() ([][]byte, error)
	// openKey opens the private key of c, one of identities' candidates,
	// for signing with the public key pub (the certificate's).
	openKey(c *candidate, pub crypto.PublicKey) (osKey, error)
	// close releases what identities and certificates returned.
	close() error
}

// osKey is a private key held by the OS.
//
// sign is safe for concurrent use (SecKeyRef and NCRYPT_KEY_HANDLE are);
// close is called once, after every sign returned.
type osKey interface {
	// sign signs digest (already hashed with alg.hash) with alg. ECDSA
	// signatures are returned ASN.1 DER encoded, as crypto.Signer gives
	// them; RSA ones as the bare signature.
	sign(alg algorithm, digest []byte) ([]byte, error)
	close() error
}

// candidate is one identity a store listed.
type candidate struct {
	der    []byte // the certificate
	label  string // the store's name for it (keychain label, friendly name); may be empty
	where  string // where it was found, for messages: "keychain", "user/MY"
	hasKey bool   // a private key is associated with the certificate
	handle any    // the store's own reference, given back to openKey
}

// Identity is a certificate and its private key, held by the OS.
type Identity struct {
	// Certificate is the leaf certificate.
	Certificate *x509.Certificate
	// Chain is the leaf followed by the intermediate CAs found in the
	// store up to, not including, a self-signed root; just the leaf when
	// the store has none.
	Chain []*x509.Certificate
	// Key signs with the private key, which stays in the OS.
	Key *Key
	// Where says where the identity was found: "keychain", "user/MY",
	// "machine/MY".
	Where string
}

// TLSCertificate returns the identity as crypto/tls wants it for
// tls.Config.Certificates or GetClientCertificate.
func (id *Identity) TLSCertificate() tls.Certificate {
	c := tls.Certificate{PrivateKey: id.Key, Leaf: id.Certificate}
	for _, x := range id.Chain {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}

// Close releases the private key's OS handle; signing afterwards fails
// with ErrClosed.
func (id *Identity) Close() error { return id.Key.Close() }

// thumbprint is what errors show of a certificate: its SHA-1, as Windows
// and the keychain show it.
func thumbprint(der []byte) string {
	s := sha1.Sum(der)
	return hex.EncodeToString(s[:])
}

// considered is one candidate as selection judged it.
type considered struct {
	c      *candidate
	cert   *x509.Certificate
	sha1   string
	match  bool   // the reference selects it
	reason string // why it cannot be used, if match ("" when usable)
}

func (k considered) describe() string {
	name := k.label()
	s := fmt.Sprintf("%q sha1=%s (%s", name, k.sha1, k.c.where)
	switch {
	case k.reason != "":
		s += ": " + k.reason
	case k.cert != nil:
		s += ", until " + k.cert.NotAfter.UTC().Format(time.DateOnly)
	}
	return s + ")"
}

func (k considered) label() string {
	if k.cert != nil && k.cert.Subject.CommonName != "" {
		if k.c.label != "" && !strings.EqualFold(k.c.label, k.cert.Subject.CommonName) {
			return k.cert.Subject.CommonName + " / " + k.c.label
		}
		return k.cert.Subject.CommonName
	}
	return k.c.label
}

// maxListed bounds how many identities an error lists, so a store with
// hundreds of certificates gives a readable message.
const maxListed = 12

// selectIdentity picks the one identity in cands that r selects and that
// is usable at now: parsable, with a private key of a kind Key can use,
// within its validity period. Matching but unusable identities are
// skipped with their reason; if none is left, the error lists them all.
func selectIdentity(r Ref, cands []candidate, now time.Time) (*considered, error) {
	var all []considered
	seen := make(map[string]bool) // where+sha1: a store listing an identity twice
	for i := range cands {
		c := &cands[i]
		k := considered{c: c, sha1: thumbprint(c.der)}
		if seen[c.where+k.sha1] {
			continue
		}
		seen[c.where+k.sha1] = true
		cert, err := x509.ParseCertificate(c.der)
		if err == nil {
			k.cert = cert
		}
		k.match = r.selects(c, cert)
		switch {
		case !k.match:
		case err != nil:
			k.reason = fmt.Sprintf("unreadable certificate: %v", err)
		case !c.hasKey:
			k.reason = "no private key with it"
		case now.After(cert.NotAfter):
			k.reason = "expired " + cert.NotAfter.UTC().Format(time.RFC3339)
		case now.Before(cert.NotBefore):
			k.reason = "not valid before " + cert.NotBefore.UTC().Format(time.RFC3339)
		default:
			if err := supportedKey(cert.PublicKey); err != nil {
				k.reason = err.Error()
			}
		}
		all = append(all, k)
	}
	var usable, skipped []considered
	for _, k := range all {
		switch {
		case k.match && k.reason == "":
			usable = append(usable, k)
		case k.match:
			skipped = append(skipped, k)
		}
	}
	switch {
	case len(usable) == 1:
		return &usable[0], nil
	case len(usable) > 1:
		return nil, fmt.Errorf("%s %w: %s; pick one by thumbprint, e.g. %s", r, ErrAmbiguous,
			list(usable), hint(r, usable[0]))
	case len(skipped) > 0:
		return nil, fmt.Errorf("%s: %w: %s", r, ErrNotFound, list(skipped))
	}
	// Nothing matched: say what there was, so a typo or the wrong store
	// shows at once.
	if len(all) == 0 {
		return nil, fmt.Errorf("%s: %w: the store holds no identity", r, ErrNotFound)
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].label() < all[j].label() })
	return nil, fmt.Errorf("%s: %w: none of the %d identities looked at matches: %s", r, ErrNotFound, len(all), list(all))
}

func list(ks []considered) string {
	var parts []string
	for i, k := range ks {
		if i == maxListed {
			parts = append(parts, fmt.Sprintf("and %d more", len(ks)-maxListed))
			break
		}
		parts = append(parts, k.describe())
	}
	return strings.Join(parts, "; ")
}

// hint is a reference that selects k alone: by thumbprint, and for the
// Windows store with the location it was found in, since the same
// certificate may be in both the user's and the machine's store.
func hint(r Ref, k considered) string {
	if r.Kind == CertStore {
		return "certstore:" + strings.ToLower(k.c.where) + "/sha1=" + k.sha1
	}
	return r.Kind.String() + ":sha1=" + k.sha1
}

// selects reports whether r names the candidate (cert may be nil when it
// could not be parsed: then only the label and thumbprints can match).
func (r Ref) selects(c *candidate, cert *x509.Certificate) bool {
	switch {
	case r.SHA1 != nil:
		s := sha1.Sum(c.der)
		return string(s[:]) == string(r.SHA1)
	case r.SHA256 != nil:
		s := sha256.Sum256(c.der)
		return string(s[:]) == string(r.SHA256)
	}
	if c.label != "" && strings.EqualFold(c.label, r.Name) {
		return true
	}
	return cert != nil && cert.Subject.CommonName != "" && strings.EqualFold(cert.Subject.CommonName, r.Name)
}

// buildChain returns leaf followed by its issuers found in pool (DER,
// unparsable entries ignored), stopping before a self-signed certificate
// (a root, which the peer must already have) or when no issuer is found.
// An issuer is accepted only if its signature on the certificate checks,
// so a store holding two CAs with the same name cannot mislead it.
func buildChain(leaf *x509.Certificate, pool [][]byte) []*x509.Certificate {
	var cas []*x509.Certificate
	for _, der := range pool {
		if c, err := x509.ParseCertificate(der); err == nil && c.IsCA {
			cas = append(cas, c)
		}
	}
	chain := []*x509.Certificate{leaf}
	cur := leaf
	for len(chain) < 8 { // deeper than any real hierarchy; ends loops
		var next *x509.Certificate
		for _, ca := range cas {
			if string(ca.RawSubject) == string(cur.RawIssuer) && cur.CheckSignatureFrom(ca) == nil {
				next = ca
				break
			}
		}
		if next == nil || string(next.RawSubject) == string(next.RawIssuer) || next.Equal(cur) {
			break
		}
		chain = append(chain, next)
		cur = next
	}
	return chain
}

// open finds r's identity in st (which it closes) at time now. A key
// that fails is opened again from the same st.
func open(st store, r Ref, now time.Time) (*Identity, error) {
	return openWith(func() (store, error) { return st, nil }, r, now)
}

// openWith finds r's identity in a store newStore opens (and open
// closes) at time now. The Key it returns keeps newStore to open the key
// again when signing fails: a smart card pulled out and put back, a
// keychain locked and unlocked, leave the old handle dead for good.
func openWith(newStore func() (store, error), r Ref, now time.Time) (_ *Identity, err error) {
	st, err := newStore()
	if err != nil {
		return nil, err
	}
	defer func() {
		if cerr := st.close(); cerr != nil && err == nil {
			err = fmt.Errorf("%s: close store: %w", r, cerr)
		}
	}()
	cands, err := st.identities()
	if err != nil {
		return nil, fmt.Errorf("%s: list identities: %w", r, err)
	}
	k, err := selectIdentity(r, cands, now)
	if err != nil {
		return nil, err
	}
	pool, _ := st.certificates() // without them the chain is the leaf alone
	ok, err := st.openKey(k.c, k.cert.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("%s: private key of %s: %w", r, k.describe(), err)
	}
	key := newKey(ok, k.cert.PublicKey, r.String())
	where, sha, pub := k.c.where, k.sha1, k.cert.PublicKey
	key.reopen = func() (_ osKey, err error) {
		st, err := newStore()
		if err != nil {
			return nil, err
		}
		defer func() {
			if cerr := st.close(); cerr != nil && err == nil {
				err = cerr
			}
		}()
		cands, err := st.identities()
		if err != nil {
			return nil, err
		}
		for i := range cands {
			c := &cands[i]
			if c.where == where && c.hasKey && thumbprint(c.der) == sha {
				return st.openKey(c, pub)
			}
		}
		return nil, fmt.Errorf("sha1=%s is no longer in %s", sha, where)
	}
	return &Identity{
		Certificate: k.cert,
		Chain:       buildChain(k.cert, pool),
		Key:         key,
		Where:       k.c.where,
	}, nil
}

// supportedKey says whether Key can sign for pub: the OS stores hold RSA
// and ECDSA (P-256, P-384, P-521) keys.
func supportedKey(pub crypto.PublicKey) error {
	switch p := pub.(type) {
	case *rsa.PublicKey:
		return nil
	case *ecdsa.PublicKey:
		switch p.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return nil
		}
		return fmt.Errorf("unsupported ECDSA curve %s", p.Curve.Params().Name)
	}
	return fmt.Errorf("unsupported key type %T (want RSA or ECDSA)", pub)
}

// Key is a private key held by the OS, as a crypto.Signer. Sign is safe
// for concurrent use; Close waits for signatures in progress, releases
// the OS handle, and makes later Sign calls return ErrClosed.
//
// When the OS fails a signature, Sign opens the key again (the same
// certificate, in the same store) and retries once: a token removed and
// put back, or a keychain locked and unlocked, works again at the next
// handshake without restarting; while it is gone, Sign's error gives the
// OS's reason for both attempts.
type Key struct {
	pub    crypto.PublicKey
	name   string                // the reference, for errors
	reopen func() (osKey, error) // nil: no second attempt

	mu     sync.RWMutex // guards k and closed; Sign holds it shared while signing
	k      osKey
	closed bool
}

var _ crypto.Signer = (*Key)(nil)

func newKey(k osKey, pub crypto.PublicKey, name string) *Key {
	return &Key{k: k, pub: pub, name: name}
}

// Public returns the certificate's public key.
func (k *Key) Public() crypto.PublicKey { return k.pub }

// String names the key by its reference (never anything secret: there is
// nothing secret in this process).
func (k *Key) String() string { return k.name }

// Sign signs digest with the OS-held key. opts.HashFunc() must be the
// hash that produced digest: SHA-1, SHA-256, SHA-384 or SHA-512. For RSA,
// *rsa.PSSOptions asks for PSS, with a salt as long as the hash
// (rsa.PSSSaltLengthEqualsHash, what crypto/tls and crypto/x509 use);
// other opts for PKCS #1 v1.5. rand is not used: the OS draws its own.
func (k *Key) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	alg, err := algorithmFor(k.pub, digest, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", k.name, err)
	}
	sig, used, err := k.signWith(alg, digest)
	if err == nil || errors.Is(err, ErrClosed) || k.reopen == nil {
		return sig, err
	}
	if rerr := k.replace(used); rerr != nil {
		return nil, fmt.Errorf("%w; opening the key again: %v", err, rerr)
	}
	sig, _, err = k.signWith(alg, digest)
	return sig, err
}

// signWith signs with the current OS key, and says which it was.
func (k *Key) signWith(alg algorithm, digest []byte) ([]byte, osKey, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.closed {
		return nil, nil, fmt.Errorf("%s: %w", k.name, ErrClosed)
	}
	sig, err := k.k.sign(alg, digest)
	if err != nil {
		return nil, k.k, fmt.Errorf("%s: sign: %w", k.name, err)
	}
	return sig, k.k, nil
}

// replace opens the key again in place of failed, unless another Sign
// already did.
func (k *Key) replace(failed osKey) error {
	nk, err := k.reopen()
	if err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed || k.k != failed {
		nk.close()
		return nil
	}
	// No Sign is using the old key: they hold mu shared.
	k.k.close()
	k.k = nk
	return nil
}

// Close releases the OS key handle. It is idempotent.
func (k *Key) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil
	}
	k.closed = true
	return k.k.close()
}
