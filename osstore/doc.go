// Package osstore opens client identities (a certificate and its private
// key) held by the operating system: the macOS keychain and the Windows
// certificate store. The private key never leaves the OS: the returned
// Key is a crypto.Signer whose Sign asks Security.framework (macOS) or
// CNG's NCryptSignHash (Windows) for each signature, so a key imported
// as non-exportable works too, and so should one a TPM or smart card holds
// for the OS (not tried: see the README).
//
// A configuration names an identity with a reference (see Parse):
//
//	key = "keychain:alice"
//	key = "certstore:machine/my/sha1=0123…"
//
// Parse validates a reference on any OS without touching the system; Open
// looks the identity up and returns it. Open works for keychain: references
// on macOS and certstore: references on Windows; elsewhere it returns an
// error saying so.
//
// The OS calls sit behind the small store interface (store.go); picking an
// identity, building its chain and mapping crypto.SignerOpts to the OS's
// signature algorithms is plain Go, tested on every OS with a fake store
// that signs with in-memory keys.
package osstore
