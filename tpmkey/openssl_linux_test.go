package tpmkey

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestOpenSSLInterop: the key files are those of the tpm2 OpenSSL provider
// (Debian's tpm2-openssl), both ways, on the same (software) TPM. OpenSSL
// reaches swtpm over TCP through tpm2-tss's swtpm TCTI, twoway over its unix
// socket, so the TPM is restarted between them on the same state.
func TestOpenSSLInterop(t *testing.T) {
	tpm := startSWTPM(t)
	if _, err := os.Stat(filepath.Join(modulesDir(t), "tpm2.so")); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("the tpm2 OpenSSL provider is not installed and CI is set: .ci/run must install tpm2-openssl")
		}
		t.Skip("the tpm2 OpenSSL provider is not installed (apt-get install tpm2-openssl); .ci/run installs it")
	}
	dir := t.TempDir()
	ours := filepath.Join(dir, "twoway.tpm")
	k, err := Generate(tpm.ref("blob=" + ours))
	if err != nil {
		t.Fatal(err)
	}
	ourPub := k.Public().(*ecdsa.PublicKey)
	k.Close()

	// OpenSSL's turn, over TCP.
	tpm.stop()
	tpm.port = freePortPair(t)
	tpm.start()
	openssl := func(args ...string) []byte {
		t.Helper()
		cmd := exec.Command("openssl", args...)
		cmd.Env = append(os.Environ(), fmt.Sprintf("TPM2OPENSSL_TCTI=swtpm:host=127.0.0.1,port=%d", tpm.port))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("openssl %v: %v\n%s", args, err, out)
		}
		return out
	}
	tpm2 := []string{"-provider", "tpm2", "-provider", "default", "-propquery", "?provider=tpm2"}

	// OpenSSL loads twoway's key and signs with it in the TPM.
	pubPEM := openssl(append([]string{"pkey", "-in", ours, "-pubout"}, tpm2...)...)
	if !ourPub.Equal(parsePub(t, pubPEM)) {
		t.Fatalf("openssl sees another public key in twoway's key file")
	}
	msg := filepath.Join(dir, "msg")
	os.WriteFile(msg, []byte("signed by openssl"), 0o600)
	sig := openssl(append([]string{"pkeyutl", "-sign", "-inkey", ours, "-rawin", "-digest", "sha256", "-in", msg}, tpm2...)...)
	digest := sha256.Sum256([]byte("signed by openssl"))
	if !ecdsa.VerifyASN1(ourPub, digest[:], sig) {
		t.Fatalf("openssl's signature with twoway's key does not verify")
	}

	// OpenSSL makes a key; twoway uses it.
	theirs := filepath.Join(dir, "openssl.tpm")
	openssl(append([]string{"genpkey", "-algorithm", "EC", "-pkeyopt", "group:P-256", "-out", theirs}, tpm2...)...)
	theirPub := parsePub(t, openssl(append([]string{"pkey", "-in", theirs, "-pubout"}, tpm2...)...))
	os.Chmod(theirs, 0o600)

	tpm.stop()
	tpm.port = 0
	tpm.start()
	k, err = Open(tpm.ref("blob=" + theirs))
	if err != nil {
		t.Fatalf("open openssl's key: %v", err)
	}
	defer k.Close()
	if !theirPub.Equal(k.Public()) {
		t.Fatalf("twoway sees another public key in openssl's key file")
	}
	signAndVerify(t, k, "openssl's key, twoway's signature")
}

func parsePub(t *testing.T, pemBytes []byte) *ecdsa.PublicKey {
	t.Helper()
	b, _ := pem.Decode(pemBytes)
	if b == nil {
		t.Fatalf("no PEM in %q", pemBytes)
	}
	pub, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	p, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		t.Fatalf("%T is not ECDSA", pub)
	}
	return p
}

// modulesDir is where openssl looks for providers.
func modulesDir(t *testing.T) string {
	out, err := exec.Command("openssl", "version", "-m").Output()
	if err != nil {
		t.Skipf("openssl: %v", err)
	}
	// MODULESDIR: "/usr/lib/x86_64-linux-gnu/ossl-modules"
	_, dir, ok := strings.Cut(string(out), `"`)
	dir, _, _ = strings.Cut(dir, `"`)
	if !ok || dir == "" {
		t.Skipf("openssl version -m: %q", out)
	}
	return dir
}

// freePortPair finds two consecutive free loopback ports (swtpm's server and
// control channels), released for swtpm to take.
func freePortPair(t *testing.T) int {
	t.Helper()
	for i := 0; i < 20; i++ {
		a, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := a.Addr().(*net.TCPAddr).Port
		b, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port+1))
		a.Close()
		if err == nil {
			b.Close()
			return port
		}
	}
	t.Fatal("no two consecutive free loopback ports")
	return 0
}
