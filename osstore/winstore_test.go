package osstore

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeWin is winAPI as crypt32 and CNG behave, over in-memory stores: it
// counts every context, store and key handle it gives out, fails on a
// handle used after it was freed, and signs only with the NCrypt
// parameters CNG would accept for the key.
type fakeWin struct {
	stores  map[string][]fakeWinCert // by "user/MY"
	openErr map[string]error

	mu        sync.Mutex
	next      uintptr
	openH     map[uintptr]string // open stores
	ctxRefs   map[*fakeWinCert]int
	keys      map[uintptr]crypto.Signer // live CNG key handles
	dead      map[uintptr]bool          // of those, the ones whose card was pulled out
	provs     map[uintptr]crypto.Signer // live CryptoAPI providers
	misuse    []string
	signCalls []string
}

type fakeWinCert struct {
	cert   *x509.Certificate
	name   string
	key    crypto.Signer // nil: no private key
	legacy bool          // a CryptoAPI key
	gone   bool          // the key's smart card is out: associated, not acquirable
}

func newFakeWin() *fakeWin {
	return &fakeWin{
		stores: map[string][]fakeWinCert{}, openErr: map[string]error{},
		openH: map[uintptr]string{}, ctxRefs: map[*fakeWinCert]int{},
		keys: map[uintptr]crypto.Signer{}, provs: map[uintptr]crypto.Signer{}, dead: map[uintptr]bool{},
	}
}

func (f *fakeWin) bad(format string, a ...any) {
	f.misuse = append(f.misuse, fmt.Sprintf(format, a...))
}

func (f *fakeWin) openStore(loc Location, name string) (uintptr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	where := loc.String() + "/" + name
	if err := f.openErr[where]; err != nil {
		return 0, err
	}
	if _, ok := f.stores[where]; !ok {
		return 0, errors.New("The system cannot find the file specified.")
	}
	f.next++
	f.openH[f.next] = where
	return f.next, nil
}

func (f *fakeWin) certs(h uintptr) ([]winCert, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	where, ok := f.openH[h]
	if !ok {
		f.bad("certs on store handle %d not open", h)
		return nil, errors.New("bad handle")
	}
	var out []winCert
	for i := range f.stores[where] {
		c := &fakeWinCert{}
		*c = f.stores[where][i]
		f.ctxRefs[c]++
		out = append(out, winCert{der: c.cert.Raw, friendlyName: c.name, hasKey: c.key != nil, ctx: c})
	}
	return out, nil
}

func (f *fakeWin) closeStore(h uintptr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.openH[h]; !ok {
		f.bad("close of store handle %d not open", h)
	}
	delete(f.openH, h)
	return nil
}

func (f *fakeWin) live(ctx any) *fakeWinCert {
	c := ctx.(*fakeWinCert)
	if f.ctxRefs[c] <= 0 {
		f.bad("certificate context used after it was freed")
	}
	return c
}

func (f *fakeWin) dupCert(ctx any) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.live(ctx)
	f.ctxRefs[c]++
	return c
}

func (f *fakeWin) freeCert(ctx any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.live(ctx)
	f.ctxRefs[c]--
}

func (f *fakeWin) acquireKey(ctx any) (uintptr, uint32, bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.live(ctx)
	if c.key == nil {
		return 0, 0, false, errors.New("0x8009200B Cannot find the certificate and private key for decryption.")
	}
	if c.gone {
		return 0, 0, false, errors.New("0x8010000C SCARD_E_NO_SMARTCARD")
	}
	f.next++
	if c.legacy {
		f.provs[f.next] = c.key
		return f.next, 1 /* AT_KEYEXCHANGE */, true, nil
	}
	f.keys[f.next] = c.key
	return f.next, certNCryptKeySpec, true, nil
}

func (f *fakeWin) translate(prov uintptr, spec uint32) (uintptr, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k, ok := f.provs[prov]
	if !ok || spec != 1 {
		f.bad("translate of provider %d (spec %d) not live", prov, spec)
		return 0, errors.New("bad handle")
	}
	f.next++
	f.keys[f.next] = k
	return f.next, nil
}

func (f *fakeWin) releaseProv(prov uintptr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.provs[prov]; !ok {
		f.bad("release of provider %d not live", prov)
	}
	delete(f.provs, prov)
}

var cngHashes = map[string]crypto.Hash{"SHA1": crypto.SHA1, "SHA256": crypto.SHA256, "SHA384": crypto.SHA384, "SHA512": crypto.SHA512}

