package osstore

import (
	"crypto"
	"fmt"
)

// The macOS keychain backend, written against secAPI, the
// Security.framework calls it makes, so that it compiles and is tested on
// every OS; keychain_darwin.go implements secAPI with the real calls.

// secIdentity is one identity SecItemCopyMatching listed.
type secIdentity struct {
	der   []byte  // SecCertificateCopyData of SecIdentityCopyCertificate
	label string  // kSecAttrLabel
	ref   uintptr // the SecIdentityRef, owned by the query's result
}

// secAPI is what the backend needs from Security.framework. Refs are CF
// objects; copy* results are the caller's to release.
type secAPI interface {
	// identities runs SecItemCopyMatching {kSecClassIdentity,
	// kSecReturnRef, kSecReturnAttributes, kSecMatchLimitAll}; the refs
	// stay valid until done is called, which releases the result.
	identities() (ids []secIdentity, done func(), err error)
	// certificates runs SecItemCopyMatching {kSecClassCertificate,
	// kSecReturnData, kSecMatchLimitAll}.
	certificates() ([][]byte, error)
	// copyPrivateKey is SecIdentityCopyPrivateKey.
	copyPrivateKey(identity uintptr) (uintptr, error)
	// createSignature is SecKeyCreateSignature with the SecKeyAlgorithm
	// constant of that name.
	createSignature(key uintptr, alg string, digest []byte) ([]byte, error)
	// release is CFRelease.
	release(ref uintptr)
}

// keychain is the keychain search list, as one store.
type keychain struct {
	api  secAPI
	done func() // releases what identities listed
}

func (k *keychain) identities() ([]candidate, error) {
	ids, done, err := k.api.identities()
	if err != nil {
		return nil, err
	}
	k.done = done
	out := make([]candidate, 0, len(ids))
	for _, id := range ids {
		out = append(out, candidate{
			der:    id.der,
			label:  id.label,
			where:  "keychain",
			hasKey: true, // an identity is a certificate with its key
			handle: id.ref,
		})
	}
	return out, nil
}

func (k *keychain) certificates() ([][]byte, error) { return k.api.certificates() }

func (k *keychain) openKey(c *candidate, _ crypto.PublicKey) (osKey, error) {
	ref, err := k.api.copyPrivateKey(c.handle.(uintptr))
	if err != nil {
		return nil, err
	}
	return &secKey{api: k.api, ref: ref}, nil
}

func (k *keychain) close() error {
	if k.done != nil {
		k.done()
		k.done = nil
	}
	return nil
}

// secKey is a SecKeyRef, which Security allows to be used from several
// threads at once.
type secKey struct {
	api secAPI
	ref uintptr
}

func (k *secKey) sign(alg algorithm, digest []byte) ([]byte, error) {
	sig, err := k.api.createSignature(k.ref, alg.secKeyAlgorithm(), digest)
	if err != nil {
		return nil, fmt.Errorf("SecKeyCreateSignature (%s): %w", alg, err)
	}
	return sig, nil
}

func (k *secKey) close() error {
	k.api.release(k.ref)
	return nil
}
