package osstore

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// handshake runs a mutual-TLS handshake over a pipe: a server that
// requires a client certificate chaining to p's root (it knows only the
// root, so the client must send the intermediate), and a client
// presenting client. It returns the client's error, then the server's,
// and what the server saw.
func handshake(t *testing.T, p *testPKI, client tls.Certificate, version uint16) (cerr, serr error, peer []*x509.Certificate) {
	t.Helper()
	srvKey := genKey(t, "p256")
	srvCert := p.sign(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "gw.test"}, DNSNames: []string{"gw.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, p.root, srvKey.Public(), p.rootKey)
	roots := x509.NewCertPool()
	roots.AddCert(p.root)

	cc, sc := net.Pipe()
	defer cc.Close()
	defer sc.Close()
	srv := tls.Server(sc, &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{srvCert.Raw}, PrivateKey: srvKey}},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    roots,
		MinVersion:   version, MaxVersion: version,
	})
	cli := tls.Client(cc, &tls.Config{
		ServerName:   "gw.test",
		RootCAs:      roots,
		Certificates: []tls.Certificate{client},
		MinVersion:   version, MaxVersion: version,
	})
	done := make(chan error, 1)
	go func() {
		err := srv.Handshake()
		if err == nil && version == tls.VersionTLS13 {
			// In TLS 1.3 the client's certificate is checked after the
			// client's handshake returns; a read makes the client wait.
			_, err = srv.Write([]byte("ok"))
		}
		if err != nil {
			sc.Close()
		}
		done <- err
	}()
	cerr = cli.Handshake()
	if cerr == nil && version == tls.VersionTLS13 {
		buf := make([]byte, 2)
		_, cerr = cli.Read(buf)
	}
	if cerr != nil {
		cc.Close()
	}
	serr = <-done
	return cerr, serr, srv.ConnectionState().PeerCertificates
}

func TestTLSHandshake(t *testing.T) {
	p := newTestPKI(t)
	for _, tc := range []struct {
		name    string
		key     string
		cng     bool // ECDSA signatures converted from CNG's r||s
		version uint16
		want    algorithm
	}{
		{"P-256 TLS 1.3", "p256", false, tls.VersionTLS13, algorithm{hash: crypto.SHA256}},
		{"P-384 TLS 1.3", "p384", false, tls.VersionTLS13, algorithm{hash: crypto.SHA384}},
		{"P-521 TLS 1.3", "p521", false, tls.VersionTLS13, algorithm{hash: crypto.SHA512}},
		{"RSA TLS 1.3", "rsa", false, tls.VersionTLS13, algorithm{rsa: true, pss: true, hash: crypto.SHA256}},
		{"P-256 TLS 1.3 CNG", "p256", true, tls.VersionTLS13, algorithm{hash: crypto.SHA256}},
		{"P-384 TLS 1.3 CNG", "p384", true, tls.VersionTLS13, algorithm{hash: crypto.SHA384}},
		// TLS 1.2 does not tie ECDSA hashes to curves: crypto/tls takes the
		// server's first preference, SHA-256, for a P-384 key, the case
		// where r and s are longer than the digest.
		{"P-384 TLS 1.2 CNG", "p384", true, tls.VersionTLS12, algorithm{hash: crypto.SHA256}},
		{"RSA TLS 1.2", "rsa", false, tls.VersionTLS12, algorithm{rsa: true, pss: true, hash: crypto.SHA256}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := genKey(t, tc.key)
			cert := p.valid(t, "alice", k)
			st := newFakeStore()
			st.pool = [][]byte{p.inter.Raw, p.root.Raw}
			st.add("keychain", "", cert, k)
			id, err := open(st, mustParse(t, "keychain:alice"), time.Now())
			if err != nil {
				t.Fatal(err)
			}
			defer id.Close()
			st.opened[0].cng = tc.cng
			cerr, serr, peer := handshake(t, p, id.TLSCertificate(), tc.version)
			if cerr != nil || serr != nil {
				t.Fatalf("client: %v; server: %v", cerr, serr)
			}
			if len(peer) == 0 || !peer[0].Equal(cert) {
				t.Fatal("the server did not see alice's certificate")
			}
			asked := st.opened[0].algorithms()
			if len(asked) != 1 || asked[0] != tc.want {
				t.Fatalf("the OS was asked for %v, want [%v]", asked, tc.want)
			}
		})
	}
}

