package enroll_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twoway/twoway/authority"
	"github.com/twoway/twoway/enroll"
	"github.com/twoway/twoway/pki/pkitest"
)

// syncBuffer is a log sink the handler's goroutine writes and the test
// reads.
type syncBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newCA makes a real client issuing CA in a temporary directory.
func newCA(t *testing.T) *authority.CA {
	t.Helper()
	res, err := authority.Init(filepath.Join(t.TempDir(), "pki"), authority.InitOptions{Org: "Example Corp"})
	if err != nil {
		t.Fatal(err)
	}
	return res.ClientCA
}

// exchange runs one enrollment over a pipe: h serves one end, the laptop
// enrolls on the other. It returns once both are done.
func exchange(t *testing.T, h *enroll.Handler, token string, csr []byte) ([]*x509.Certificate, error) {
	t.Helper()
	laptop, gw := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer gw.Close()
		h.Serve(gw, "198.18.0.2:50000")
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	certs, err := enroll.Enroll(ctx, laptop, token, csr)
	laptop.Close()
	<-done
	return certs, err
}

func TestEnrollOverPipe(t *testing.T) {
	ca := newCA(t)
	var logs syncBuffer
	h := enroll.NewHandler(ca, slog.New(slog.NewTextHandler(&logs, nil)))
	token, rec, err := ca.CreateToken(authority.TokenOptions{Name: "alice", Groups: []string{"eng"}, Days: 7})
	if err != nil {
		t.Fatal(err)
	}
	csr, _ := pkitest.CSR(t, nil, pkix.Name{CommonName: "alice"})
	certs, err := exchange(t, h, token, csr.Raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) < 2 || certs[0].Subject.CommonName != "alice" || !certs[1].Equal(ca.Cert) {
		t.Fatalf("got %d certificates, leaf %v: want alice's then the client CA", len(certs), certs[0].Subject)
	}
	if err := certs[0].CheckSignatureFrom(ca.Cert); err != nil {
		t.Error(err)
	}

	// The same token again: refused, with the reason on both sides.
	csr2, _ := pkitest.CSR(t, nil, pkix.Name{})
	_, err = exchange(t, h, token, csr2.Raw)
	if !errors.Is(err, enroll.ErrRefused) || !errors.Is(err, authority.ErrTokenUsed) {
		t.Errorf("reused token: %v, want %v and %v", err, enroll.ErrRefused, authority.ErrTokenUsed)
	}
	if strings.Contains(err.Error(), ca.Dir) {
		t.Errorf("the laptop is told the CA's directory: %v", err)
	}
	l := logs.String()
	if !strings.Contains(l, "enrolled") || !strings.Contains(l, "enrollment refused") || !strings.Contains(l, "token="+rec.ID) ||
		!strings.Contains(l, "already used") {
		t.Errorf("log lacks the enrollment, the refusal, its reason or token %s:\n%s", rec.ID, l)
	}
	if strings.Contains(l, token) {
		t.Errorf("log contains the token:\n%s", l)
	}
}

