package keystore

import (
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/twoway/twoway/osstore"
)

// osBackend serves "keychain:" and "certstore:" references: an identity
// (certificate and private key) in the macOS Keychain or the Windows
// certificate store, through package osstore. The key signs inside the OS
// (and whatever smart card backs it); twoway never sees it.
type osBackend struct{}

// Open finds the identity ref names.
func (osBackend) Open(ref string) (Key, error) {
	id, err := osstore.Open(ref)
	if err != nil {
		return nil, err
	}
	return &osKey{Key: id.Key, id: id}, nil
}

// Generate is not offered: an identity is imported into the OS store (a
// .p12 from twoway pki, or one the OS or an MDM enrolled), not made here.
func (osBackend) Generate(ref string) (Key, error) {
	return nil, fmt.Errorf("%s: twoway does not make keys in the OS store: import an identity (twoway pki export, see README) and name it", osstoreName(ref))
}

// Check parses ref and checks that its store exists on this OS.
func (osBackend) Check(ref string) error {
	r, err := osstore.Parse(ref)
	if err != nil {
		return err
	}
	return r.Available()
}

func osstoreName(ref string) string {
	if r, err := osstore.Parse(ref); err == nil {
		return r.String()
	}
	return "OS store key"
}

// osKey is an OS store identity's key; the identity's certificate and
// chain come with it (Chain).
type osKey struct {
	*osstore.Key
	id *osstore.Identity
}

func (*osKey) inStore() {}

// Delete is refused: the identity belongs to the OS store's owner.
func (k *osKey) Delete() error {
	return errors.New("keys in the OS store are not deleted by twoway")
}

// Close releases the identity's handles.
func (k *osKey) Close() error { return k.id.Close() }

// Chain returns the identity's certificate and the intermediates the store
// holds (no root).
func (k *osKey) Chain() []*x509.Certificate { return k.id.Chain }

// ChainOf returns the certificate chain that came with k, if its store
// keeps certificates with keys (an OS store identity); nil otherwise.
func ChainOf(k Key) []*x509.Certificate {
	if c, ok := k.(interface{ Chain() []*x509.Certificate }); ok {
		return c.Chain()
	}
	return nil
}

// CarriesCertificate reports whether ref names a key whose store also
// holds its certificate (an OS store identity), so that no certificate
// file is needed beside it.
func CarriesCertificate(ref string) bool { return osstore.IsRef(ref) }
