package expiry

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/pki/pkitest"
)

const day = 24 * time.Hour

// clock is a fake clock tests move by hand.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}

// creds is a swappable credential set, like a pki.Store across reloads.
type creds struct {
	mu   sync.Mutex
	cert *tls.Certificate
	ver  *pki.Verifier
}

func (c *creds) Certificate() *tls.Certificate {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cert
}

func (c *creds) Verifier() *pki.Verifier {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ver
}

func (c *creds) set(leaf *pkitest.Leaf) {
	tc := leaf.TLSCertificate()
	c.mu.Lock()
	c.cert = &tc
	c.mu.Unlock()
}

// fixture is a client CA under a root, a leaf expiring in 40 days, and a
// verifier trusting the server side of the same hierarchy.
type fixture struct {
	start time.Time
	h     *pkitest.Hierarchy
	leaf  *pkitest.Leaf
	creds *creds
}

func newFixture(t *testing.T) *fixture {
	start := time.Now()
	h := pkitest.NewHierarchy(t)
	leaf := h.ClientCA.Issue(t, pkitest.LeafOptions{CommonName: "alice", NotAfter: start.Add(40 * day)})
	ver, err := pki.NewVerifier(h.ServerBundle(), nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &creds{ver: ver}
	c.set(leaf)
	return &fixture{start: start, h: h, leaf: leaf, creds: c}
}

func newWatcher(t *testing.T, cfg Config) (*Watcher, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, nil))
	w, err := New(cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	return w, &buf
}