func TestEnrollRefusalReasons(t *testing.T) {
	ca := newCA(t)
	h := enroll.NewHandler(ca, nil)
	for _, tc := range []struct {
		name    string
		token   string
		subject pkix.Name
		want    error
		text    string
	}{
		{"unknown token", "tw1-" + strings.Repeat("a", 52), pkix.Name{}, authority.ErrTokenUnknown, "unknown enrollment token"},
		{"name mismatch", "", pkix.Name{CommonName: "mallory"}, authority.ErrBadCSR, `asks for name "mallory", but the enrollment token is for "alice"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			token := tc.token
			if token == "" {
				var err error
				if token, _, err = ca.CreateToken(authority.TokenOptions{Name: "alice"}); err != nil {
					t.Fatal(err)
				}
			}
			csr, _ := pkitest.CSR(t, nil, tc.subject)
			_, err := exchange(t, h, token, csr.Raw)
			if !errors.Is(err, enroll.ErrRefused) || !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
				t.Errorf("got %v, want %v saying %q", err, tc.want, tc.text)
			}
		})
	}
}

// failingCA fails as a CA whose disk is full would.
type failingCA struct{}

func (failingCA) Enroll(string, *x509.CertificateRequest, time.Time) (*authority.Issued, authority.TokenRecord, error) {
	return nil, authority.TokenRecord{ID: "0123456789ab", Name: "alice"}, errors.New("write /srv/pki/client-ca/db.json: no space left on device")
}

func TestEnrollInternalErrorStaysOnGateway(t *testing.T) {
	var logs syncBuffer
	h := enroll.NewHandler(failingCA{}, slog.New(slog.NewTextHandler(&logs, nil)))
	csr, _ := pkitest.CSR(t, nil, pkix.Name{})
	_, err := exchange(t, h, "tw1-whatever", csr.Raw)
	if !errors.Is(err, enroll.ErrRefused) || strings.Contains(err.Error(), "/srv/pki") {
		t.Errorf("laptop told %v: want a refusal naming nothing of the gateway's", err)
	}
	if l := logs.String(); !strings.Contains(l, "no space left") || !strings.Contains(l, "token=0123456789ab") {
		t.Errorf("log lacks the reason or the token ID:\n%s", l)
	}
}

// rawExchange sends req as the laptop and returns the gateway's reply.
func rawExchange(t *testing.T, h *enroll.Handler, req []byte) map[string]any {
	t.Helper()
	laptop, gw := net.Pipe()
	defer laptop.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer gw.Close()
		h.Serve(gw, "198.18.0.2:50000")
	}()
	// The gateway stops reading at the bound, so the laptop writes on
	// its own while the test reads the reply.
	go func() { _, _ = laptop.Write(req) }()
	var rep map[string]any
	if err := json.NewDecoder(laptop).Decode(&rep); err != nil {
		t.Fatal(err)
	}
	laptop.Close()
	<-done
	return rep
}

func TestEnrollBadRequests(t *testing.T) {
	ca := newCA(t)
	h := enroll.NewHandler(ca, nil)
	token, _, err := ca.CreateToken(authority.TokenOptions{Name: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	big := append([]byte(`{"token": "`+token+`", "csr": "`), bytes.Repeat([]byte("A"), enroll.MaxMessage)...)
	if rep := rawExchange(t, h, big); rep["ok"] != nil || !strings.Contains(rep["error"].(string), "oversized") {
		t.Errorf("oversized request: reply %v", rep)
	}
	// Not a CSR: refused, and the token is burnt all the same.
	req, _ := json.Marshal(map[string]string{"token": token, "csr": "hello"})
	if rep := rawExchange(t, h, req); !strings.HasPrefix(rep["error"].(string), authority.ErrBadCSR.Error()) {
		t.Errorf("garbage CSR: reply %v", rep)
	}
	csr, _ := pkitest.CSR(t, nil, pkix.Name{})
	if _, err := exchange(t, h, token, csr.Raw); !errors.Is(err, authority.ErrTokenUsed) {
		t.Errorf("token after a garbage CSR: %v, want %v", err, authority.ErrTokenUsed)
	}
}

func TestEnrollClientGivesUpWithContext(t *testing.T) {
	laptop, gw := net.Pipe()
	defer gw.Close()
	defer laptop.Close()
	go func() { _, _ = io.Copy(io.Discard, gw) }() // a gateway that never answers
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	csr, _ := pkitest.CSR(t, nil, pkix.Name{})
	if _, err := enroll.Enroll(ctx, laptop, "tw1-x", csr.Raw); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want %v", err, context.DeadlineExceeded)
	}
}

func TestEnrollGatewayGivesUpOnSilentLaptop(t *testing.T) {
	var logs syncBuffer
	h := enroll.NewHandler(failingCA{}, slog.New(slog.NewTextHandler(&logs, nil)))
	h.SetTimeout(50 * time.Millisecond)
	laptop, gw := net.Pipe()
	defer laptop.Close()
	defer gw.Close()
	h.Serve(gw, "198.18.0.2:50000") // returns: the laptop says nothing
	if l := logs.String(); !strings.Contains(l, "timeout") {
		t.Errorf("log does not say the request timed out:\n%s", l)
	}
}
