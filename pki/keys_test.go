package pki_test

import (
	"crypto"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twoway/twoway/pki"
)

func TestKeyRoundTrip(t *testing.T) {
	for _, kt := range []pki.KeyType{pki.KeyECDSAP256, pki.KeyEd25519, pki.KeyRSA3072} {
		t.Run(string(kt), func(t *testing.T) {
			key, err := pki.GenerateKey(kt)
			if err != nil {
				t.Fatal(err)
			}
			for _, pw := range [][]byte{nil, []byte("correct horse")} {
				data, err := pki.MarshalPrivateKeyPEM(key, pw)
				if err != nil {
					t.Fatal(err)
				}
				wantType := "PRIVATE KEY"
				if pw != nil {
					wantType = "ENCRYPTED PRIVATE KEY"
				}
				if !strings.Contains(string(data), "BEGIN "+wantType+"-----") {
					t.Fatalf("PEM type: %s", data[:40])
				}
				back, err := pki.ParsePrivateKeyPEM(data, pw)
				if err != nil {
					t.Fatal(err)
				}
				if err := checkSamePublic(key, back); err != nil {
					t.Fatal(err)
				}
				if pw != nil {
					if _, err := pki.ParsePrivateKeyPEM(data, nil); !errors.Is(err, pki.ErrPasswordRequired) {
						t.Fatalf("no password: %v", err)
					}
					if _, err := pki.ParsePrivateKeyPEM(data, []byte("wrong")); !errors.Is(err, pki.ErrBadPassword) {
						t.Fatalf("wrong password: %v", err)
					}
				}
			}
		})
	}
}

func checkSamePublic(a, b crypto.Signer) error {
	if !a.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(b.Public()) {
		return errors.New("public keys differ")
	}
	return nil
}

func TestParseKeyType(t *testing.T) {
	for in, want := range map[string]pki.KeyType{"": pki.KeyECDSAP256, "ECDSA-P256": pki.KeyECDSAP256, "ed25519": pki.KeyEd25519, "rsa": pki.KeyRSA3072} {
		got, err := pki.ParseKeyType(in)
		if err != nil || got != want {
			t.Errorf("ParseKeyType(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := pki.ParseKeyType("dsa"); !errors.Is(err, pki.ErrUnknownKeyType) {
		t.Errorf("dsa: %v", err)
	}
}

func TestParsePrivateKeyCorrupt(t *testing.T) {
	key, _ := pki.GenerateKey(pki.KeyECDSAP256)
	data, _ := pki.MarshalPrivateKeyPEM(key, nil)
	for name, in := range map[string][]byte{
		"empty":     nil,
		"truncated": data[:len(data)/2],
		"garbage":   []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
		"cert only": []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
	} {
		if _, err := pki.ParsePrivateKeyPEM(in, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// The ASN.1 of an encrypted PKCS#8 key (RFC 5208, RFC 8018), to corrupt one.
type (
	testAlgID struct {
		Algorithm  asn1.ObjectIdentifier
		Parameters asn1.RawValue `asn1:"optional"`
	}
	testEPKI struct {
		Alg  testAlgID
		Data []byte
	}
	testPBES2 struct {
		KDF    testAlgID
		Scheme testAlgID
	}
	testPBKDF2 struct {
		Salt       []byte
		Iterations int
		PRF        testAlgID `asn1:"optional"`
	}
)

// TestParseEncryptedKeyMalformed feeds corrupt encrypted keys, with a
// password, to ParsePrivateKeyPEM (as Inspect and LoadPrivateKey do). The
// PKCS#8 library used to panic on an IV or ciphertext that is not whole
// cipher blocks, and to run any iteration count the file asked for.
func TestParseEncryptedKeyMalformed(t *testing.T) {
	key, _ := pki.GenerateKey(pki.KeyECDSAP256)
	data, err := pki.MarshalPrivateKeyPEM(key, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(data)
	// mutate re-encodes the key after change has edited its parts.
	mutate := func(t *testing.T, change func(e *testEPKI, p *testPBES2, k *testPBKDF2, iv *[]byte)) []byte {
		t.Helper()
		var e testEPKI
		var p testPBES2
		var k testPBKDF2
		var iv []byte
		if _, err := asn1.Unmarshal(b.Bytes, &e); err != nil {
			t.Fatal(err)
		}
		if _, err := asn1.Unmarshal(e.Alg.Parameters.FullBytes, &p); err != nil {
			t.Fatal(err)
		}
		if _, err := asn1.Unmarshal(p.KDF.Parameters.FullBytes, &k); err != nil {
			t.Fatal(err)
		}
		if _, err := asn1.Unmarshal(p.Scheme.Parameters.FullBytes, &iv); err != nil {
			t.Fatal(err)
		}
		change(&e, &p, &k, &iv)
		must := func(v any) []byte {
			der, err := asn1.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			return der
		}
		p.KDF.Parameters = asn1.RawValue{FullBytes: must(k)}
		p.Scheme.Parameters = asn1.RawValue{FullBytes: must(iv)}
		e.Alg.Parameters = asn1.RawValue{FullBytes: must(p)}
		return pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: must(e)})
	}
	if _, err := pki.ParsePrivateKeyPEM(mutate(t, func(*testEPKI, *testPBES2, *testPBKDF2, *[]byte) {}), []byte("pw")); err != nil {
		t.Fatalf("re-encoded key unchanged: %v", err)
	}
	cases := map[string]func(e *testEPKI, p *testPBES2, k *testPBKDF2, iv *[]byte){
		"ciphertext not whole blocks": func(e *testEPKI, _ *testPBES2, _ *testPBKDF2, _ *[]byte) { e.Data = e.Data[:len(e.Data)-3] },
		"empty ciphertext":            func(e *testEPKI, _ *testPBES2, _ *testPBKDF2, _ *[]byte) { e.Data = nil },
		"short IV":                    func(_ *testEPKI, _ *testPBES2, _ *testPBKDF2, iv *[]byte) { *iv = (*iv)[:8] },
		"long IV":                     func(_ *testEPKI, _ *testPBES2, _ *testPBKDF2, iv *[]byte) { *iv = append(*iv, 0) },
		"3DES with an AES IV": func(_ *testEPKI, p *testPBES2, _ *testPBKDF2, _ *[]byte) {
			p.Scheme.Algorithm = asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 7}
		},
		"absurd iteration count": func(_ *testEPKI, _ *testPBES2, k *testPBKDF2, _ *[]byte) { k.Iterations = 1 << 50 },
	}
	for name, change := range cases {
		t.Run(name, func(t *testing.T) {
			in := mutate(t, change)
			done := make(chan error, 1)
			go func() {
				defer func() {
					if r := recover(); r != nil {
						done <- fmt.Errorf("panic: %v", r)
					}
				}()
				_, err := pki.ParsePrivateKeyPEM(in, []byte("pw"))
				if err == nil {
					err = errors.New("accepted")
				} else {
					err = nil
				}
				done <- err
			}()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("still deriving the key after 10s")
			}
		})
	}
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "k.key")
	if err := pki.WriteFile(p, []byte("one"), 0o600, false); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode())
	}
	if err := pki.WriteFile(p, []byte("two"), 0o600, false); !errors.Is(err, pki.ErrExists) {
		t.Fatalf("overwrite without force: %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "one" {
		t.Fatalf("content changed to %q", b)
	}
	if err := pki.WriteFile(p, []byte("two"), 0o644, true); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "two" {
		t.Fatalf("content %q", b)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("temp files left behind: %v", entries)
	}
}

