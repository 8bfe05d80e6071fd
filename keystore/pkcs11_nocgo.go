//go:build !cgo

package keystore

// pkcs11Backend without cgo parses references, so that config checks
// still point at mistakes, and refuses to open them.
type pkcs11Backend struct{}

func (pkcs11Backend) Open(ref string) (Key, error) {
	if _, err := ParseURI(ref); err != nil {
		return nil, err
	}
	return nil, ErrNoCgo
}

func (pkcs11Backend) Generate(ref string) (Key, error) { return pkcs11Backend{}.Open(ref) }
