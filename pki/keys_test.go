package pki_test

import (
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twoway/twoway/authority"
	"github.com/twoway/twoway/pki"
)

func TestParsePrivateKeyCorrupt(t *testing.T) {
	key, _ := authority.GenerateKey(authority.KeyECDSAP256)
	data, _ := authority.MarshalPrivateKeyPEM(key, nil)
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
	key, _ := authority.GenerateKey(authority.KeyECDSAP256)
	data, err := authority.MarshalPrivateKeyPEM(key, []byte("pw"))
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