func (f *fakeWin) signHash(key uintptr, flags uint32, hashAlg string, salt uint32, digest []byte) ([]byte, error) {
	f.mu.Lock()
	k, ok := f.keys[key]
	f.signCalls = append(f.signCalls, fmt.Sprintf("flags=%#x alg=%q salt=%d digest=%d", flags, hashAlg, salt, len(digest)))
	if !ok {
		f.bad("sign with key handle %d not live", key)
	}
	dead := f.dead[key]
	f.mu.Unlock()
	if !ok || dead {
		return nil, errors.New("0x80090026 NTE_INVALID_HANDLE")
	}
	switch k := k.(type) {
	case *ecdsa.PrivateKey:
		if flags != 0 || hashAlg != "" {
			return nil, errors.New("0x80090027 NTE_INVALID_PARAMETER: padding for an ECDSA key")
		}
		r, s, err := ecdsa.Sign(rand.Reader, k, digest)
		if err != nil {
			return nil, err
		}
		n := (k.Curve.Params().BitSize + 7) / 8
		raw := make([]byte, 2*n)
		r.FillBytes(raw[:n])
		s.FillBytes(raw[n:])
		return raw, nil
	case *rsa.PrivateKey:
		h, ok := cngHashes[hashAlg]
		if !ok || len(digest) != h.Size() {
			return nil, errors.New("0x80090027 NTE_INVALID_PARAMETER: hash")
		}
		switch flags {
		case bcryptPadPKCS1:
			return rsa.SignPKCS1v15(rand.Reader, k, h, digest)
		case bcryptPadPSS:
			return rsa.SignPSS(rand.Reader, k, h, digest, &rsa.PSSOptions{SaltLength: int(salt)})
		}
		return nil, errors.New("0x80090027 NTE_INVALID_PARAMETER: no padding for an RSA key")
	}
	return nil, errors.New("fake: key type")
}

func (f *fakeWin) freeKey(key uintptr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.keys[key]; !ok {
		f.bad("free of key handle %d not live", key)
	}
	delete(f.keys, key)
	return nil
}

// leaks reports what is still open or was misused.
func (f *fakeWin) leaks() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := append([]string(nil), f.misuse...)
	for h, w := range f.openH {
		out = append(out, fmt.Sprintf("store %s (handle %d) left open", w, h))
	}
	for c, n := range f.ctxRefs {
		if n != 0 {
			out = append(out, fmt.Sprintf("context of %q: %d references left", c.cert.Subject.CommonName, n))
		}
	}
	for h := range f.keys {
		out = append(out, fmt.Sprintf("key handle %d not freed", h))
	}
	for h := range f.provs {
		out = append(out, fmt.Sprintf("provider %d not released", h))
	}
	return out
}

func (f *fakeWin) openRef(t *testing.T, ref string) (*Identity, error) {
	t.Helper()
	r := mustParse(t, ref)
	return openWith(func() (store, error) {
		s, err := newWinStore(f, r.Location, r.Store)
		if err != nil {
			return nil, err
		}
		return s, nil
	}, r, time.Now())
}

func TestWinStore(t *testing.T) {
	p := newTestPKI(t)
	aliceKey, rsaKey := genKey(t, "p384"), genKey(t, "rsa")
	alice := p.valid(t, "alice", aliceKey)
	svc := p.valid(t, "laptop-42", rsaKey)
	bob := p.valid(t, "bob", genKey(t, "p256"))

	f := newFakeWin()
	f.stores["user/MY"] = []fakeWinCert{{cert: alice, name: "Alice laptop", key: aliceKey}, {cert: bob}}
	f.stores["user/CA"] = []fakeWinCert{{cert: p.inter}}
	f.stores["machine/MY"] = []fakeWinCert{{cert: svc, key: rsaKey, legacy: true}}
	f.stores["machine/CA"] = []fakeWinCert{{cert: p.inter}}

	for _, tc := range []struct {
		ref     string
		want    *x509.Certificate
		where   string
		version uint16
		calls   string // what NCryptSignHash was asked
	}{
		// TLS 1.2 asks a P-384 key for SHA-256: r||s longer than the digest.
		{"certstore:Alice laptop", alice, "user/MY", tls.VersionTLS12, `flags=0x0 alg="" salt=0 digest=32`},
		{"certstore:user/my/alice", alice, "user/MY", tls.VersionTLS13, `flags=0x0 alg="" salt=0 digest=48`},
		// A CryptoAPI key, translated; RSA-PSS with the hash's salt.
		{"certstore:machine/my/laptop-42", svc, "machine/MY", tls.VersionTLS13, `flags=0x8 alg="SHA256" salt=32 digest=32`},
		{"certstore:sha1=" + thumbprint(svc.Raw), svc, "machine/MY", tls.VersionTLS13, `flags=0x8 alg="SHA256" salt=32 digest=32`},
	} {
		f.signCalls = nil
		id, err := f.openRef(t, tc.ref)
		if err != nil {
			t.Fatalf("%s: %v", tc.ref, err)
		}
		if !id.Certificate.Equal(tc.want) || id.Where != tc.where {
			t.Errorf("%s: got %s in %s", tc.ref, id.Certificate.Subject.CommonName, id.Where)
		}
		if len(id.Chain) != 2 || !id.Chain[1].Equal(p.inter) {
			t.Errorf("%s: chain of %d, want the intermediate from the CA store", tc.ref, len(id.Chain))
		}
		cerr, serr, _ := handshake(t, p, id.TLSCertificate(), tc.version)
		if cerr != nil || serr != nil {
			t.Fatalf("%s: client %v, server %v", tc.ref, cerr, serr)
		}
		if len(f.signCalls) != 1 || f.signCalls[0] != tc.calls {
			t.Errorf("%s: NCryptSignHash calls %q, want [%s]", tc.ref, f.signCalls, tc.calls)
		}
		if tc.want == svc {
			digest := sha256.Sum256([]byte("x"))
			sig, err := id.Key.Sign(rand.Reader, digest[:], crypto.SHA256)
			if err != nil || rsa.VerifyPKCS1v15(&rsaKey.(*rsa.PrivateKey).PublicKey, crypto.SHA256, digest[:], sig) != nil {
				t.Errorf("%s: PKCS #1 v1.5 signature: %v", tc.ref, err)
			}
		}
		id.Close()
		if l := f.leaks(); len(l) > 0 {
			t.Errorf("%s: after Close: %q", tc.ref, l)
		}
	}

	// bob's certificate has no key; only the machine store names a store
	// that exists for an explicit location.
	if _, err := f.openRef(t, "certstore:bob"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "no private key") {
		t.Errorf("bob: %v", err)
	}
	if l := f.leaks(); len(l) > 0 {
		t.Errorf("after a failed Open: %q", l)
	}
}

