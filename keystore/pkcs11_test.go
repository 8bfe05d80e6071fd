//go:build cgo

package keystore_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"

	"github.com/twoway/twoway/keystore"
	"github.com/twoway/twoway/keystore/softhsmtest"
)

func sign(t *testing.T, k crypto.Signer) error {
	t.Helper()
	d := sha256.Sum256([]byte("hello"))
	sig, err := k.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil {
		return err
	}
	if !ecdsa.VerifyASN1(k.Public().(*ecdsa.PublicKey), d[:], sig) {
		t.Fatal("signature does not verify with the key's public half")
	}
	return nil
}

func open(t *testing.T, ref string, gen bool) keystore.Key {
	t.Helper()
	f := keystore.Open
	if gen {
		f = keystore.Generate
	}
	k, err := f(ref)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { k.Close() })
	return k
}

// TestGenerateOpenSign: a key generated in the token signs, is found again
// by a second Open, and cannot be generated twice.
func TestGenerateOpenSign(t *testing.T) {
	h := softhsmtest.New(t)
	h.InitToken("laptop")
	ref := h.URI("laptop", "twoway")
	k := open(t, ref, true)
	if err := sign(t, k); err != nil {
		t.Fatal(err)
	}
	k2 := open(t, ref, false)
	if !k2.Public().(*ecdsa.PublicKey).Equal(k.Public()) {
		t.Fatal("Open found another key than Generate made")
	}
	if err := sign(t, k2); err != nil {
		t.Fatal(err)
	}
	if _, err := keystore.Generate(ref); !errors.Is(err, keystore.ErrExists) {
		t.Fatalf("second Generate: %v, want ErrExists", err)
	}
	if err := k2.Delete(); err != nil {
		t.Fatal(err)
	}
	if _, err := keystore.Open(ref); !errors.Is(err, keystore.ErrUnavailable) || !strings.Contains(err.Error(), "no such key") {
		t.Fatalf("Open after Delete: %v, want no such key", err)
	}
	open(t, ref, true) // the name is free again
}

// TestPulledAndBack: a pulled token makes Sign fail with ErrUnavailable
// and an error naming the key; plugged back in, the same key signs again.
func TestPulledAndBack(t *testing.T) {
	h := softhsmtest.New(t)
	h.InitToken("laptop")
	ref := h.URI("laptop", "twoway")
	k := open(t, ref, true)
	if err := sign(t, k); err != nil {
		t.Fatal(err)
	}
	h.Pull()
	err := sign(t, k)
	t.Logf("pulled: %v", err)
	if !errors.Is(err, keystore.ErrUnavailable) || !strings.Contains(err.Error(), ref) {
		t.Fatalf("sign with the token pulled: %v, want ErrUnavailable naming %s", err, ref)
	}
	h.PlugIn()
	if err := sign(t, k); err != nil {
		t.Fatalf("sign after the token came back: %v", err)
	}
}

// BenchmarkTokenSign measures one ECDSA P-256 signature in the token, the
// cost a handshake pays for a key there (SoftHSM2 here; hardware tokens
// are far slower).
func BenchmarkTokenSign(b *testing.B) {
	h := softhsmtest.New(b)
	h.InitToken("bench")
	k, err := keystore.Generate(h.URI("bench", "k"))
	if err != nil {
		b.Fatal(err)
	}
	defer k.Close()
	d := sha256.Sum256([]byte("hello"))
	for b.Loop() {
		if _, err := k.Sign(rand.Reader, d[:], crypto.SHA256); err != nil {
			b.Fatal(err)
		}
	}
}