// TestTLSHandshakeUsesTheStoreKey: the signature crypto/tls sends is the
// store's. A store whose key does not match the certificate fails the
// handshake at the server; a key that stops working (a token pulled out)
// fails it at the client with the OS's reason, and works again at the
// next handshake once it is back.
func TestTLSHandshakeUsesTheStoreKey(t *testing.T) {
	p := newTestPKI(t)
	k, other := genKey(t, "p256"), genKey(t, "p256")
	cert := p.valid(t, "alice", k)

	st := newFakeStore()
	st.pool = [][]byte{p.inter.Raw}
	st.add("keychain", "", cert, other) // the store signs with another key
	id, err := open(st, mustParse(t, "keychain:alice"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	_, serr, _ := handshake(t, p, id.TLSCertificate(), tls.VersionTLS13)
	if serr == nil {
		t.Fatal("the server accepted a signature by a key other than the certificate's")
	}
	t.Log("server:", serr)
	id.Close()

	st = newFakeStore()
	st.pool = [][]byte{p.inter.Raw}
	st.add("keychain", "", cert, k)
	id, err = open(st, mustParse(t, "keychain:alice"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// The card goes: the handle fails, and so does opening it again.
	st.opened[0].mu.Lock()
	st.opened[0].fail = errors.New("SCARD_W_REMOVED_CARD")
	st.opened[0].mu.Unlock()
	st.keyErr = errors.New("SCARD_E_NO_SMARTCARD")
	cerr, serr, _ := handshake(t, p, id.TLSCertificate(), tls.VersionTLS13)
	if cerr == nil || !strings.Contains(cerr.Error(), "keychain:alice: sign: SCARD_W_REMOVED_CARD; opening the key again: SCARD_E_NO_SMARTCARD") {
		t.Fatalf("client: %v, want the OS's reasons and the reference", cerr)
	}
	if serr == nil {
		t.Fatal("server: handshake succeeded without the client's signature")
	}
	t.Log("client:", cerr)

	// Back again (the old handle stays dead): the next handshake opens
	// the key again and works, and the dead handle is released.
	st.keyErr = nil
	if cerr, serr, _ := handshake(t, p, id.TLSCertificate(), tls.VersionTLS13); cerr != nil || serr != nil {
		t.Fatalf("after the key came back: client %v, server %v", cerr, serr)
	}
	if len(st.opened) != 2 || st.opened[0].closed != 1 || st.opened[1].closed != 0 {
		t.Fatalf("keys opened %d, first closed %d times", len(st.opened), st.opened[0].closed)
	}
	if err := id.Close(); err != nil || st.opened[1].closed != 1 {
		t.Fatalf("Close: %v; the reopened key closed %d times", err, st.opened[1].closed)
	}
}

// TestTLSConcurrent: crypto/tls signs from every handshake's goroutine;
// Key allows that, and Close waits for signatures in progress.
func TestTLSConcurrent(t *testing.T) {
	p := newTestPKI(t)
	k := genKey(t, "p256")
	st := newFakeStore()
	st.pool = [][]byte{p.inter.Raw}
	st.add("keychain", "", p.valid(t, "alice", k), k)
	id, err := open(st, mustParse(t, "keychain:alice"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			if cerr, serr, _ := handshake(t, p, id.TLSCertificate(), tls.VersionTLS13); cerr != nil || serr != nil {
				errs <- errors.Join(cerr, serr)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := len(st.opened[0].algorithms()); n != 8 {
		t.Errorf("%d signatures for 8 handshakes", n)
	}
	if err := id.Close(); err != nil {
		t.Fatal(err)
	}
}
