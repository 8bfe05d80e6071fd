// Package pbe holds the ASN.1 shapes of password-based encryption as
// encrypted PKCS#8 keys carry it (RFC 5208, PKCS#5 v2.1 in RFC 8018), for
// the two packages that read them without decrypting: pki, to refuse a key
// file whose parameters would crash or stall the decrypting library, and
// inspect, to say how a key or PKCS#12 file is protected. Decryption itself
// is github.com/youmark/pkcs8's and go-pkcs12's.
package pbe

import "encoding/asn1"

// AlgorithmIdentifier is X.509's AlgorithmIdentifier.
type AlgorithmIdentifier struct {
	Algorithm  asn1.ObjectIdentifier
	Parameters asn1.RawValue `asn1:"optional"`
}

// EncryptedPrivateKeyInfo is an encrypted PKCS#8 key (RFC 5208 6).
type EncryptedPrivateKeyInfo struct {
	Algorithm     AlgorithmIdentifier
	EncryptedData []byte
}

// PBES2Params are the parameters of PBES2 (RFC 8018 A.4): a key derivation
// function and a cipher.
type PBES2Params struct {
	KDF    AlgorithmIdentifier
	Scheme AlgorithmIdentifier
}

// PBKDF2Params are the parameters of PBKDF2 (RFC 8018 A.2).
type PBKDF2Params struct {
	Salt       []byte
	Iterations int
	KeyLength  int                 `asn1:"optional"`
	PRF        AlgorithmIdentifier `asn1:"optional"`
}

// ScryptParams are the parameters of scrypt (RFC 7914 7.1).
type ScryptParams struct {
	Salt        []byte
	Cost        int
	BlockSize   int
	Parallelism int
	KeyLength   int `asn1:"optional"`
}

// Algorithm identifiers of the key derivation schemes above.
var (
	OIDPBES2  = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}
	OIDPBKDF2 = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 12}
	OIDScrypt = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 11591, 4, 11}
)
