package main

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/twoway/twoway/authority"
	"github.com/twoway/twoway/config"
	"github.com/twoway/twoway/enroll"
	"github.com/twoway/twoway/keystore"
	"github.com/twoway/twoway/tpmkey/swtpmtest"
)

// TestEnrollKeyInTPM: `twoway enroll --key tpm:...` makes the key in a
// (software) TPM, writes the TPM's key file, no plain key, and a
// client.toml naming the reference; that configuration connects, signing
// in the TPM. A refused enrollment removes the key file it made.
func TestEnrollKeyInTPM(t *testing.T) {
	sock := swtpmtest.Start(t)
	g := newEnrollTestGateway(t)
	blob := filepath.Join(g.dir, "laptop.tpm")
	ref := "tpm:" + sock + "?blob=" + blob
	o := enrollOptions{server: g.srv.Addr().String(), ca: filepath.Join(g.pkiDir, authority.ServerCADir, "bundle.crt"),
		token: "tw1-not-a-token", outDir: filepath.Join(g.dir, "laptop"), keyType: string(authority.KeyECDSAP256), key: ref, timeout: 10 * time.Second}
	if _, err := runEnroll(context.Background(), o); !errors.Is(err, enroll.ErrRefused) {
		t.Fatalf("enroll with a bad token: %v, want refused", err)
	}
	if _, err := os.Stat(blob); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after a refused enrollment the TPM key file is still there: %v", err)
	}

	var err error
	o.token, _, err = g.res.ClientCA.CreateToken(authority.TokenOptions{Name: "alice", Groups: []string{"eng"}, Days: 7})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := runEnroll(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(blob); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("TPM key file: %v %v, want mode 0600", fi, err)
	}
	if _, err := os.Stat(filepath.Join(o.outDir, enrollKeyFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a plain key file was written: %v", err)
	}
	c, err := config.LoadClient(filepath.Join(o.outDir, enrollConfigFile))
	if err != nil {
		t.Fatalf("written client.toml: %v", err)
	}
	if c.TLS.Key != ref {
		t.Fatalf("client.toml names key %q, want %q", c.TLS.Key, ref)
	}
	g.connect(t, c)
	o.outDir = filepath.Join(g.dir, "again")
	if _, err := runEnroll(context.Background(), o); !errors.Is(err, keystore.ErrExists) {
		t.Errorf("second enrollment into the same key file: %v, want ErrExists", err)
	}
}
