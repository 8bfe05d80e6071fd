// Package keystore gives the rest of twoway a crypto.Signer for a private
// key that lives somewhere this process cannot read it, such as a
// PKCS#11 token (a YubiKey, a smart card, an HSM). The key is named by a
// reference in the configuration where a key file's path would otherwise
// go: "pkcs11:token=...;object=...?module-path=...&pin-source=file:...".
//
// Each kind of store is a Backend registered under its URI scheme; today
// there is "pkcs11". A later TPM or OS keychain backend plugs in the same
// way, and the callers (pki, config, enroll) do not change.
//
// Errors name the key by its reference (Ref.String), which never holds a
// PIN: a PIN is read from a file (pin-source) and a PIN written in the
// reference itself (pin-value) is refused.
package keystore

import (
	"crypto"
	"errors"
	"fmt"
	"strings"
)

// Key is a private key held in a store. Sign asks the store and is safe
// for concurrent use; a store that has gone away (a token pulled out)
// makes Sign fail with an error wrapping ErrUnavailable, and the next Sign
// tries the store again, so a key that comes back works without a
// restart. Close releases the store's session; Sign after Close fails.
// Delete removes the key from its store for good (undoing a Generate
// whose certificate request failed) and closes it.
type Key interface {
	crypto.Signer
	Close() error
	Delete() error
}

// Backend opens and makes keys of one kind of store.
type Backend interface {
	// Open finds the existing key ref names.
	Open(ref string) (Key, error)
	// Generate makes a new ECDSA P-256 key inside the store, which it
	// never leaves, under the name ref gives; an existing key of that
	// name is an error, not replaced.
	Generate(ref string) (Key, error)
	// Check checks ref without opening the store (config check).
	Check(ref string) error
}

// Errors callers branch on.
var (
	// ErrUnavailable is a store or key that cannot be reached now: the
	// token is not plugged in, the key is not on it.
	ErrUnavailable = errors.New("key unavailable")
	// ErrNoCgo is a pkcs11: reference in a binary built without cgo,
	// which cannot load a PKCS#11 library.
	ErrNoCgo = errors.New("built without cgo: PKCS#11 keys need a cgo build")
	// ErrExists is Generate asked for a key that is already there.
	ErrExists = errors.New("a key of that name already exists")
)

// InStore reports whether k is a key this package opened from a store
// (a Key, not merely any crypto.Signer). A caller uses it to avoid what
// would skip the store: a key in a removable token is there so that
// pulling the token cuts access, which TLS session resumption would
// bypass.
func InStore(k crypto.PrivateKey) bool {
	_, ok := k.(interface{ inStore() })
	return ok
}

// backends maps a URI scheme to its backend. It is filled by init
// functions and only read afterwards.
var backends = map[string]Backend{
	"pkcs11":    pkcs11Backend{},
	"keychain":  osBackend{},
	"certstore": osBackend{},
	"tpm":       tpmBackend{},
}

// IsReference reports whether s names a key in a store rather than a key
// file: it starts with a registered scheme and a colon. (A file path
// never does on the systems twoway runs on: a Windows drive letter is one
// letter.)
func IsReference(s string) bool {
	_, ok := backendOf(s)
	return ok
}

func backendOf(ref string) (Backend, bool) {
	scheme, _, ok := strings.Cut(ref, ":")
	if !ok {
		return nil, false
	}
	b, ok := backends[strings.ToLower(scheme)]
	return b, ok
}

// Open returns the key ref names.
func Open(ref string) (Key, error) {
	b, ok := backendOf(ref)
	if !ok {
		return nil, fmt.Errorf("not a key reference (want one of: %s)", schemes())
	}
	return b.Open(ref)
}

// Generate makes a new ECDSA P-256 key inside the store ref names, under
// the name ref gives, and returns it.
func Generate(ref string) (Key, error) {
	b, ok := backendOf(ref)
	if !ok {
		return nil, fmt.Errorf("not a key reference (want one of: %s)", schemes())
	}
	return b.Generate(ref)
}

// Check parses ref and checks what it can without opening the store: the
// files it names exist and its PIN file is private (mode 0600 or
// stricter: unlike key files, no setting relaxes this, since Open checks
// it too).
func Check(ref string) error {
	b, ok := backendOf(ref)
	if !ok {
		return fmt.Errorf("not a key reference (want one of: %s)", schemes())
	}
	return b.Check(ref)
}

// checkPKCS11 is Check for a pkcs11: reference.
func checkPKCS11(ref string) error {
	u, err := ParseURI(ref)
	if err != nil {
		return err
	}
	return u.check()
}

func schemes() string {
	var s []string
	for k := range backends {
		s = append(s, k+":")
	}
	return strings.Join(s, ", ")
}
