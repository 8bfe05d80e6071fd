package osstore

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeSec is secAPI as Security.framework behaves over an in-memory
// keychain: it counts the CF references it hands out, fails on a ref used
// after release, and signs only for the SecKeyAlgorithm names Security
// defines, with the key type each is for.
type fakeSec struct {
	items []fakeSecItem
	certs [][]byte

	mu     sync.Mutex
	next   uintptr
	live   map[uintptr]crypto.Signer // identity refs (owned by a result) and key refs
	idRefs map[uintptr]bool          // which live refs are identities
	misuse []string
	algs   []string
}

type fakeSecItem struct {
	cert  *x509.Certificate
	label string
	key   crypto.Signer
}

func newFakeSec() *fakeSec {
	return &fakeSec{live: map[uintptr]crypto.Signer{}, idRefs: map[uintptr]bool{}}
}

func (f *fakeSec) identities() ([]secIdentity, func(), error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []secIdentity
	var refs []uintptr
	for _, it := range f.items {
		f.next++
		f.live[f.next] = it.key
		f.idRefs[f.next] = true
		refs = append(refs, f.next)
		out = append(out, secIdentity{der: it.cert.Raw, label: it.label, ref: f.next})
	}
	released := false
	return out, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if released {
			f.misuse = append(f.misuse, "query result released twice")
		}
		released = true
		for _, r := range refs {
			delete(f.live, r)
		}
	}, nil
}

func (f *fakeSec) certificates() ([][]byte, error) { return f.certs, nil }

func (f *fakeSec) copyPrivateKey(id uintptr) (uintptr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k, ok := f.live[id]
	if !ok || !f.idRefs[id] {
		f.misuse = append(f.misuse, fmt.Sprintf("SecIdentityCopyPrivateKey on ref %d not live", id))
		return 0, errors.New("errSecParam")
	}
	f.next++
	f.live[f.next] = k
	return f.next, nil
}

// secAlgs are the SecKeyAlgorithm constants and what Security does for
// each, from SecKey.h.
var secAlgs = func() map[string]algorithm {
	m := map[string]algorithm{}
	for name, h := range map[string]crypto.Hash{"SHA1": crypto.SHA1, "SHA256": crypto.SHA256, "SHA384": crypto.SHA384, "SHA512": crypto.SHA512} {
		m["kSecKeyAlgorithmECDSASignatureDigestX962"+name] = algorithm{hash: h}
		m["kSecKeyAlgorithmRSASignatureDigestPKCS1v15"+name] = algorithm{rsa: true, hash: h}
		m["kSecKeyAlgorithmRSASignatureDigestPSS"+name] = algorithm{rsa: true, pss: true, hash: h}
	}
	return m
}()

func (f *fakeSec) createSignature(key uintptr, alg string, digest []byte) ([]byte, error) {
	f.mu.Lock()
	k, ok := f.live[key]
	if !ok || f.idRefs[key] {
		f.misuse = append(f.misuse, fmt.Sprintf("SecKeyCreateSignature on ref %d not a live key", key))
	}
	f.algs = append(f.algs, alg)
	f.mu.Unlock()
	a, known := secAlgs[alg]
	switch {
	case !ok:
		return nil, errors.New("errSecParam")
	case !known:
		return nil, fmt.Errorf("algorithm %s not supported", alg)
	case len(digest) != a.hash.Size():
		return nil, errors.New("digest size does not match the algorithm")
	}
	switch k := k.(type) {
	case *ecdsa.PrivateKey:
		if a.rsa {
			return nil, errors.New("algorithm not supported by the key")
		}
		return ecdsa.SignASN1(rand.Reader, k, digest)
	case *rsa.PrivateKey:
		switch {
		case !a.rsa:
			return nil, errors.New("algorithm not supported by the key")
		case a.pss:
			return rsa.SignPSS(rand.Reader, k, a.hash, digest, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		}
		return rsa.SignPKCS1v15(rand.Reader, k, a.hash, digest)
	}
	return nil, errors.New("fake: key type")
}

func (f *fakeSec) release(ref uintptr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.live[ref]; !ok || f.idRefs[ref] {
		f.misuse = append(f.misuse, fmt.Sprintf("CFRelease of ref %d not owned", ref))
	}
	delete(f.live, ref)
}

func (f *fakeSec) leaks() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := append([]string(nil), f.misuse...)
	for r := range f.live {
		out = append(out, fmt.Sprintf("ref %d not released", r))
	}
	return out
}