// TestEncryptedKeyOpenSSL checks that openssl reads our encrypted PKCS#8.
func TestEncryptedKeyOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed; .ci/run installs it")
	}
	dir := t.TempDir()
	key, _ := pki.GenerateKey(pki.KeyECDSAP256)
	data, _ := pki.MarshalPrivateKeyPEM(key, []byte("s3cret"))
	kp := filepath.Join(dir, "k.pem")
	pw := filepath.Join(dir, "pw")
	os.WriteFile(kp, data, 0o600)
	os.WriteFile(pw, []byte("s3cret\n"), 0o600)
	if out, err := exec.Command("openssl", "pkey", "-in", kp, "-passin", "file:"+pw, "-noout").CombinedOutput(); err != nil {
		t.Fatalf("openssl pkey: %v\n%s", err, out)
	}
	os.WriteFile(pw, []byte("wrong\n"), 0o600)
	if err := exec.Command("openssl", "pkey", "-in", kp, "-passin", "file:"+pw, "-noout").Run(); err == nil {
		t.Fatal("openssl accepted the wrong password")
	}
	// And the other way: a key openssl encrypted, read by us.
	ok := filepath.Join(dir, "o.pem")
	os.WriteFile(pw, []byte("s3cret\n"), 0o600)
	if out, err := exec.Command("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-aes-256-cbc", "-pass", "file:"+pw, "-out", ok).CombinedOutput(); err != nil {
		t.Fatalf("openssl genpkey: %v\n%s", err, out)
	}
	if _, err := pki.LoadPrivateKey(ok, []byte("s3cret")); err != nil {
		t.Fatalf("reading openssl's encrypted key: %v", err)
	}
}

func TestReadPasswordFile(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ content, want, err string }{
		{"s3cret\nignored\n", "s3cret", ""},
		{"s3cret\r\n", "s3cret", ""},
		{"s3cret", "s3cret", ""},
		{"\nsecond\n", "", "first line is empty"},
	} {
		p := filepath.Join(dir, "pw")
		os.WriteFile(p, []byte(tc.content), 0o600)
		got, err := pki.ReadPasswordFile(p)
		if string(got) != tc.want || (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%q: got %q, %v; want %q, %q", tc.content, got, err, tc.want, tc.err)
		}
	}
	if _, err := pki.ReadPasswordFile(filepath.Join(dir, "missing")); err == nil || !strings.HasPrefix(err.Error(), "read password file: ") {
		t.Errorf("missing file: %v", err)
	}
}
