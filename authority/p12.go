package authority

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/twoway/twoway/pki"
)

// PKCS12Encoding chooses the algorithms that protect a PKCS#12 file.
type PKCS12Encoding int

// PKCS#12 encodings.
const (
	// PKCS12Modern uses PBES2 with PBKDF2-HMAC-SHA256 and AES-256-CBC and
	// an HMAC-SHA256 MAC, OpenSSL 3's default; OpenSSL 1.1.1+, Windows
	// Server 2019+, current macOS and Java 12+ read it.
	PKCS12Modern PKCS12Encoding = iota
	// PKCS12Legacy uses RC2-40 for certificates and 3DES for the key with a
	// SHA-1 MAC, OpenSSL 1.x's default: weak, but what older macOS keychain
	// and Windows imports need. OpenSSL 3 reads it only with -legacy.
	PKCS12Legacy
)

// ErrEmptyPassword refuses a PKCS#12 file without a password: it would
// carry the private key in the clear.
var ErrEmptyPassword = errors.New("empty password refused: the PKCS#12 file would expose the private key")

// ExportPKCS12 encodes key and chain as a password-protected PKCS#12 file
// (DER). chain[0] is the certificate the key belongs to; the rest are CA
// certificates to include (duplicates are dropped). The key must match
// chain[0] (pki.ErrKeyMismatch otherwise).
//
// The iteration counts are the encoder's (2048, as OpenSSL 3 uses):
// importers differ in how many they tolerate, and a PKCS#12 file is a
// transport container whose password should be strong and short-lived.
func ExportPKCS12(key crypto.Signer, chain []*x509.Certificate, password []byte, enc PKCS12Encoding) ([]byte, error) {
	if len(chain) == 0 || chain[0] == nil {
		return nil, pki.ErrNoCertificate
	}
	if len(password) == 0 {
		return nil, ErrEmptyPassword
	}
	if key == nil {
		return nil, errors.New("no private key")
	}
	leaf := chain[0]
	if err := pki.KeyMatches(leaf, key); err != nil {
		return nil, fmt.Errorf("certificate %q: %w", leaf.Subject.CommonName, err)
	}
	var cas []*x509.Certificate
	seen := [][]byte{leaf.Raw}
next:
	for _, c := range chain[1:] {
		for _, raw := range seen {
			if bytes.Equal(raw, c.Raw) {
				continue next
			}
		}
		seen = append(seen, c.Raw)
		cas = append(cas, c)
	}
	var encoder *pkcs12.Encoder
	switch enc {
	case PKCS12Modern:
		// Modern2023 by name rather than pkcs12.Modern, which is meant to
		// move on (to PBMAC1, unreadable before OpenSSL 3.4) with a
		// library upgrade.
		encoder = pkcs12.Modern2023
	case PKCS12Legacy:
		encoder = pkcs12.LegacyRC2
	default:
		return nil, fmt.Errorf("unknown PKCS#12 encoding %d", enc)
	}
	der, err := encoder.Encode(key, leaf, cas, string(password))
	if err != nil {
		return nil, fmt.Errorf("encode PKCS#12: %w", err)
	}
	return der, nil
}
