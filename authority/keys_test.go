package authority_test

import (
	"crypto"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twoway/twoway/authority"
	"github.com/twoway/twoway/pki"
)

func TestKeyRoundTrip(t *testing.T) {
	for _, kt := range []authority.KeyType{authority.KeyECDSAP256, authority.KeyEd25519, authority.KeyRSA3072} {
		t.Run(string(kt), func(t *testing.T) {
			key, err := authority.GenerateKey(kt)
			if err != nil {
				t.Fatal(err)
			}
			for _, pw := range [][]byte{nil, []byte("correct horse")} {
				data, err := authority.MarshalPrivateKeyPEM(key, pw)
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
	for in, want := range map[string]authority.KeyType{"": authority.KeyECDSAP256, "ECDSA-P256": authority.KeyECDSAP256, "ed25519": authority.KeyEd25519, "rsa": authority.KeyRSA3072} {
		got, err := authority.ParseKeyType(in)
		if err != nil || got != want {
			t.Errorf("ParseKeyType(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := authority.ParseKeyType("dsa"); !errors.Is(err, authority.ErrUnknownKeyType) {
		t.Errorf("dsa: %v", err)
	}
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "k.key")
	if err := authority.WriteFile(p, []byte("one"), 0o600, false); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode())
	}
	if err := authority.WriteFile(p, []byte("two"), 0o600, false); !errors.Is(err, authority.ErrExists) {
		t.Fatalf("overwrite without force: %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "one" {
		t.Fatalf("content changed to %q", b)
	}
	if err := authority.WriteFile(p, []byte("two"), 0o644, true); err != nil {
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
	key, _ := authority.GenerateKey(authority.KeyECDSAP256)
	data, _ := authority.MarshalPrivateKeyPEM(key, []byte("s3cret"))
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