func TestKeychain(t *testing.T) {
	p := newTestPKI(t)
	ecKey, rsaKey := genKey(t, "p256"), genKey(t, "rsa")
	alice := p.valid(t, "alice", ecKey)
	laptop := p.valid(t, "laptop-42", rsaKey)

	f := newFakeSec()
	f.items = []fakeSecItem{{cert: alice, label: "alice", key: ecKey}, {cert: laptop, label: "Work laptop", key: rsaKey}}
	f.certs = [][]byte{alice.Raw, laptop.Raw, p.inter.Raw, p.root.Raw}

	for _, tc := range []struct {
		ref     string
		want    *x509.Certificate
		version uint16
		alg     string
	}{
		{"keychain:alice", alice, tls.VersionTLS13, "kSecKeyAlgorithmECDSASignatureDigestX962SHA256"},
		{"keychain:work laptop", laptop, tls.VersionTLS13, "kSecKeyAlgorithmRSASignatureDigestPSSSHA256"},
		{"keychain:sha1=" + thumbprint(laptop.Raw), laptop, tls.VersionTLS12, "kSecKeyAlgorithmRSASignatureDigestPSSSHA256"},
	} {
		f.algs = nil
		id, err := openWith(func() (store, error) { return &keychain{api: f}, nil }, mustParse(t, tc.ref), time.Now())
		if err != nil {
			t.Fatalf("%s: %v", tc.ref, err)
		}
		if !id.Certificate.Equal(tc.want) || len(id.Chain) != 2 || id.Where != "keychain" {
			t.Errorf("%s: %s, chain of %d, in %s", tc.ref, id.Certificate.Subject.CommonName, len(id.Chain), id.Where)
		}
		cerr, serr, _ := handshake(t, p, id.TLSCertificate(), tc.version)
		if cerr != nil || serr != nil {
			t.Fatalf("%s: client %v, server %v", tc.ref, cerr, serr)
		}
		if len(f.algs) != 1 || f.algs[0] != tc.alg {
			t.Errorf("%s: SecKeyCreateSignature with %q, want %s", tc.ref, f.algs, tc.alg)
		}
		// Only the key is held while the identity is open.
		if n := len(f.leaks()); n != 1 {
			t.Errorf("%s: %d refs held while open, want 1 (the key): %q", tc.ref, n, f.leaks())
		}
		id.Close()
		if l := f.leaks(); len(l) > 0 {
			t.Errorf("%s: after Close: %q", tc.ref, l)
		}
	}

	// An error from the OS names the call, the algorithm and the reference.
	g := newFakeSec()
	g.items = []fakeSecItem{{cert: alice, key: rsaKey}} // a key of the wrong type
	id, err := openWith(func() (store, error) { return &keychain{api: g}, nil }, mustParse(t, "keychain:alice"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	digest := make([]byte, 32)
	_, err = id.Key.Sign(nil, digest, crypto.SHA256)
	if err == nil || !strings.Contains(err.Error(), "keychain:alice: sign: SecKeyCreateSignature (ECDSA with SHA-256): algorithm not supported by the key") {
		t.Errorf("sign error: %v", err)
	}
	id.Close()

	// Nothing matches: the list names what is there, common name and label.
	_, err = openWith(func() (store, error) { return &keychain{api: f}, nil }, mustParse(t, "keychain:nobody"), time.Now())
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `"laptop-42 / Work laptop"`) {
		t.Errorf("no match: %v", err)
	}
	if l := f.leaks(); len(l) > 0 {
		t.Errorf("after a failed Open: %q", l)
	}
}
