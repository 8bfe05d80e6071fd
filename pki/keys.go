package pki

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/youmark/pkcs8"

	"github.com/twoway/twoway/internal/pbe"
)

// Errors about private keys that callers branch on.
var (
	ErrPasswordRequired = errors.New("key is encrypted: password required")
	ErrBadPassword      = errors.New("wrong password")
)

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
	var e pbe.EncryptedPrivateKeyInfo
	if _, err := asn1.Unmarshal(der, &e); err != nil {
		return malformed
	}
	if !e.Algorithm.Algorithm.Equal(pbe.OIDPBES2) {
		return nil
	}
	var p pbe.PBES2Params
	if _, err := asn1.Unmarshal(e.Algorithm.Parameters.FullBytes, &p); err != nil {
		return malformed
	}
	switch {
	case p.KDF.Algorithm.Equal(pbe.OIDPBKDF2):
		var k pbe.PBKDF2Params
		if _, err := asn1.Unmarshal(p.KDF.Parameters.FullBytes, &k); err != nil {
			return malformed
		}
		if k.Iterations > maxPBKDF2Iterations {
			return fmt.Errorf("PBKDF2 iteration count %d is above the limit of %d", k.Iterations, maxPBKDF2Iterations)
		}
	case p.KDF.Algorithm.Equal(pbe.OIDScrypt):
		var s pbe.ScryptParams
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
