// Package softhsmtest makes SoftHSM2 tokens for tests: each test gets its
// own token directory and configuration, so tests never see each other's
// keys or the machine's tokens.
//
// SoftHSM2 reads its configuration (SOFTHSM2_CONF) when the library is
// initialised, and the library stays initialised while any key opened
// from it is open; a test must close every key it opens (keystore.Key's
// Close, registered with t.Cleanup) for the next test's directory to be
// the one used. New sets SOFTHSM2_CONF with t.Setenv, so such tests
// cannot run in parallel.
package softhsmtest

import (
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// PIN and SOPIN are the PINs of every test token.
const (
	PIN   = "pin-Xq7w"
	SOPIN = "so-pin-Zr4k"
)

// modules are where distributions put SoftHSM2's PKCS#11 library.
var modules = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib64/pkcs11/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
	"/opt/homebrew/lib/softhsm/libsofthsm2.so",
}

// HSM is one test's SoftHSM2 token directory.
type HSM struct {
	Module   string // the PKCS#11 library
	TokenDir string // directories.tokendir
	PINFile  string // holds PIN, mode 0600
	t        testing.TB
}

// New makes an empty token directory and points SOFTHSM2_CONF at it. It
// skips the test when SoftHSM2 is not installed, unless CI is set: there
// .ci/run installs it, so a missing SoftHSM2 is a failure.
func New(t testing.TB) *HSM {
	t.Helper()
	h := &HSM{t: t}
	for _, m := range modules {
		if _, err := os.Stat(m); err == nil {
			h.Module = m
			break
		}
	}
	_, err := exec.LookPath("softhsm2-util")
	if h.Module == "" || err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("SoftHSM2 is not installed, and CI is set: .ci/run should have installed softhsm2")
		}
		t.Skip("SoftHSM2 is not installed (apt-get install softhsm2); .ci/run installs it")
	}
	dir := t.TempDir()
	h.TokenDir = filepath.Join(dir, "tokens")
	if err := os.Mkdir(h.TokenDir, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	text := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", h.TokenDir)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)
	h.PINFile = filepath.Join(dir, "pin")
	if err := os.WriteFile(h.PINFile, []byte(PIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return h
}

// InitToken makes a token labelled label, with PIN and SOPIN. Make every
// token before opening a key: the library lists the tokens that existed
// when it was initialised.
func (h *HSM) InitToken(label string) {
	h.t.Helper()
	out, err := exec.Command("softhsm2-util", "--init-token", "--free", "--label", label, "--pin", PIN, "--so-pin", SOPIN).CombinedOutput()
	if err != nil {
		h.t.Fatalf("softhsm2-util --init-token: %v\n%s", err, out)
	}
}

// URI is the key reference of the key labelled object in the token
// labelled token, with the PIN file.
func (h *HSM) URI(token, object string) string {
	return fmt.Sprintf("pkcs11:token=%s;object=%s?module-path=%s&pin-source=file:%s",
		url.PathEscape(token), url.PathEscape(object), h.Module, h.PINFile)
}

// Pull takes every token of h away, as pulling a USB token out does: the
// token directory moves aside, so the library finds neither the token
// nor its objects. PlugIn puts it back.
func (h *HSM) Pull() {
	h.t.Helper()
	if err := os.Rename(h.TokenDir, h.TokenDir+".away"); err != nil {
		h.t.Fatal(err)
	}
}

// PlugIn undoes Pull.
func (h *HSM) PlugIn() {
	h.t.Helper()
	if err := os.Rename(h.TokenDir+".away", h.TokenDir); err != nil {
		h.t.Fatal(err)
	}
}
