package osstore

import "errors"

// The errors callers branch on. Open's errors for the wrong OS wrap
// errors.ErrUnsupported.
var (
	// ErrNotRef is returned (wrapped) by Parse for a string that is not a
	// keychain: or certstore: reference at all, so that a caller
	// dispatching on key references can try other kinds.
	ErrNotRef = errors.New("not a keychain: or certstore: reference")
	// ErrNotFound is returned (wrapped) by Open when no usable identity
	// matches the reference; the message lists what the store holds, or
	// why each matching identity was skipped.
	ErrNotFound = errors.New("no usable identity")
	// ErrAmbiguous is returned (wrapped) by Open when several usable
	// identities match the reference; the message names them with their
	// thumbprints.
	ErrAmbiguous = errors.New("matches several identities")
	// ErrClosed is returned (wrapped) by Key.Sign after Close.
	ErrClosed = errors.New("key closed")
)