func TestWinStoreLocations(t *testing.T) {
	p := newTestPKI(t)
	k := genKey(t, "p256")
	alice := p.valid(t, "alice", k)
	f := newFakeWin()
	f.stores["user/MY"] = []fakeWinCert{{cert: alice, key: k}}
	f.stores["machine/MY"] = []fakeWinCert{{cert: alice, key: k}}
	f.openErr["machine/MY"] = errors.New("Access is denied.")

	// Without a location, a machine store that cannot be opened is left
	// out; the user's is enough.
	id, err := f.openRef(t, "certstore:alice")
	if err != nil {
		t.Fatal(err)
	}
	id.Close()
	// Named, it is an error that says which.
	if _, err := f.openRef(t, "certstore:machine/my/alice"); err == nil || !strings.Contains(err.Error(), "open machine/MY: Access is denied.") {
		t.Errorf("machine store refused: %v", err)
	}
	// A store that does not exist anywhere.
	if _, err := f.openRef(t, "certstore:user/nosuch/alice"); err == nil || !strings.Contains(err.Error(), "open user/NOSUCH") {
		t.Errorf("missing store: %v", err)
	}
	// Both readable and holding the same certificate: ambiguous, and the
	// hint's location resolves it.
	delete(f.openErr, "machine/MY")
	_, err = f.openRef(t, "certstore:alice")
	if !errors.Is(err, ErrAmbiguous) {
		t.Fatalf("same certificate in both stores: %v", err)
	}
	hint := err.Error()[strings.LastIndex(err.Error(), "e.g. ")+len("e.g. "):]
	id, err = f.openRef(t, hint)
	if err != nil || id.Where != "user/MY" {
		t.Fatalf("the hint %q: %v", hint, err)
	}
	id.Close()
	if l := f.leaks(); len(l) > 0 {
		t.Errorf("leaks: %q", l)
	}
}

func TestWinStoreKeyErrors(t *testing.T) {
	p := newTestPKI(t)
	k := genKey(t, "p256")
	alice := p.valid(t, "alice", k)
	f := newFakeWin()
	f.stores["user/MY"] = []fakeWinCert{{cert: alice, key: k}}
	id, err := f.openRef(t, "certstore:user/my/alice")
	if err != nil {
		t.Fatal(err)
	}
	// The card is pulled out: the handle dies, and the certificate's key
	// cannot be acquired.
	f.mu.Lock()
	for h := range f.keys {
		f.dead[h] = true
	}
	f.stores["user/MY"][0].gone = true
	f.mu.Unlock()
	digest := sha256.Sum256([]byte("x"))
	_, err = id.Key.Sign(nil, digest[:], crypto.SHA256)
	if err == nil || !strings.Contains(err.Error(), "certstore:user/my/alice: sign: NCryptSignHash (ECDSA with SHA-256): 0x80090026 NTE_INVALID_HANDLE; opening the key again: CryptAcquireCertificatePrivateKey: 0x8010000C SCARD_E_NO_SMARTCARD") {
		t.Errorf("sign with the card out: %v", err)
	}
	// Put back: the next signature opens the key again.
	f.mu.Lock()
	f.stores["user/MY"][0].gone = false
	f.mu.Unlock()
	sig, err := id.Key.Sign(nil, digest[:], crypto.SHA256)
	if err != nil || !ecdsa.VerifyASN1(&k.(*ecdsa.PrivateKey).PublicKey, digest[:], sig) {
		t.Fatalf("sign with the card back: %v", err)
	}
	id.Close()
	if l := f.leaks(); len(l) > 0 {
		t.Errorf("leaks: %q", l)
	}
}
