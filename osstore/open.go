package osstore

import (
	"errors"
	"fmt"
	"runtime"
	"time"
)

// Open finds the identity ref (see Parse) names and opens its private
// key. The caller closes the Identity when done with it.
//
// Open fails, with an error naming the reference and never anything
// secret, when ref is malformed (the Parse error), when the OS is not the
// one the reference is for (wrapping errors.ErrUnsupported), when no
// usable identity matches (ErrNotFound, listing what the store holds and
// why matching ones were skipped: expired, not yet valid, no private key,
// unsupported key type), when several do (ErrAmbiguous, naming them with
// their thumbprints), or when the OS refuses the private key.
func Open(ref string) (*Identity, error) {
	r, err := Parse(ref)
	if err != nil {
		return nil, err
	}
	return openWith(func() (store, error) { return platformStore(r) }, r, time.Now())
}

// Available returns nil if r's store exists on this OS (Keychain on
// macOS, CertStore on Windows), else the error Open would return, so that
// a configuration check can refuse a reference for another OS without
// touching the system.
func (r Ref) Available() error {
	if r.Kind != platformKind {
		return wrongOS(r)
	}
	return nil
}

// wrongOS is the error for a reference Open cannot serve here.
func wrongOS(r Ref) error {
	want := map[Kind]string{Keychain: "macOS", CertStore: "Windows"}[r.Kind]
	return fmt.Errorf("%s: %s: references work on %s only (this is %s): %w",
		r, r.Kind, want, runtime.GOOS, errors.ErrUnsupported)
}
