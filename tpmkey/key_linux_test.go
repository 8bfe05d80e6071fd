package tpmkey

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport/linuxudstpm"
)

// signAndVerify signs a fresh digest with k and checks the signature with
// crypto/ecdsa against k's public key.
func signAndVerify(t *testing.T, k *Key, msg string) {
	t.Helper()
	digest := sha256.Sum256([]byte(msg))
	sig, err := k.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	pub, ok := k.Public().(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Fatalf("Public() = %T %v, want a P-256 *ecdsa.PublicKey", k.Public(), k.Public())
	}
	if !ecdsa.VerifyASN1(pub, digest[:], sig) {
		t.Fatalf("signature does not verify")
	}
	other := sha256.Sum256([]byte(msg + "!"))
	if ecdsa.VerifyASN1(pub, other[:], sig) {
		t.Fatalf("signature verifies for another digest")
	}
}

func TestGenerateOpenSign(t *testing.T) {
	tpm := startSWTPM(t)
	dir := t.TempDir()
	for _, ref := range []string{
		tpm.ref("blob=" + filepath.Join(dir, "key.tpm")),
		tpm.ref("handle=0x81000010"),
	} {
		t.Run(ref, func(t *testing.T) {
			k, err := Generate(ref)
			if err != nil {
				t.Fatalf("Generate: %v", err)
			}
			signAndVerify(t, k, "generated")
			pub := k.Public().(*ecdsa.PublicKey)
			if err := k.Close(); err != nil {
				t.Fatal(err)
			}
			digest := sha256.Sum256([]byte("x"))
			if _, err := k.Sign(nil, digest[:], crypto.SHA256); !errors.Is(err, ErrClosed) {
				t.Errorf("Sign after Close: %v, want ErrClosed", err)
			}
			if err := k.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}

			// Persistence: reopened, it is the same key.
			k, err = Open(ref)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			defer k.Close()
			if !pub.Equal(k.Public()) {
				t.Fatalf("reopened key has another public key")
			}
			signAndVerify(t, k, "reopened")

			// Only SHA-256 digests: the key's scheme is ECDSA-SHA256.
			d384 := make([]byte, 48)
			if _, err := k.Sign(nil, d384, crypto.SHA384); err == nil || !strings.Contains(err.Error(), "only SHA-256") {
				t.Errorf("SHA-384 digest: %v", err)
			}

			// Generate never replaces a key.
			if _, err := Generate(ref); !errors.Is(err, ErrExists) {
				t.Errorf("Generate over an existing key: %v, want ErrExists", err)
			}
		})
	}

	// The key file is 0600 and is refused once others can read it.
	blob := filepath.Join(dir, "key.tpm")
	fi, err := os.Stat(blob)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %#o, want 0600", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(blob)
	if !strings.HasPrefix(string(data), "-----BEGIN TSS2 PRIVATE KEY-----") {
		t.Errorf("key file is not a TSS2 PRIVATE KEY PEM file")
	}
	os.Chmod(blob, 0o644)
	if _, err := Open(tpm.ref("blob=" + blob)); !errors.Is(err, ErrInsecurePermissions) {
		t.Errorf("Open of a 0644 key file: %v, want ErrInsecurePermissions", err)
	}
}

// TestSurvivesTPMRestart: keys outlive the TPM process (its NV state), and
// a key file loads under the SRK re-derived from the same seed.
func TestSurvivesTPMRestart(t *testing.T) {
	tpm := startSWTPM(t)
	refs := []string{tpm.ref("blob=" + filepath.Join(t.TempDir(), "k.tpm")), tpm.ref("handle=0x81000020")}
	pubs := map[string]crypto.PublicKey{}
	for _, ref := range refs {
		k, err := Generate(ref)
		if err != nil {
			t.Fatal(err)
		}
		pubs[ref] = k.Public()
		k.Close()
	}
	tpm.stop()
	tpm.start()
	for _, ref := range refs {
		k, err := Open(ref)
		if err != nil {
			t.Fatalf("Open after TPM restart: %v", err)
		}
		if !k.Public().(*ecdsa.PublicKey).Equal(pubs[ref]) {
			t.Errorf("%s: another key after restart", ref)
		}
		signAndVerify(t, k, "after restart")
		k.Close()
	}
}

