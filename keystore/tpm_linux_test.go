package keystore

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twoway/twoway/tpmkey/swtpmtest"
)

// TestTPMReference: a tpm: reference goes through keystore like a pkcs11:
// one (Check, Generate, Open, Delete), its key counts as in a store, and
// ResolveIn makes a configuration's relative key file absolute.
func TestTPMReference(t *testing.T) {
	sock := swtpmtest.Start(t)
	dir := t.TempDir()
	rel := "tpm:" + sock + "?blob=laptop.tpm"
	if err := Check(rel); err == nil {
		t.Fatal("Check accepted a relative key file")
	}
	ref := ResolveIn(rel, dir)
	if want := filepath.Join(dir, "laptop.tpm"); !strings.Contains(ref, "blob="+want) {
		t.Fatalf("ResolveIn: %s, want blob=%s", ref, want)
	}
	if err := Check(ref); err != nil {
		t.Fatal(err)
	}
	k, err := Generate(ref)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Generate(ref); err == nil || !strings.Contains(err.Error(), ErrExists.Error()) {
		t.Errorf("second Generate: %v, want %v", err, ErrExists)
	}
	k.Close()
	k, err = Open(ref)
	if err != nil {
		t.Fatal(err)
	}
	if !InStore(k) {
		t.Error("a TPM key does not count as in a store")
	}
	digest := sha256.Sum256([]byte("hello"))
	sig, err := k.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(k.Public().(*ecdsa.PublicKey), digest[:], sig) {
		t.Fatal("signature does not verify")
	}
	if err := k.Delete(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "laptop.tpm")); !os.IsNotExist(err) {
		t.Errorf("key file after Delete: %v", err)
	}
}
