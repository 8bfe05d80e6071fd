//go:build cgo

package tunnel

import (
	"bytes"
	"crypto/x509"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/twoway/twoway/keystore"
	"github.com/twoway/twoway/keystore/softhsmtest"
	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/pki/pkitest"
)

// storeWithTokenKey generates a key in it, has issue make
// a certificate for that key, and returns a pki.Store that loads the
// certificate file and the key by its pkcs11: URI, as the daemon does,
// with bundle as the peers' CAs; and the URI.
func storeWithTokenKey(t *testing.T, h *softhsmtest.HSM, token string, issue func(pkitest.LeafOptions) *pkitest.Leaf, bundle []*x509.Certificate) (*pki.Store, string) {
	t.Helper()
	ref := h.URI(token, "twoway")
	gen, err := keystore.Generate(ref)
	if err != nil {
		t.Fatal(err)
	}
	leaf := issue(pkitest.LeafOptions{Key: gen})
	// Only the public half was needed here; the store opens the key
	// again by its reference.
	gen.Close()
	dir := t.TempDir()
	store, err := pki.NewStore(pki.StoreConfig{
		CertFile: pkitest.WriteFile(t, dir, "cert.pem", pkitest.PEM(append([]*x509.Certificate{leaf.Cert}, leaf.Chain...)...)),
		KeyFile:  ref,
		CABundle: pkitest.WriteFile(t, dir, "bundle.pem", pkitest.PEM(bundle...)),
	})
	if err != nil {
		t.Fatal(err)
	}
	if !keystore.InStore(store.Certificate().PrivateKey) {
		t.Fatal("the store's key is not the token's")
	}
	t.Cleanup(store.Close)
	return store, ref
}

// TestPKCS11BothSides: the gateway and the client each sign their
// handshake with a key in a (SoftHSM2) token, and the session comes up
// with each side seeing the other's token-backed certificate.
func TestPKCS11BothSides(t *testing.T) {
	h := softhsmtest.New(t)
	h.InitToken("gateway")
	h.InitToken("laptop")
	f := newFixture(t)
	gwStore, _ := storeWithTokenKey(t, h, "gateway", func(o pkitest.LeafOptions) *pkitest.Leaf {
		o.CommonName, o.IPs = "127.0.0.1", []net.IP{net.IPv4(127, 0, 0, 1)}
		o.EKU = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		return f.h.ServerCA.Issue(t, o)
	}, f.h.ClientBundle())
	clStore, _ := storeWithTokenKey(t, h, "laptop", func(o pkitest.LeafOptions) *pkitest.Leaf {
		o.CommonName, o.Groups = "alice", []string{"eng"}
		o.EKU = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		return f.h.ClientCA.Issue(t, o)
	}, f.h.ServerBundle())

	scfg := f.serverConfig(nil)
	scfg.Credentials = gwStore
	gwUp := make(chan SessionInfo, 4)
	scfg.OnSession = func(si SessionInfo) { gwUp <- si }
	srv := startServer(t, scfg)
	ccfg := f.clientConfig(srv.Addr().String())
	ccfg.Credentials = clStore
	var ev sessionEvents
	ev.hook(&ccfg)
	startClient(t, ccfg)

	up := waitFor(t, ev.up, "client session")
	if !up.PeerChain[0].Equal(gwStore.Certificate().Leaf) {
		t.Fatal("the gateway did not present its token key's certificate")
	}
	gw := waitFor(t, gwUp, "gateway session")
	if gw.Peer.CommonName != "alice" || !gw.PeerChain[0].Equal(clStore.Certificate().Leaf) {
		t.Fatalf("gateway saw %v, want alice's token-backed certificate", gw.Peer)
	}
}

// lockedBuffer is a log sink safe for the client's goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestPKCS11TokenPulledReconnects: with the client's token pulled, its
// next handshake fails with an error naming the key (and never the PIN),
// though the gateway would resume its TLS session; the client keeps
// retrying, and once the token is back it connects again.
func TestPKCS11TokenPulledReconnects(t *testing.T) {
	h := softhsmtest.New(t)
	h.InitToken("laptop")
	f := newFixture(t)
	clStore, ref := storeWithTokenKey(t, h, "laptop", func(o pkitest.LeafOptions) *pkitest.Leaf {
		o.CommonName, o.Groups = "alice", []string{"eng"}
		o.EKU = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		return f.h.ClientCA.Issue(t, o)
	}, f.h.ServerBundle())

	srv := startServer(t, f.serverConfig(nil)) // resumption on (local ticket keys)
	ccfg := f.clientConfig(srv.Addr().String())
	ccfg.Credentials = clStore
	var ev sessionEvents
	ev.hook(&ccfg)
	connErr := make(chan error, 64)
	ccfg.OnConnectError = func(err error) {
		select {
		case connErr <- err:
		default:
		}
	}
	var logs lockedBuffer
	c, err := NewClient(ccfg, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	waitFor(t, ev.up, "first session")

	h.Pull()
	if n := srv.Kick("alice"); n != 1 {
		t.Fatalf("kicked %d sessions, want 1", n)
	}
	waitFor(t, ev.down, "disconnect")
	err = waitFor(t, connErr, "a failed handshake with the token pulled")
	msg := err.Error()
	if !strings.Contains(msg, ref) || !strings.Contains(msg, keystore.ErrUnavailable.Error()) {
		t.Fatalf("handshake error %q does not say the key %s is unavailable", msg, ref)
	}
	select {
	case si := <-ev.up:
		t.Fatalf("session %s came up with the token pulled", si.ID)
	default:
	}

	h.PlugIn()
	waitFor(t, ev.up, "session after the token came back")
	c.Stop()
	if out := logs.String(); strings.Contains(out, softhsmtest.PIN) || !strings.Contains(out, ref) {
		t.Fatalf("client log holds the PIN or does not name the key:\n%s", out)
	}
}