// TestKeyGone: a TPM that goes away fails the next Sign with ErrUnavailable
// naming the reference; when it is back, Sign works again without reopening.
// An evicted persistent key fails the same way.
func TestKeyGone(t *testing.T) {
	tpm := startSWTPM(t)
	ref := tpm.ref("blob=" + filepath.Join(t.TempDir(), "k.tpm"))
	k, err := Generate(ref)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	signAndVerify(t, k, "before")

	tpm.stop()
	digest := sha256.Sum256([]byte("gone"))
	for i := 0; i < 2; i++ { // the failed Sign and the reopen that follows
		_, err = k.Sign(nil, digest[:], crypto.SHA256)
		if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), k.Ref()) {
			t.Fatalf("Sign %d with the TPM gone: %v, want ErrUnavailable naming %s", i, err, k.Ref())
		}
	}
	t.Logf("TPM gone: %v", err)

	tpm.start()
	signAndVerify(t, k, "back")

	// A TPM reset while the key is idle (hibernation) loses the loaded
	// key; Sign reloads it from the file rather than fail a handshake.
	tpm.stop()
	tpm.start()
	signAndVerify(t, k, "after a reset")

	// An evicted persistent key.
	href := tpm.ref("handle=0x81000030")
	hk, err := Generate(href)
	if err != nil {
		t.Fatal(err)
	}
	defer hk.Close()
	signAndVerify(t, hk, "before eviction")
	evict(t, tpm.sock, 0x81000030)
	_, err = hk.Sign(nil, digest[:], crypto.SHA256)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), hk.Ref()) {
		t.Fatalf("Sign with the key evicted: %v, want ErrUnavailable naming %s", err, hk.Ref())
	}
	t.Logf("key evicted: %v", err)
	if _, err := Open(href); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "0x81000030") {
		t.Errorf("Open of an evicted key: %v", err)
	}
}

// evict removes a persistent key, as tpm2_evictcontrol would.
func evict(t *testing.T, sock string, h tpm2.TPMHandle) {
	t.Helper()
	tp, err := linuxudstpm.Open(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	rp, err := tpm2.ReadPublic{ObjectHandle: h}.Execute(tp)
	if err != nil {
		t.Fatal(err)
	}
	_, err = tpm2.EvictControl{
		Auth:             tpm2.TPMRHOwner,
		ObjectHandle:     tpm2.NamedHandle{Handle: h, Name: rp.Name},
		PersistentHandle: h,
	}.Execute(tp)
	if err != nil {
		t.Fatalf("evict %#x: %v", h, err)
	}
}

func TestPIN(t *testing.T) {
	tpm := startSWTPM(t)
	dir := t.TempDir()
	const pin = "correct horse 4711"
	pinFile := filepath.Join(dir, "pin")
	if err := os.WriteFile(pinFile, []byte(pin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	blob := filepath.Join(dir, "k.tpm")
	ref := tpm.ref("blob=" + blob + "&pin-source=file:" + pinFile)
	k, err := Generate(ref)
	if err != nil {
		t.Fatal(err)
	}
	signAndVerify(t, k, "with pin")
	k.Close()

	// The same key file with another auth value cannot sign, and the
	// error says why without the PIN.
	const wrongPIN = "Xq9-not-the-pin"
	wrong := filepath.Join(dir, "other.pin")
	os.WriteFile(wrong, []byte(wrongPIN), 0o600)
	k, err = Open(tpm.ref("blob=" + blob + "&pin-source=file:" + wrong))
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	digest := sha256.Sum256([]byte("x"))
	_, err = k.Sign(nil, digest[:], crypto.SHA256)
	if !errors.Is(err, ErrBadPIN) || errors.Is(err, ErrUnavailable) || !errors.Is(err, tpm2.TPMRCAuthFail) {
		t.Fatalf("Sign with a wrong PIN: %v, want ErrBadPIN, TPM_RC_AUTH_FAIL", err)
	}
	if strings.Contains(err.Error(), wrongPIN) || strings.Contains(err.Error(), pin) {
		t.Errorf("the error holds the PIN: %v", err)
	}
	t.Logf("wrong PIN: %v", err)

	// It does not try again (each try counts towards the TPM's lockout):
	// with the TPM gone, the answer is still the wrong PIN.
	tpm.stop()
	if _, err := k.Sign(nil, digest[:], crypto.SHA256); !errors.Is(err, ErrBadPIN) {
		t.Errorf("second Sign with a wrong PIN: %v, want ErrBadPIN without asking the TPM", err)
	}
	tpm.start()

	// A PIN file others can read is refused before the TPM is asked.
	os.Chmod(pinFile, 0o644)
	if _, err := Open(ref); !errors.Is(err, ErrInsecurePermissions) {
		t.Errorf("Open with a 0644 PIN file: %v, want ErrInsecurePermissions", err)
	}
}

// TestTLS13ClientAuth: a TLS 1.3 handshake in which the client proves
// possession of the TPM key (CertificateVerify signed by TPM2_Sign), with a
// certificate the TPM key signed itself, and a CSR made with it.
func TestTLS13ClientAuth(t *testing.T) {
	tpm := startSWTPM(t)
	k, err := Generate(tpm.ref("blob=" + filepath.Join(t.TempDir(), "client.tpm")))
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()

	// A CSR, as `twoway enroll --key tpm:...` makes.
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "alice"}}, k)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil || !k.Public().(*ecdsa.PublicKey).Equal(csr.PublicKey) {
		t.Fatalf("CSR: %v", err)
	}

	clientCert := selfSigned(t, "alice", k, x509.ExtKeyUsageClientAuth)
	serverKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serverCert := selfSigned(t, "gw", serverKey, x509.ExtKeyUsageServerAuth)
	clientPool, serverPool := x509.NewCertPool(), x509.NewCertPool()
	clientPool.AddCert(clientCert)
	serverPool.AddCert(serverCert)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var wg sync.WaitGroup
	serverErr := make(chan error, 1)
	var peer string
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			serverErr <- err
			return
		}
		defer c.Close()
		s := tls.Server(c, &tls.Config{
			Certificates: []tls.Certificate{{Certificate: [][]byte{serverCert.Raw}, PrivateKey: serverKey}},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    clientPool,
			MinVersion:   tls.VersionTLS13,
		})
		if err := s.Handshake(); err != nil {
			serverErr <- err
			return
		}
		peer = s.ConnectionState().PeerCertificates[0].Subject.CommonName
		_, err = s.Write([]byte("hello " + peer))
		serverErr <- err
	}()

	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{clientCert.Raw}, PrivateKey: k}},
		RootCAs:      serverPool,
		ServerName:   "gw",
		MinVersion:   tls.VersionTLS13,
	})
	if err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	defer c.Close()
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("read: %v (server: %v)", err, <-serverErr)
	}
	wg.Wait()
	if err := <-serverErr; err != nil {
		t.Fatalf("server: %v", err)
	}
	if st := c.ConnectionState(); st.Version != tls.VersionTLS13 || string(buf[:n]) != "hello alice" {
		t.Fatalf("version %#x, got %q", st.Version, buf[:n])
	}
}

