package osstore

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

func mustParse(t *testing.T, s string) Ref {
	t.Helper()
	r, err := Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestOpenSelects(t *testing.T) {
	p := newTestPKI(t)
	aliceKey, bobKey, carolKey := genKey(t, "p256"), genKey(t, "p384"), genKey(t, "rsa")
	alice := p.valid(t, "alice", aliceKey)
	bob := p.valid(t, "bob", bobKey)
	carol := p.valid(t, "carol", carolKey)
	s256 := sha256.Sum256(carol.Raw)

	for _, tc := range []struct {
		ref  string
		want *x509.Certificate
	}{
		{"keychain:alice", alice},
		{"keychain:ALICE", alice},      // ignoring case
		{"keychain:Bob's laptop", bob}, // by the store's label
		{"keychain:bob", bob},          // by common name though the label differs
		{"keychain:sha1=" + thumbprint(carol.Raw), carol},
		{"keychain:sha256=" + hex.EncodeToString(s256[:]), carol},
	} {
		st := newFakeStore()
		st.pool = [][]byte{p.root.Raw, p.inter.Raw}
		st.add("keychain", "alice", alice, aliceKey)
		st.add("keychain", "Bob's laptop", bob, bobKey)
		st.add("keychain", "", carol, carolKey)
		id, err := open(st, mustParse(t, tc.ref), time.Now())
		if err != nil {
			t.Errorf("%s: %v", tc.ref, err)
			continue
		}
		if !id.Certificate.Equal(tc.want) {
			t.Errorf("%s: got %s, want %s", tc.ref, id.Certificate.Subject.CommonName, tc.want.Subject.CommonName)
		}
		if !st.closed {
			t.Errorf("%s: store left open", tc.ref)
		}
		if len(st.opened) != 1 {
			t.Errorf("%s: %d keys opened, want 1", tc.ref, len(st.opened))
		}
		if !id.Key.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(tc.want.PublicKey) {
			t.Errorf("%s: Key.Public is not the certificate's key", tc.ref)
		}
		if id.Where != "keychain" {
			t.Errorf("%s: Where = %q", tc.ref, id.Where)
		}
		if err := id.Close(); err != nil || st.opened[0].closed != 1 {
			t.Errorf("%s: Close = %v, key closed %d times", tc.ref, err, st.opened[0].closed)
		}
	}
}

func TestOpenSkipsUnusable(t *testing.T) {
	p := newTestPKI(t)
	now := time.Now()
	oldKey, newKey_, futureKey := genKey(t, "p256"), genKey(t, "p256"), genKey(t, "p256")
	expired := p.client(t, "alice", oldKey.Public(), now.Add(-48*time.Hour), now.Add(-time.Hour))
	current := p.valid(t, "alice", newKey_)
	future := p.client(t, "alice", futureKey.Public(), now.Add(time.Hour), now.Add(48*time.Hour))

	// An expired and a not-yet-valid one beside a good one: the good one.
	st := newFakeStore()
	st.add("keychain", "", expired, oldKey)
	st.add("keychain", "", future, futureKey)
	st.add("keychain", "", current, newKey_)
	id, err := open(st, mustParse(t, "keychain:alice"), now)
	if err != nil {
		t.Fatal(err)
	}
	if !id.Certificate.Equal(current) {
		t.Fatalf("picked %v, want the valid one", id.Certificate.NotAfter)
	}

	// Only unusable ones: an error saying why for each.
	st = newFakeStore()
	st.add("keychain", "", expired, oldKey)
	st.add("keychain", "", future, futureKey)
	_, err = open(st, mustParse(t, "keychain:alice"), now)
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
	t.Log(err)
	for _, want := range []string{"keychain:alice", "expired", "not valid before", thumbprint(expired.Raw), thumbprint(future.Raw)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if !st.closed || len(st.opened) != 0 {
		t.Errorf("store closed %v, keys opened %d", st.closed, len(st.opened))
	}
}

func TestOpenNoKeyAndUnsupportedKey(t *testing.T) {
	p := newTestPKI(t)
	edKey := genKey(t, "ed25519")
	ed := p.valid(t, "alice", edKey)
	withoutKey := p.valid(t, "alice", genKey(t, "p256"))
	st := newFakeStore()
	st.add("user/MY", "", ed, edKey)
	st.add("user/MY", "", withoutKey, nil)
	_, err := open(st, mustParse(t, "certstore:alice"), time.Now())
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
	for _, want := range []string{"unsupported key type ed25519.PublicKey", "no private key"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

func TestOpenAmbiguous(t *testing.T) {
	p := newTestPKI(t)
	k1, k2 := genKey(t, "p256"), genKey(t, "p256")
	one, two := p.valid(t, "alice", k1), p.valid(t, "alice", k2)

	st := newFakeStore()
	st.add("keychain", "", one, k1)
	st.add("keychain", "", two, k2)
	_, err := open(st, mustParse(t, "keychain:alice"), time.Now())
	if !errors.Is(err, ErrAmbiguous) {
		t.Fatalf("err = %v, want ErrAmbiguous", err)
	}
	t.Log(err)
	for _, want := range []string{thumbprint(one.Raw), thumbprint(two.Raw), "keychain:sha1="} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if len(st.opened) != 0 {
		t.Error("a key was opened for an ambiguous reference")
	}

	// The same identity listed twice in one place is one identity.
	st = newFakeStore()
	st.add("keychain", "", one, k1)
	st.add("keychain", "", one, k1)
	if _, err := open(st, mustParse(t, "keychain:alice"), time.Now()); err != nil {
		t.Errorf("duplicate listing: %v", err)
	}

	// The same certificate in the user's and the machine's store is two:
	// the hint names the location, which resolves it.
	st = newFakeStore()
	st.add("user/MY", "", one, k1)
	st.add("machine/MY", "", one, k1)
	_, err = open(st, mustParse(t, "certstore:sha1="+thumbprint(one.Raw)), time.Now())
	if !errors.Is(err, ErrAmbiguous) || !strings.Contains(err.Error(), "certstore:user/my/sha1="+thumbprint(one.Raw)) {
		t.Fatalf("err = %v, want ErrAmbiguous suggesting the location", err)
	}
}

func TestOpenNothingMatches(t *testing.T) {
	p := newTestPKI(t)
	st := newFakeStore()
	_, err := open(st, mustParse(t, "keychain:alice"), time.Now())
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "holds no identity") {
		t.Fatalf("empty store: %v", err)
	}

	st = newFakeStore()
	var names []string
	for _, n := range []string{"bob", "carol", "dave"} {
		k := genKey(t, "p256")
		st.add("keychain", "", p.valid(t, n, k), k)
		names = append(names, `"`+n+`"`)
	}
	_, err = open(st, mustParse(t, "keychain:alice"), time.Now())
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v", err)
	}
	t.Log(err)
	for _, want := range append(names, "none of the 3 identities") {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not list %s", err, want)
		}
	}

	// Many: the list is cut.
	st = newFakeStore()
	for range maxListed + 5 {
		k := genKey(t, "p256")
		st.add("keychain", "", p.valid(t, "x", k), k)
	}
	_, err = open(st, mustParse(t, "keychain:alice"), time.Now())
	if err == nil || !strings.Contains(err.Error(), "and 5 more") {
		t.Errorf("long list: %v", err)
	}
}

func TestOpenStoreErrors(t *testing.T) {
	p := newTestPKI(t)
	k := genKey(t, "p256")
	cert := p.valid(t, "alice", k)

	st := newFakeStore()
	st.listErr = errors.New("keychain locked")
	if _, err := open(st, mustParse(t, "keychain:alice"), time.Now()); err == nil || !strings.Contains(err.Error(), "keychain locked") || !st.closed {
		t.Errorf("list error: %v (store closed %v)", err, st.closed)
	}

	st = newFakeStore()
	st.add("keychain", "", cert, k)
	st.keyErr = errors.New("user denied access")
	_, err := open(st, mustParse(t, "keychain:alice"), time.Now())
	if err == nil || !strings.Contains(err.Error(), "user denied access") || !strings.Contains(err.Error(), thumbprint(cert.Raw)) || !st.closed {
		t.Errorf("key error: %v (store closed %v)", err, st.closed)
	}
}

func TestChain(t *testing.T) {
	p := newTestPKI(t)
	k := genKey(t, "p256")
	leaf := p.valid(t, "alice", k)

	// A CA with the intermediate's name but another key: must not be taken.
	impostorKey := genKey(t, "p256")
	impostor := p.sign(t, &x509.Certificate{
		Subject: pkix.Name{CommonName: "Test Clients"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}, nil, impostorKey.Public(), impostorKey)

	for _, tc := range []struct {
		name string
		pool [][]byte
		want []*x509.Certificate
	}{
		{"leaf alone", nil, []*x509.Certificate{leaf}},
		{"with intermediate, root left out", [][]byte{p.root.Raw, impostor.Raw, []byte("junk"), p.inter.Raw}, []*x509.Certificate{leaf, p.inter}},
		{"impostor only", [][]byte{impostor.Raw}, []*x509.Certificate{leaf}},
		{"leaf itself in the pool", [][]byte{leaf.Raw, p.inter.Raw}, []*x509.Certificate{leaf, p.inter}},
	} {
		st := newFakeStore()
		st.pool = tc.pool
		st.add("keychain", "", leaf, k)
		id, err := open(st, mustParse(t, "keychain:alice"), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if len(id.Chain) != len(tc.want) {
			t.Errorf("%s: chain of %d, want %d", tc.name, len(id.Chain), len(tc.want))
			continue
		}
		for i := range tc.want {
			if !id.Chain[i].Equal(tc.want[i]) {
				t.Errorf("%s: chain[%d] = %s", tc.name, i, id.Chain[i].Subject)
			}
		}
		tc := id.TLSCertificate()
		if len(tc.Certificate) != len(id.Chain) || tc.Leaf != id.Certificate || tc.PrivateKey != id.Key {
			t.Errorf("TLSCertificate does not carry the identity")
		}
	}
}

func TestKeyClose(t *testing.T) {
	p := newTestPKI(t)
	k := genKey(t, "p256")
	st := newFakeStore()
	st.add("keychain", "", p.valid(t, "alice", k), k)
	id, err := open(st, mustParse(t, "keychain:alice"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("hello"))
	sig, err := id.Key.Sign(nil, digest[:], cryptoSHA256)
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsa.VerifyASN1(k.Public().(*ecdsa.PublicKey), digest[:], sig) {
		t.Fatal("signature does not verify")
	}
	if err := id.Close(); err != nil {
		t.Fatal(err)
	}
	if err := id.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	if st.opened[0].closed != 1 {
		t.Fatalf("OS key released %d times, want 1", st.opened[0].closed)
	}
	if _, err := id.Key.Sign(nil, digest[:], cryptoSHA256); !errors.Is(err, ErrClosed) {
		t.Fatalf("Sign after Close: %v", err)
	}
	if n := len(st.opened[0].algorithms()); n != 1 {
		t.Fatalf("the OS was asked %d times, want 1 (not after Close)", n)
	}
}

// TestKeyReopenConcurrent: signatures failing at once each open the key
// again; one new handle is kept, the others and the dead one released.
func TestKeyReopenConcurrent(t *testing.T) {
	p := newTestPKI(t)
	k := genKey(t, "p256")
	st := newFakeStore()
	st.add("keychain", "", p.valid(t, "alice", k), k)
	id, err := open(st, mustParse(t, "keychain:alice"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	st.opened[0].fail = errors.New("errSecInteractionNotAllowed")
	digest := sha256.Sum256([]byte("x"))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			sig, err := id.Key.Sign(nil, digest[:], crypto.SHA256)
			if err != nil || !ecdsa.VerifyASN1(k.Public().(*ecdsa.PublicKey), digest[:], sig) {
				t.Errorf("Sign: %v", err)
			}
		})
	}
	wg.Wait()
	id.Close()
	st.mu.Lock()
	defer st.mu.Unlock()
	for i, o := range st.opened {
		if o.closed != 1 {
			t.Errorf("key %d of %d closed %d times", i, len(st.opened), o.closed)
		}
	}
	if st.closes != len(st.opened) {
		t.Errorf("store opened for %d keys, closed %d times", len(st.opened), st.closes)
	}
}
