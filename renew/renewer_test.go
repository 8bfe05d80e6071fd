package renew

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/twoway/twoway/authority"
	"github.com/twoway/twoway/pki"
)

// wait is one timer the Renewer asked for.
type wait struct {
	d  time.Duration
	ch chan time.Time
}

// setup enrolls a 7-day certificate with a real CA, writes it and its key
// to files, and loads them in a pki.Store, as client.toml's would be.
func setup(t *testing.T) (*authority.CA, *pki.Store, string, string) {
	t.Helper()
	dir := t.TempDir()
	res, err := authority.Init(filepath.Join(dir, "pki"), authority.InitOptions{Org: "Example Corp"})
	if err != nil {
		t.Fatal(err)
	}
	ca := res.ClientCA
	token, _, err := ca.CreateToken(authority.TokenOptions{Name: "alice", Groups: []string{"eng"}, Days: 7})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "alice"}}, key)
	csr, _ := x509.ParseCertificateRequest(der)
	iss, _, err := ca.Enroll(token, csr, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, bundle := filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key"), filepath.Join(dir, "ca.crt")
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	for name, data := range map[string][]byte{
		certFile: authority.EncodeCertificatesPEM(append([]*x509.Certificate{iss.Cert}, iss.Chain...)...),
		keyFile:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
		bundle:   authority.EncodeCertificatesPEM(res.ServerCA.Bundle...),
	} {
		if err := os.WriteFile(name, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	store, err := pki.NewStore(pki.StoreConfig{CertFile: certFile, KeyFile: keyFile, CABundle: bundle})
	if err != nil {
		t.Fatal(err)
	}
	return ca, store, certFile, keyFile
}

// TestRenewerRenewsAtTwoThirdsWritesAndReloads drives a Renewer with an
// injected clock against a real CA: it waits until two thirds of the
// lifetime, fails once (the gateway unreachable) and retries after
// RetryMin, then writes a new key (0600) and the renewed certificate over
// the files and reloads them, and plans the next renewal for the new
// certificate.
func TestRenewerRenewsAtTwoThirdsWritesAndReloads(t *testing.T) {
	ca, store, certFile, keyFile := setup(t)
	oldKey, _ := os.ReadFile(keyFile)
	old := store.Certificate().Leaf
	now := old.NotBefore
	var mu sync.Mutex // guards now
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	waits := make(chan wait)
	fail := errors.New("no gateway session")
	var calls int
	r, err := New(Config{
		CertFile: certFile, KeyFile: keyFile, Current: store.Certificate, Reload: store.Reload,
		Renew: func(ctx context.Context, der []byte) ([]*x509.Certificate, error) {
			calls++
			if calls == 1 {
				return nil, fail
			}
			csr, err := x509.ParseCertificateRequest(der)
			if err != nil {
				return nil, err
			}
			iss, err := ca.Renew(store.Certificate().Leaf, csr, clock(), 0)
			if err != nil {
				return nil, err
			}
			return append([]*x509.Certificate{iss.Cert}, iss.Chain...), nil
		},
		Now: clock, Rand: func() float64 { return 0.5 },
		After: func(d time.Duration) <-chan time.Time {
			ch := make(chan time.Time, 1)
			waits <- wait{d, ch}
			return ch
		},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	fire := func(w wait) {
		mu.Lock()
		now = now.Add(w.d)
		mu.Unlock()
		w.ch <- now
	}
	life := old.NotAfter.Sub(old.NotBefore)
	w := <-waits
	if w.d != life*2/3 {
		t.Fatalf("first renewal in %v, want two thirds of %v", w.d, life)
	}
	if st := r.Status(); !st.Next.Equal(old.NotBefore.Add(life * 2 / 3)) {
		t.Errorf("status next %v", st.Next)
	}
	fire(w)
	w = <-waits // after the failure
	if w.d != DefaultPlan.RetryMin {
		t.Errorf("retry in %v, want %v", w.d, DefaultPlan.RetryMin)
	}
	if st := r.Status(); st.LastOutcome != OutcomeFailed || st.Failures != 1 || st.LastError != fail.Error() || r.Failing() == nil {
		t.Errorf("status after a failure: %+v", st)
	}
	fire(w)
	w = <-waits // after the renewal
	st := r.Status()
	if st.LastOutcome != OutcomeRenewed || st.Failures != 0 || r.Failing() != nil {
		t.Fatalf("status after the renewal: %+v", st)
	}
	cur := store.Certificate().Leaf
	if cur.SerialNumber.Cmp(old.SerialNumber) == 0 || cur.Subject.CommonName != "alice" {
		t.Fatalf("store holds serial %s of %s; want a renewed certificate for alice", cur.SerialNumber.Text(16), cur.Subject.CommonName)
	}
	newKey, _ := os.ReadFile(keyFile)
	if bytes.Equal(newKey, oldKey) {
		t.Error("renewal kept the key")
	}
	if fi, _ := os.Stat(keyFile); runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	if want := cur.NotBefore.Add(cur.NotAfter.Sub(cur.NotBefore) * 2 / 3); !st.Next.Equal(want) {
		t.Errorf("next renewal %v, want two thirds into the new certificate (%v)", st.Next, want)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(certFile), ".*renew-*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestKeyPlan(t *testing.T) {
	for _, tc := range []struct {
		key       string
		encrypted bool
		want      bool
	}{
		{"/etc/twoway/client.key", false, true},
		{"client.key", false, true},
		{`C:\ProgramData\twoway\client.key`, false, true},
		{"/etc/twoway/client.key", true, false},
		{"pkcs11:token=yubi;object=twoway?pin-source=file:/etc/pin", false, false},
		{"tpm:0x81000001", false, false},
	} {
		if got, why := KeyPlan(tc.key, tc.encrypted); got != tc.want {
			t.Errorf("KeyPlan(%q, %v) = %v (%s), want %v", tc.key, tc.encrypted, got, why, tc.want)
		}
	}
}
