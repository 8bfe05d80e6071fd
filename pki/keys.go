package pki

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
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

// Errors about private keys that callers branch on.
var (
	ErrExists           = errors.New("file already exists (use --force to overwrite)")
	ErrPasswordRequired = errors.New("key is encrypted: password required")
	ErrBadPassword      = errors.New("wrong password")
	ErrUnknownKeyType   = errors.New("unknown key type")
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

// ParsePrivateKeyPEM decodes the first private key block in data: PKCS#8,
// encrypted PKCS#8, SEC 1 "EC PRIVATE KEY" or PKCS#1 "RSA PRIVATE KEY".
func ParsePrivateKeyPEM(data, password []byte) (crypto.Signer, error) {
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, fmt.Errorf("%w: expected a private key", ErrNoPEM)
		}
		if len(b.Headers) > 0 && b.Headers["Proc-Type"] != "" {
			return nil, errors.New("legacy PEM encryption (Proc-Type) is not supported; convert with `openssl pkcs8 -topk8`")
		}
		var (
			key any
			err error
		)
		switch b.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			if len(password) == 0 {
				return nil, ErrPasswordRequired
			}
			if err := checkEncryptedKeyParams(b.Bytes); err != nil {
				return nil, fmt.Errorf("parse encrypted private key: %w", err)
			}
			key, _, err = pkcs8.ParsePrivateKey(b.Bytes, password)
			if err != nil && !strings.Contains(err.Error(), "unsupported") {
				// A wrong password shows up as bad padding or an
				// unparseable plaintext; the library does not tell them
				// apart from each other, only from unsupported schemes.
				return nil, ErrBadPassword
			}
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", strings.ToLower(b.Type), err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("unsupported private key type %T", key)
		}
		return signer, nil
	}
}

// Limits on the cost an encrypted key file may ask for. Real keys stay far
// below them: ours use 600,000 PBKDF2 iterations, OpenSSL's defaults are
// 2048 iterations or scrypt N=16384, r=8, p=1 (16 MiB).
const (
	maxPBKDF2Iterations = 10_000_000
	maxScryptWork       = 1 << 30 // 128*N*r*p: bytes of memory times passes
)

// pbes2BlockSizes are the block sizes of the PBES2 ciphers
// github.com/youmark/pkcs8 knows (AES in its CBC and GCM OIDs, 3DES).
var pbes2BlockSizes = map[string]int{
	"2.16.840.1.101.3.4.1.2":  16,
	"2.16.840.1.101.3.4.1.6":  16,
	"2.16.840.1.101.3.4.1.22": 16,
	"2.16.840.1.101.3.4.1.26": 16,
	"2.16.840.1.101.3.4.1.42": 16,
	"2.16.840.1.101.3.4.1.46": 16,
	"1.2.840.113549.3.7":      8,
}

// checkEncryptedKeyParams refuses an EncryptedPrivateKeyInfo that
// github.com/youmark/pkcs8 would choke on before it ever looks at the
// password: it hands the file's IV and ciphertext to crypto/cipher's CBC
// mode unchecked, which panics on an IV that is not one block or on data
// that is not whole blocks, and it runs whatever PBKDF2 iteration count or
// scrypt cost the file names, so a corrupt or hostile file could hang or
// exhaust memory. Schemes the library does not support are left to it.
func checkEncryptedKeyParams(der []byte) error {
	malformed := errors.New("malformed encrypted PKCS#8 structure")
	var e encryptedPrivateKeyInfo
	if _, err := asn1.Unmarshal(der, &e); err != nil {
		return malformed
	}
	if !e.Algorithm.Algorithm.Equal(oidPBES2) {
		return nil
	}
	var p pbes2Params
	if _, err := asn1.Unmarshal(e.Algorithm.Parameters.FullBytes, &p); err != nil {
		return malformed
	}
	switch {
	case p.KDF.Algorithm.Equal(oidPBKDF2):
		var k pbkdf2Params
		if _, err := asn1.Unmarshal(p.KDF.Parameters.FullBytes, &k); err != nil {
			return malformed
		}
		if k.Iterations > maxPBKDF2Iterations {
			return fmt.Errorf("PBKDF2 iteration count %d is above the limit of %d", k.Iterations, maxPBKDF2Iterations)
		}
	case p.KDF.Algorithm.Equal(oidScrypt):
		var s scryptParams
		if _, err := asn1.Unmarshal(p.KDF.Parameters.FullBytes, &s); err != nil {
			return malformed
		}
		// Non-positive values are refused by scrypt itself.
		if s.Cost > 0 && s.BlockSize > 0 && s.Parallelism > 0 {
			work := uint64(128)
			for _, f := range []int{s.Cost, s.BlockSize, s.Parallelism} {
				if uint64(f) > maxScryptWork/work {
					return fmt.Errorf("scrypt parameters (N=%d, r=%d, p=%d) are above the limit", s.Cost, s.BlockSize, s.Parallelism)
				}
				work *= uint64(f)
			}
		}
	}
	block, ok := pbes2BlockSizes[p.Scheme.Algorithm.String()]
	if !ok {
		return nil
	}
	var iv []byte
	if _, err := asn1.Unmarshal(p.Scheme.Parameters.FullBytes, &iv); err != nil {
		return nil // the library refuses parameters that are no octet string
	}
	if len(iv) != block || len(e.EncryptedData) == 0 || len(e.EncryptedData)%block != 0 {
		return malformed
	}
	return nil
}

// LoadPrivateKey reads and decodes a private key file.
func LoadPrivateKey(path string, password []byte) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := ParsePrivateKeyPEM(data, password)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// IsEncryptedKeyFile reports whether the key file at path is encrypted.
func IsEncryptedKeyFile(path string) (bool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return false, err
	}
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return false, fmt.Errorf("%s: %w: expected a private key", path, ErrNoPEM)
		}
		switch b.Type {
		case "ENCRYPTED PRIVATE KEY":
			return true, nil
		case "PRIVATE KEY", "EC PRIVATE KEY", "RSA PRIVATE KEY":
			return b.Headers["Proc-Type"] != "", nil
		}
	}
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

// ReadPasswordFile returns the first line of a password file, without its
// line ending: what key_password_file, socks.password_file and the pki
// commands' --password-file flags name. Whether the file is private enough
// is its caller's check (config refuses, the CLI warns).
func ReadPasswordFile(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read password file: %w", err)
	}
	line, _, _ := bufio.NewReader(bytes.NewReader(data)).ReadLine()
	line = bytes.TrimRight(line, "\r")
	if len(line) == 0 {
		return nil, fmt.Errorf("password file %s: first line is empty", path)
	}
	return append([]byte(nil), line...), nil
}
