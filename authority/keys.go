package authority

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/youmark/pkcs8"

	"github.com/twoway/twoway/internal/atomicfile"
)

// KeyType names a private key algorithm twoway can generate.
type KeyType string

// Supported key types. ECDSA P-256 is the default: small, fast to verify,
// and accepted by every TLS stack and OS keychain.
const (
	KeyECDSAP256 KeyType = "ecdsa-p256"
	KeyEd25519   KeyType = "ed25519"
	KeyRSA3072   KeyType = "rsa-3072"
)

// Errors about keys and files that callers branch on.
var (
	ErrExists         = errors.New("file already exists (use --force to overwrite)")
	ErrUnknownKeyType = errors.New("unknown key type")
)

// KDFIterations is the PBKDF2-HMAC-SHA256 iteration count used when
// encrypting private keys. 600,000 follows OWASP's 2023 guidance for
// PBKDF2-SHA256; decrypting costs a fraction of a second. Test binaries
// lower it (in TestMain) because the race detector makes it ~10x slower;
// nothing else should change it.
var KDFIterations = 600_000

// ParseKeyType parses a key type name as given on the command line.
func ParseKeyType(s string) (KeyType, error) {
	switch t := KeyType(strings.ToLower(s)); t {
	case KeyECDSAP256, KeyEd25519, KeyRSA3072:
		return t, nil
	case "", "ecdsa", "p256", "p-256":
		return KeyECDSAP256, nil
	case "rsa":
		return KeyRSA3072, nil
	}
	return "", fmt.Errorf("%w %q (want ecdsa-p256, ed25519 or rsa-3072)", ErrUnknownKeyType, s)
}

// GenerateKey makes a new private key of type t.
func GenerateKey(t KeyType) (crypto.Signer, error) {
	switch t {
	case KeyECDSAP256, "":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KeyEd25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	case KeyRSA3072:
		return rsa.GenerateKey(rand.Reader, 3072)
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownKeyType, t)
}

// MarshalPrivateKeyPEM encodes key as PKCS#8 PEM. With a non-empty password
// it is an "ENCRYPTED PRIVATE KEY" (PBES2, PBKDF2-HMAC-SHA256, AES-256-CBC),
// which openssl, Java and OS keychains read.
func MarshalPrivateKeyPEM(key crypto.Signer, password []byte) ([]byte, error) {
	if len(password) == 0 {
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, fmt.Errorf("marshal private key: %w", err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
	}
	der, err := pkcs8.MarshalPrivateKey(key, password, &pkcs8.Opts{
		Cipher: pkcs8.AES256CBC,
		KDFOpts: pkcs8.PBKDF2Opts{
			SaltSize:       16,
			IterationCount: KDFIterations,
			HMACHash:       crypto.SHA256,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("encrypt private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: der}), nil
}

// WriteFile writes data to path atomically (a temporary file in the same
// directory, then rename) with mode perm. It refuses to replace an existing
// file unless force is set, so that a mistyped command never destroys a key.
func WriteFile(path string, data []byte, perm os.FileMode, force bool) error {
	if force {
		return atomicfile.Write(path, data, perm)
	}
	if err := atomicfile.Create(path, data, perm); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s: %w", path, ErrExists)
		}
		return err
	}
	return nil
}
