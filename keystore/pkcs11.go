//go:build cgo

package keystore

import (
	"crypto"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"io"
	"sync"

	"github.com/ThalesGroup/crypto11"
)

// pkcs11Backend opens keys in PKCS#11 tokens through crypto11, which
// loads the library a URI's module-path names (and shares it between the
// keys of one library in the process).
type pkcs11Backend struct{}

func (pkcs11Backend) Check(ref string) error { return checkPKCS11(ref) }

// Open logs into the token and finds the key now, so that a wrong PIN or
// a missing key stops the daemon at start rather than at the first
// handshake.
func (pkcs11Backend) Open(ref string) (Key, error) {
	u, err := ParseURI(ref)
	if err != nil {
		return nil, err
	}
	k := &tokenKey{uri: u}
	if err := k.reopen(); err != nil {
		return nil, err
	}
	return k, nil
}

// Generate makes the key with the token's own key generation: crypto11
// marks the private half sensitive and not extractable, so it never
// leaves the token. Without id= in the reference, a random CKA_ID is
// given (crypto11 finds the public half by it).
func (pkcs11Backend) Generate(ref string) (Key, error) {
	u, err := ParseURI(ref)
	if err != nil {
		return nil, err
	}
	ctx, err := configure(u)
	if err != nil {
		return nil, err
	}
	existing, err := ctx.FindKeyPairs(u.ID, []byte(u.Object))
	if err != nil {
		ctx.Close()
		return nil, fmt.Errorf("PKCS#11 key %s: look for an existing key: %w", u, err)
	}
	if len(existing) > 0 {
		ctx.Close()
		return nil, fmt.Errorf("PKCS#11 key %s: %w on the token; choose another object=", u, ErrExists)
	}
	id := u.ID
	if len(id) == 0 {
		id = make([]byte, 8)
		if _, err := rand.Read(id); err != nil {
			ctx.Close()
			return nil, err
		}
	}
	var s crypto11.Signer
	if u.Object != "" {
		s, err = ctx.GenerateECDSAKeyPairWithLabel(id, []byte(u.Object), elliptic.P256())
	} else {
		s, err = ctx.GenerateECDSAKeyPair(id, elliptic.P256())
	}
	if err != nil {
		ctx.Close()
		return nil, fmt.Errorf("PKCS#11 key %s: generate an ECDSA P-256 key on the token: %w", u, err)
	}
	return &tokenKey{uri: u, pub: s.Public(), ctx: ctx, signer: s}, nil
}

// configure loads the library and logs into the token u names.
func configure(u *URI) (*crypto11.Context, error) {
	pin, err := readPIN(u.PINFile)
	if err != nil {
		return nil, err
	}
	cfg := &crypto11.Config{Path: u.ModulePath, Pin: pin}
	switch {
	case u.Serial != "":
		cfg.TokenSerial = u.Serial
	case u.Token != "":
		cfg.TokenLabel = u.Token
	default:
		cfg.SlotNumber = u.SlotID
	}
	ctx, err := crypto11.Configure(cfg)
	if err != nil {
		// The PIN is not in crypto11's errors: it reports the PKCS#11
		// return code of the login, not what was sent.
		return nil, fmt.Errorf("PKCS#11 key %s: open token: %w (%w)", u, ErrUnavailable, err)
	}
	return ctx, nil
}

// tokenKey is a key in a PKCS#11 token. When the token goes away its
// session handles die with it; Sign then drops the context and opens a
// fresh one (library, token, login, key), so a token plugged back in
// works again at the next handshake.
type tokenKey struct {
	uri *URI

	// mu is held across Sign: a failing signature, dropping the context
	// and opening the next are one step, and tokens sign one thing at a
	// time anyway.
	mu     sync.Mutex
	pub    crypto.PublicKey // set by the first open; a reopened key must match it
	ctx    *crypto11.Context
	signer crypto11.Signer // nil while the token is away
	closed bool
}

func (k *tokenKey) inStore() {}

// Public returns the public half, as found when the key was opened.
func (k *tokenKey) Public() crypto.PublicKey { return k.pub }

// Sign signs with the key in the token. A failure with a context opened
// earlier may be a token that was pulled and put back (its handles are
// stale), so the context is reopened and the signature tried once more.
func (k *tokenKey) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil, fmt.Errorf("PKCS#11 key %s: used after Close", k.uri)
	}
	fresh := false
	if k.signer == nil {
		if err := k.reopen(); err != nil {
			return nil, err
		}
		fresh = true
	}
	sig, err := k.signer.Sign(r, digest, opts)
	if err == nil || fresh {
		if err != nil {
			k.drop()
			return nil, fmt.Errorf("PKCS#11 key %s: sign: %w (%w)", k.uri, ErrUnavailable, err)
		}
		return sig, nil
	}
	k.drop()
	if rerr := k.reopen(); rerr != nil {
		return nil, fmt.Errorf("%w (sign with the earlier session: %v)", rerr, err)
	}
	sig, err = k.signer.Sign(r, digest, opts)
	if err != nil {
		k.drop()
		return nil, fmt.Errorf("PKCS#11 key %s: sign: %w (%w)", k.uri, ErrUnavailable, err)
	}
	return sig, nil
}

// reopen opens the token and finds the key. Called with mu held (or
// before k is shared).
func (k *tokenKey) reopen() error {
	ctx, err := configure(k.uri)
	if err != nil {
		return err
	}
	s, err := ctx.FindKeyPair(k.uri.ID, []byte(k.uri.Object))
	if err != nil {
		ctx.Close()
		return fmt.Errorf("PKCS#11 key %s: %w: no such key on the token (%w)", k.uri, ErrUnavailable, err)
	}
	if k.pub == nil {
		k.pub = s.Public()
	} else if p, ok := k.pub.(interface{ Equal(crypto.PublicKey) bool }); !ok || !p.Equal(s.Public()) {
		ctx.Close()
		return fmt.Errorf("PKCS#11 key %s: the token now holds a different key under this name", k.uri)
	}
	k.ctx, k.signer = ctx, s
	return nil
}

// drop closes the context after a failure. Called with mu held.
func (k *tokenKey) drop() {
	if k.ctx != nil {
		k.ctx.Close()
	}
	k.ctx, k.signer = nil, nil
}

// Delete removes the private and public halves from the token.
func (k *tokenKey) Delete() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return fmt.Errorf("PKCS#11 key %s: used after Close", k.uri)
	}
	if k.signer == nil {
		if err := k.reopen(); err != nil {
			return err
		}
	}
	err := k.signer.Delete()
	k.closed = true
	k.drop()
	if err != nil {
		return fmt.Errorf("PKCS#11 key %s: delete: %w", k.uri, err)
	}
	return nil
}

// Close logs out and, with the last key of its library, unloads it.
func (k *tokenKey) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil
	}
	k.closed = true
	k.drop()
	return nil
}