type lockedWriter struct {
	mu  *sync.Mutex
	buf *bytes.Buffer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// only keeps the warnings about one certificate.
func only(ws []Warning, subject string) []Warning {
	var out []Warning
	for _, w := range ws {
		if w.Subject == subject {
			out = append(out, w)
		}
	}
	return out
}

func TestFromCredentials(t *testing.T) {
	f := newFixture(t)
	got := FromCredentials(f.creds)()
	var summary []string
	for _, c := range got {
		summary = append(summary, c.Which+":"+c.Cert.Subject.CommonName)
	}
	want := "own:alice chain:test client CA ca:test server CA ca:test root"
	if s := strings.Join(summary, " "); s != want {
		t.Fatalf("certificates %q, want %q", s, want)
	}
}

func TestThresholdsOncePerCertificate(t *testing.T) {
	f := newFixture(t)
	clk := &clock{now: f.start}
	w, logs := newWatcher(t, Config{Certificates: FromCredentials(f.creds), Now: clk.Now})

	steps := []struct {
		at        time.Duration // after start
		threshold time.Duration // expected warning for alice; -1 none, 0 expired
	}{
		{0, -1},       // 40 days left
		{9 * day, -1}, // 31 days left
		{10*day + time.Hour, 30 * day},
		{11 * day, -1}, // still inside 30 days: already warned
		{33*day + time.Hour, 7 * day},
		{34 * day, -1},
		{39*day + time.Hour, day},
		{39*day + 2*time.Hour, -1},
		{40*day + time.Second, 0},
		{41 * day, -1},
	}
	for _, s := range steps {
		clk.Set(f.start.Add(s.at))
		ws := only(w.Check(), "alice")
		switch {
		case s.threshold < 0 && len(ws) != 0:
			t.Errorf("at +%v: unexpected warnings %+v", s.at, ws)
		case s.threshold >= 0 && len(ws) != 1:
			t.Errorf("at +%v: %d warnings, want one at %v", s.at, len(ws), s.threshold)
		case s.threshold > 0 && (ws[0].Threshold != s.threshold || ws[0].Expired() || ws[0].Which != Own):
			t.Errorf("at +%v: warning %+v, want threshold %v for own", s.at, ws[0], s.threshold)
		case s.threshold == 0 && !ws[0].Expired():
			t.Errorf("at +%v: warning %+v, want expired", s.at, ws[0])
		}
	}
	out := logs.String()
	if n := strings.Count(out, "certificate expires soon"); n != 3 {
		t.Errorf("%d 'expires soon' log lines, want 3:\n%s", n, out)
	}
	if !strings.Contains(out, "level=ERROR msg=\"certificate has expired\" which=own subject=alice") {
		t.Errorf("no expired error in the log:\n%s", out)
	}
	if !strings.Contains(out, "days_left=6 threshold_days=7") {
		t.Errorf("7-day warning lacks days_left/threshold_days:\n%s", out)
	}
}

func TestStartInsideThresholdWarnsOnlyMostUrgent(t *testing.T) {
	f := newFixture(t)
	clk := &clock{now: f.start.Add(35 * day)} // 5 days left
	w, _ := newWatcher(t, Config{Certificates: FromCredentials(f.creds), Now: clk.Now})
	ws := only(w.Check(), "alice")
	if len(ws) != 1 || ws[0].Threshold != 7*day {
		t.Fatalf("warnings %+v, want one at the 7-day threshold", ws)
	}
}

func TestReloadRearms(t *testing.T) {
	f := newFixture(t)
	clk := &clock{now: f.start.Add(35 * day)}
	w, _ := newWatcher(t, Config{Certificates: FromCredentials(f.creds), Now: clk.Now})
	if ws := only(w.Check(), "alice"); len(ws) != 1 {
		t.Fatalf("first check: %+v", ws)
	}
	// A reload puts in a renewed certificate, itself 5 days from expiry:
	// it is warned about although the old one already was.
	renewed := f.h.ClientCA.Issue(t, pkitest.LeafOptions{CommonName: "alice", NotAfter: clk.Now().Add(5 * day)})
	f.creds.set(renewed)
	ws := only(w.Check(), "alice")
	if len(ws) != 1 || ws[0].Serial != renewed.Cert.SerialNumber.Text(16) {
		t.Fatalf("after reload: %+v, want one warning for the renewed certificate", ws)
	}
	// Reloading the same certificate again is not a new one.
	f.creds.set(renewed)
	if ws := only(w.Check(), "alice"); len(ws) != 0 {
		t.Fatalf("same certificate warned again: %+v", ws)
	}
}

func TestCAExpiryWarned(t *testing.T) {
	root := pkitest.NewRoot(t, "root")
	now := time.Now()
	ca := root.SubWithValidity(t, "short CA", now.Add(-time.Hour), now.Add(3*day))
	leaf := ca.Issue(t, pkitest.LeafOptions{CommonName: "gw", NotAfter: now.Add(2 * day)})
	ver, err := pki.NewVerifier(ca.Chain(), nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &creds{ver: ver}
	c.set(leaf)
	w, _ := newWatcher(t, Config{Certificates: FromCredentials(c), Now: func() time.Time { return now }})
	ws := w.Check()
	got := map[string]time.Duration{}
	for _, wn := range ws {
		got[wn.Which+":"+wn.Subject] = wn.Threshold
	}
	// The short CA is both in the presented chain and in the bundle: one
	// warning, under the first name it was seen by.
	want := map[string]time.Duration{"own:gw": 7 * day, "chain:short CA": 7 * day}
	if len(got) != len(want) || got["own:gw"] != want["own:gw"] || got["chain:short CA"] != want["chain:short CA"] {
		t.Fatalf("warnings %v, want %v", got, want)
	}
}

func TestPeriodicAndReloadChecks(t *testing.T) {
	f := newFixture(t)
	clk := &clock{now: f.start}
	tick := make(chan time.Time)
	changed := make(chan struct{})
	warns := make(chan Warning, 16)
	w, _ := newWatcher(t, Config{
		Certificates: FromCredentials(f.creds), Now: clk.Now, Tick: tick, Changed: changed,
		OnWarn: func(wn Warning) {
			if wn.Which == Own {
				warns <- wn
			}
		},
	})
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	select {
	case wn := <-warns:
		t.Fatalf("warning at start with 40 days left: %+v", wn)
	default: // Start checks synchronously, so nothing is pending
	}

	clk.Set(f.start.Add(15 * day))
	tick <- clk.Now()
	if wn := <-warns; wn.Threshold != 30*day {
		t.Fatalf("periodic check: %+v, want the 30-day warning", wn)
	}

	f.creds.set(f.h.ClientCA.Issue(t, pkitest.LeafOptions{CommonName: "alice", NotAfter: clk.Now().Add(12 * time.Hour)}))
	changed <- struct{}{}
	if wn := <-warns; wn.Threshold != day {
		t.Fatalf("check after reload: %+v, want the 1-day warning", wn)
	}
	w.Stop()
	if err := w.Wait(); err != nil {
		t.Fatal(err)
	}
}

func TestStartChecksAtOnce(t *testing.T) {
	f := newFixture(t)
	clk := &clock{now: f.start.Add(39*day + time.Hour)}
	var mu sync.Mutex
	var got []Warning
	w, _ := newWatcher(t, Config{Certificates: FromCredentials(f.creds), Now: clk.Now, Interval: time.Hour,
		OnWarn: func(wn Warning) { mu.Lock(); got = append(got, wn); mu.Unlock() }})
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	w.Stop()
	mu.Lock()
	defer mu.Unlock()
	if ws := only(got, "alice"); len(ws) != 1 || ws[0].Threshold != day {
		t.Fatalf("Start warned %+v, want the 1-day warning for alice", got)
	}
}

// TestCRLGoesStale: a CRL is warned about a day before its next update and
// once more when it has passed; a fresh CRL put in by a reload starts
// afresh, and the certificate thresholds do not apply to CRLs (a 7-day CRL
// is not "inside 30 days" from the moment it is made).
func TestCRLGoesStale(t *testing.T) {
	f := newFixture(t)
	crl := f.h.ClientCA.CRL(t, 3) // next update in 24 h
	ver, err := pki.NewVerifier(f.h.ClientBundle(), []*x509.RevocationList{crl})
	if err != nil {
		t.Fatal(err)
	}
	f.creds.mu.Lock()
	f.creds.ver = ver
	f.creds.mu.Unlock()
	next := crl.NextUpdate
	clk := &clock{now: next.Add(-2 * day)}
	w, logs := newWatcher(t, Config{Certificates: FromCredentials(f.creds), CRLs: CRLsFromCredentials(f.creds), Now: clk.Now})
	crlWarnings := func() []Warning {
		var out []Warning
		for _, wn := range w.Check() {
			if wn.Which == CRL {
				out = append(out, wn)
			}
		}
		return out
	}
	if ws := crlWarnings(); len(ws) != 0 {
		t.Fatalf("two days before the next update: %+v", ws)
	}
	clk.Set(next.Add(-23 * time.Hour))
	ws := crlWarnings()
	if len(ws) != 1 || ws[0].Expired() || ws[0].Threshold != day || ws[0].Serial != "3" || ws[0].Subject != f.h.ClientCA.Cert.Subject.CommonName {
		t.Fatalf("a day before: %+v, want one warning for CRL 3", ws)
	}
	if ws := crlWarnings(); len(ws) != 0 {
		t.Fatalf("warned twice: %+v", ws)
	}
	clk.Set(next.Add(time.Minute))
	if ws := crlWarnings(); len(ws) != 1 || !ws[0].Expired() {
		t.Fatalf("after the next update: %+v, want one stale warning", ws)
	}
	// A reload puts in CRL 4: warned about on its own, although CRL 3
	// already was.
	fresh, err := pki.NewVerifier(f.h.ClientBundle(), []*x509.RevocationList{f.h.ClientCA.CRL(t, 4)})
	if err != nil {
		t.Fatal(err)
	}
	f.creds.mu.Lock()
	f.creds.ver = fresh
	f.creds.mu.Unlock()
	clk.Set(time.Now().Add(23 * time.Hour))
	if ws := crlWarnings(); len(ws) != 1 || ws[0].Serial != "4" || ws[0].Expired() {
		t.Fatalf("after reload: %+v, want one warning for CRL 4", ws)
	}
	out := logs.String()
	if !strings.Contains(out, `level=WARN msg="revocation list is due for replacement soon`) || !strings.Contains(out, "crl_number=3") ||
		!strings.Contains(out, `level=ERROR msg="revocation list is stale`) {
		t.Fatalf("log:\n%s", out)
	}
}

// TestRenewalSilencesUntilFailing: with renewal configured, the own
// certificate is not warned about while renewal works; once it fails,
// the warning says renewal is failing and why. The CAs are warned about
// as before.
func TestRenewalSilencesUntilFailing(t *testing.T) {
	f := newFixture(t)
	clk := &clock{now: f.start.Add(35 * day)} // 5 days left
	var failing error
	w, logs := newWatcher(t, Config{Certificates: FromCredentials(f.creds), Now: clk.Now, Renewal: func() error { return failing }})
	if ws := only(w.Check(), "alice"); len(ws) != 0 {
		t.Fatalf("renewal working: warnings %+v", ws)
	}
	failing = errors.New("gateway does not renew certificates")
	ws := only(w.Check(), "alice")
	if len(ws) != 1 || ws[0].Threshold != 7*day || ws[0].RenewalError != failing.Error() {
		t.Fatalf("renewal failing: warnings %+v, want one at 7 days naming the renewal error", ws)
	}
	if out := logs.String(); !strings.Contains(out, `msg="certificate expires soon and its renewal is failing" which=own subject=alice`) ||
		!strings.Contains(out, `renewal_error="gateway does not renew certificates"`) {
		t.Errorf("log:\n%s", out)
	}
	clk.Set(f.start.Add(40*day + time.Second))
	if ws := only(w.Check(), "alice"); len(ws) != 1 || !ws[0].Expired() {
		t.Errorf("expired: warnings %+v", ws)
	}
}
