package osstore

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
)

// algorithm is a signature the OS is asked for: what Key.Sign's opts
// mean for the key at hand. The tables mapping it to each OS's names are
// here, not in the OS files, so that they are tested on every OS.
type algorithm struct {
	rsa  bool        // RSA; otherwise ECDSA
	pss  bool        // RSA only: PSS with a salt as long as the hash; otherwise PKCS #1 v1.5
	hash crypto.Hash // what digest was hashed with
}

func (a algorithm) String() string {
	switch {
	case !a.rsa:
		return "ECDSA with " + a.hash.String()
	case a.pss:
		return "RSA-PSS with " + a.hash.String()
	}
	return "RSA PKCS#1 v1.5 with " + a.hash.String()
}

// algorithmFor maps a crypto.Signer call to an algorithm, or says why the
// OS cannot do it, before anything reaches the OS.
func algorithmFor(pub crypto.PublicKey, digest []byte, opts crypto.SignerOpts) (algorithm, error) {
	if opts == nil {
		return algorithm{}, errors.New("no signer options: the hash must be named")
	}
	h := opts.HashFunc()
	switch h {
	case crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512:
	case 0:
		// What TLS 1.0/1.1 used (MD5+SHA1 unhashed) and Ed25519 want;
		// neither the keychain's nor CNG's keys here do that.
		return algorithm{}, errors.New("signing without a hash (opts.HashFunc() == 0) is not supported")
	default:
		return algorithm{}, fmt.Errorf("hash %v not supported (want SHA-1, SHA-256, SHA-384 or SHA-512)", h)
	}
	if len(digest) != h.Size() {
		return algorithm{}, fmt.Errorf("digest is %d bytes, %v needs %d", len(digest), h, h.Size())
	}
	switch pub.(type) {
	case *ecdsa.PublicKey:
		if _, ok := opts.(*rsa.PSSOptions); ok {
			return algorithm{}, errors.New("PSS options for an ECDSA key")
		}
		return algorithm{hash: h}, nil
	case *rsa.PublicKey:
		a := algorithm{rsa: true, hash: h}
		if o, ok := opts.(*rsa.PSSOptions); ok {
			// Both OSes salt with exactly the hash's length; that is
			// what crypto/tls and crypto/x509 ask for. "As long as
			// possible" (PSSSaltLengthAuto) cannot be honoured.
			if o.SaltLength != rsa.PSSSaltLengthEqualsHash && o.SaltLength != h.Size() {
				return algorithm{}, fmt.Errorf("PSS salt length %d not supported: the OS salts with the hash's length (%d)", o.SaltLength, h.Size())
			}
			a.pss = true
		}
		return a, nil
	}
	return algorithm{}, fmt.Errorf("unsupported key type %T", pub)
}

// secKeyAlgorithm is the name of the macOS SecKeyAlgorithm constant (a
// CFStringRef exported by Security.framework) for a: the "Digest"
// variants, which take a hash already computed, and X9.62 (DER) ECDSA
// signatures, what crypto.Signer returns.
func (a algorithm) secKeyAlgorithm() string {
	h := map[crypto.Hash]string{crypto.SHA1: "SHA1", crypto.SHA256: "SHA256", crypto.SHA384: "SHA384", crypto.SHA512: "SHA512"}[a.hash]
	switch {
	case !a.rsa:
		return "kSecKeyAlgorithmECDSASignatureDigestX962" + h
	case a.pss:
		return "kSecKeyAlgorithmRSASignatureDigestPSS" + h
	}
	return "kSecKeyAlgorithmRSASignatureDigestPKCS1v15" + h
}

// NCrypt padding flags (bcrypt.h).
const (
	bcryptPadPKCS1 = 0x2
	bcryptPadPSS   = 0x8
)

// ncrypt says how to call NCryptSignHash for a: the dwFlags padding flag
// (0 for ECDSA, which takes no padding information), the CNG hash
// algorithm name for BCRYPT_PKCS1_PADDING_INFO / BCRYPT_PSS_PADDING_INFO,
// and the PSS salt length in bytes.
func (a algorithm) ncrypt() (flags uint32, hashAlg string, salt uint32) {
	name := map[crypto.Hash]string{crypto.SHA1: "SHA1", crypto.SHA256: "SHA256", crypto.SHA384: "SHA384", crypto.SHA512: "SHA512"}[a.hash]
	switch {
	case !a.rsa:
		return 0, "", 0
	case a.pss:
		return bcryptPadPSS, name, uint32(a.hash.Size())
	}
	return bcryptPadPKCS1, name, 0
}

// ecdsaRawToDER converts an ECDSA signature as CNG returns it (r and s,
// big-endian, each as long as the curve's order: 64 bytes for P-256,
// 96 for P-384, 132 for P-521) to the ASN.1 DER that crypto.Signer
// returns. The halves are split by the signature's length, not the
// digest's: the two differ when, say, a P-384 key signs a SHA-256 digest.
func ecdsaRawToDER(raw []byte) ([]byte, error) {
	if len(raw) == 0 || len(raw)%2 != 0 {
		return nil, fmt.Errorf("ECDSA signature of %d bytes: want r and s of equal length", len(raw))
	}
	n := len(raw) / 2
	r, s := new(big.Int).SetBytes(raw[:n]), new(big.Int).SetBytes(raw[n:])
	if r.Sign() == 0 || s.Sign() == 0 {
		return nil, errors.New("ECDSA signature with r or s zero")
	}
	return asn1.Marshal(struct{ R, S *big.Int }{r, s})
}
