// Package swtpmtest starts a software TPM (Debian's swtpm) for tests of
// code that takes tpm: key references, outside package tpmkey.
package swtpmtest

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Start runs a fresh swtpm serving the TPM command protocol on a unix
// socket and returns the socket's path, which a tpm: reference takes as
// its device; it is stopped when the test ends. Without swtpm the test is
// skipped, unless CI is set (.ci/run installs it): then it fails.
func Start(t testing.TB) string {
	t.Helper()
	if _, err := exec.LookPath("swtpm"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("swtpm is not installed and CI is set: .ci/run must install swtpm")
		}
		t.Skip("swtpm is not installed (apt-get install swtpm swtpm-tools); .ci/run installs it")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "tpm.sock")
	cmd := exec.Command("swtpm", "socket", "--tpm2", "--tpmstate", "dir="+dir,
		"--flags", "not-need-init,startup-clear", "--server", "type=unixio,path="+sock)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	// The socket exists a moment before swtpm listens: poll until it
	// accepts (swtpm takes an empty connection as a client that left).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			return sock
		}
		if time.Now().After(deadline) {
			t.Fatal("swtpm did not come up")
		}
	}
}