// selfSigned makes a certificate for key's public key, signed by key.
func selfSigned(t *testing.T, cn string, key crypto.Signer, eku x509.ExtKeyUsage) *x509.Certificate {
	t.Helper()
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		DNSNames:              []string{cn},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{eku},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(fmt.Errorf("certificate for %s: %w", cn, err))
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// TestPersistentSRK: a key file is made under the SRK persisted at
// 0x81000001 when there is one, and needs it to load.
func TestPersistentSRK(t *testing.T) {
	tpm := startSWTPM(t)
	tp, err := linuxudstpm.Open(tpm.sock)
	if err != nil {
		t.Fatal(err)
	}
	srk, err := tpm2.CreatePrimary{PrimaryHandle: tpm2.TPMRHOwner, InPublic: tpm2.New2B(tpm2.RSASRKTemplate)}.Execute(tp)
	if err != nil {
		t.Fatal(err)
	}
	_, err = tpm2.EvictControl{
		Auth:             tpm2.TPMRHOwner,
		ObjectHandle:     tpm2.NamedHandle{Handle: srk.ObjectHandle, Name: srk.Name},
		PersistentHandle: srkHandle,
	}.Execute(tp)
	tpm2.FlushContext{FlushHandle: srk.ObjectHandle}.Execute(tp)
	tp.Close()
	if err != nil {
		t.Fatal(err)
	}

	blob := filepath.Join(t.TempDir(), "k.tpm")
	k, err := Generate(tpm.ref("blob=" + blob))
	if err != nil {
		t.Fatal(err)
	}
	signAndVerify(t, k, "under the persistent SRK")
	k.Close()
	kf, err := readKeyFile(blob)
	if err != nil || kf.parent != srkHandle {
		t.Fatalf("key file parent %#x, %v; want %#x", kf.parent, err, srkHandle)
	}

	evict(t, tpm.sock, srkHandle)
	if _, err := Open(tpm.ref("blob=" + blob)); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "0x81000001") {
		t.Errorf("Open with the parent evicted: %v, want ErrUnavailable naming 0x81000001", err)
	}
}

// TestConcurrentSign: crypto/tls may sign for several handshakes at once.
func TestConcurrentSign(t *testing.T) {
	tpm := startSWTPM(t)
	k, err := Generate(tpm.ref("handle=0x81000040"))
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	pub := k.Public().(*ecdsa.PublicKey)
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 5; i++ {
				d := sha256.Sum256([]byte(fmt.Sprint(g, i)))
				sig, err := k.Sign(nil, d[:], crypto.SHA256)
				if err == nil && !ecdsa.VerifyASN1(pub, d[:], sig) {
					err = fmt.Errorf("signature %d/%d does not verify", g, i)
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// BenchmarkSign measures one Sign (TPM2_Sign over the socket) on swtpm; a
// discrete TPM chip is much slower.
func BenchmarkSign(b *testing.B) {
	tpm := startSWTPM(b)
	k, err := Generate(tpm.ref("blob=" + filepath.Join(b.TempDir(), "k.tpm")))
	if err != nil {
		b.Fatal(err)
	}
	defer k.Close()
	d := sha256.Sum256([]byte("bench"))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := k.Sign(nil, d[:], crypto.SHA256); err != nil {
			b.Fatal(err)
		}
	}
}
