//go:build !cgo

package keystore

import "fmt"

// pkcs11Backend without cgo parses references, so that config checks
// still point at mistakes, and refuses to open them.
type pkcs11Backend struct{}

func (pkcs11Backend) Check(ref string) error { return checkPKCS11(ref) }

func (pkcs11Backend) Open(ref string) (Key, error) {
	u, err := ParseURI(ref)
	if err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("PKCS#11 key %s: %w", u, ErrNoCgo)
}

func (pkcs11Backend) Generate(ref string) (Key, error) { return pkcs11Backend{}.Open(ref) }
