package osstore

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"math/big"
	"strings"
	"testing"
)

func TestAlgorithmFor(t *testing.T) {
	ec := genKey(t, "p256").Public()
	rk := genKey(t, "rsa").Public()
	d := func(h crypto.Hash) []byte { return make([]byte, h.Size()) }
	pss := func(salt int) *rsa.PSSOptions { return &rsa.PSSOptions{SaltLength: salt, Hash: crypto.SHA256} }
	for _, tc := range []struct {
		name   string
		pub    crypto.PublicKey
		digest []byte
		opts   crypto.SignerOpts
		want   algorithm
		mac    string
		flags  uint32
		hash   string
		salt   uint32
	}{
		{"ecdsa sha256", ec, d(crypto.SHA256), crypto.SHA256, algorithm{hash: crypto.SHA256}, "kSecKeyAlgorithmECDSASignatureDigestX962SHA256", 0, "", 0},
		{"ecdsa sha384", ec, d(crypto.SHA384), crypto.SHA384, algorithm{hash: crypto.SHA384}, "kSecKeyAlgorithmECDSASignatureDigestX962SHA384", 0, "", 0},
		{"ecdsa sha512", ec, d(crypto.SHA512), crypto.SHA512, algorithm{hash: crypto.SHA512}, "kSecKeyAlgorithmECDSASignatureDigestX962SHA512", 0, "", 0},
		{"ecdsa sha1", ec, d(crypto.SHA1), crypto.SHA1, algorithm{hash: crypto.SHA1}, "kSecKeyAlgorithmECDSASignatureDigestX962SHA1", 0, "", 0},
		{"rsa pkcs1 sha256", rk, d(crypto.SHA256), crypto.SHA256, algorithm{rsa: true, hash: crypto.SHA256}, "kSecKeyAlgorithmRSASignatureDigestPKCS1v15SHA256", bcryptPadPKCS1, "SHA256", 0},
		{"rsa pkcs1 sha512", rk, d(crypto.SHA512), crypto.SHA512, algorithm{rsa: true, hash: crypto.SHA512}, "kSecKeyAlgorithmRSASignatureDigestPKCS1v15SHA512", bcryptPadPKCS1, "SHA512", 0},
		{"rsa pss equals hash", rk, d(crypto.SHA256), pss(rsa.PSSSaltLengthEqualsHash), algorithm{rsa: true, pss: true, hash: crypto.SHA256}, "kSecKeyAlgorithmRSASignatureDigestPSSSHA256", bcryptPadPSS, "SHA256", 32},
		{"rsa pss 32", rk, d(crypto.SHA256), pss(32), algorithm{rsa: true, pss: true, hash: crypto.SHA256}, "kSecKeyAlgorithmRSASignatureDigestPSSSHA256", bcryptPadPSS, "SHA256", 32},
		{"rsa pss sha384", rk, d(crypto.SHA384), &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA384}, algorithm{rsa: true, pss: true, hash: crypto.SHA384}, "kSecKeyAlgorithmRSASignatureDigestPSSSHA384", bcryptPadPSS, "SHA384", 48},
	} {
		got, err := algorithmFor(tc.pub, tc.digest, tc.opts)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
		if m := got.secKeyAlgorithm(); m != tc.mac {
			t.Errorf("%s: macOS %s, want %s", tc.name, m, tc.mac)
		}
		if f, h, s := got.ncrypt(); f != tc.flags || h != tc.hash || s != tc.salt {
			t.Errorf("%s: NCrypt flags %#x hash %q salt %d, want %#x %q %d", tc.name, f, h, s, tc.flags, tc.hash, tc.salt)
		}
	}

	for _, tc := range []struct {
		name   string
		pub    crypto.PublicKey
		digest []byte
		opts   crypto.SignerOpts
		want   string
	}{
		{"no opts", ec, d(crypto.SHA256), nil, "no signer options"},
		{"no hash", ec, d(crypto.SHA256), crypto.Hash(0), "without a hash"},
		{"md5", rk, make([]byte, 16), crypto.MD5, "hash MD5 not supported"},
		{"short digest", ec, d(crypto.SHA1), crypto.SHA256, "digest is 20 bytes, SHA-256 needs 32"},
		{"pss for ecdsa", ec, d(crypto.SHA256), pss(rsa.PSSSaltLengthEqualsHash), "PSS options for an ECDSA key"},
		{"pss auto", rk, d(crypto.SHA256), pss(rsa.PSSSaltLengthAuto), "salt length 0 not supported"},
		{"pss other", rk, d(crypto.SHA256), pss(20), "salt length 20 not supported"},
		{"ed25519", genKey(t, "ed25519").Public(), d(crypto.SHA256), crypto.SHA256, "unsupported key type"},
	} {
		_, err := algorithmFor(tc.pub, tc.digest, tc.opts)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error about %q", tc.name, err, tc.want)
		}
	}
}

// TestECDSARawToDER checks the conversion of CNG's r||s against Go's
// verifier, for each curve, with digests shorter and longer than the
// curve (the case that splitting by the digest's length gets wrong), and
// with r or s short enough to need their leading zero bytes.
func TestECDSARawToDER(t *testing.T) {
	for _, curve := range []string{"p256", "p384", "p521"} {
		key := genKey(t, curve).(*ecdsa.PrivateKey)
		n := (key.Curve.Params().BitSize + 7) / 8
		short := sha256.Sum256([]byte("m"))
		long := sha512.Sum512([]byte("m"))
		for _, digest := range [][]byte{short[:], long[:]} {
			sawShort := false
			for i := 0; i < 5000 && (i < 3 || !sawShort); i++ {
				r, s, err := ecdsa.Sign(rand.Reader, key, digest)
				if err != nil {
					t.Fatal(err)
				}
				if len(r.Bytes()) < n || len(s.Bytes()) < n {
					sawShort = true
				}
				raw := make([]byte, 2*n)
				r.FillBytes(raw[:n])
				s.FillBytes(raw[n:])
				der, err := ecdsaRawToDER(raw)
				if err != nil {
					t.Fatal(err)
				}
				if !ecdsa.VerifyASN1(&key.PublicKey, digest, der) {
					t.Fatalf("%s, %d-byte digest: converted signature does not verify", curve, len(digest))
				}
			}
			if !sawShort {
				t.Errorf("%s: no signature with a short r or s in 5000 tries", curve)
			}
		}
	}
	for _, raw := range [][]byte{nil, {1, 2, 3}, make([]byte, 64), append(make([]byte, 32), big.NewInt(1).FillBytes(make([]byte, 32))...)} {
		if _, err := ecdsaRawToDER(raw); err == nil {
			t.Errorf("ecdsaRawToDER(%x) accepted", raw)
		}
	}
}
