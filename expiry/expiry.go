// Package expiry warns, in the log, before the certificates a daemon
// depends on run out: its own certificate, the chain it presents and the CA
// bundle it verifies peers with. Each certificate is warned about once per
// threshold (30, 7 and 1 days by default) and once more when it has
// expired; a certificate that a reload puts in place starts afresh. The
// revocation lists in use are watched the same way, against their next
// update (1 day before by default, and once stale).
package expiry

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/twoway/twoway/pki"
)

// Which certificate a Cert is; the same words as control's CertOwn,
// CertChain and CertCA.
const (
	Own   = "own"
	Chain = "chain"
	CA    = "ca"
	// CRL is the Which of a Warning about a revocation list: Subject is
	// its issuer, Serial its CRL number (decimal) and NotAfter its next
	// update.
	CRL = "crl"
)

// Cert is a certificate to watch and what it is to the daemon.
type Cert struct {
	Which string // Own, Chain or CA
	Cert  *x509.Certificate
}

// Warning is one warning the watcher logged.
type Warning struct {
	Which    string
	Subject  string
	Serial   string // hex
	NotAfter time.Time
	// Left is the time to expiry at the check, negative once expired.
	Left time.Duration
	// Threshold is the threshold crossed; 0 when the certificate has
	// expired.
	Threshold time.Duration
	// RenewalError is set for the daemon's own certificate when it is
	// renewed automatically and renewal is failing: why.
	RenewalError string
}

// Expired reports whether the warning is about an expired certificate.
func (w Warning) Expired() bool { return w.Left <= 0 }

// DefaultThresholds are when to warn: 30, 7 and 1 days before expiry.
var DefaultThresholds = []time.Duration{30 * 24 * time.Hour, 7 * 24 * time.Hour, 24 * time.Hour}

// DefaultCRLThresholds are when to warn before a CRL's next update: a day.
// CRLs live days, not years (twoway pki crl: 7), and are normally replaced
// well before they are due, so an earlier warning would fire for every one.
var DefaultCRLThresholds = []time.Duration{24 * time.Hour}

// Config configures a Watcher.
type Config struct {
	// Certificates returns the certificates to watch. It is called at
	// every check, so certificates replaced by a reload are picked up;
	// see FromCredentials.
	Certificates func() []Cert
	// Thresholds are how long before expiry to warn (DefaultThresholds).
	Thresholds []time.Duration
	// CRLs, if set, returns the revocation lists to watch, at every check
	// (see CRLsFromCredentials).
	CRLs func() []*x509.RevocationList
	// CRLThresholds are how long before a CRL's next update to warn
	// (DefaultCRLThresholds).
	CRLThresholds []time.Duration
	// Interval is how often to check (1 h).
	Interval time.Duration
	// Now is the clock (time.Now).
	Now func() time.Time
	// Tick, if set, triggers the periodic checks instead of a ticker with
	// Interval (tests).
	Tick <-chan time.Time
	// Changed, if set, triggers a check as soon as it is signalled: pass
	// pki.Store.Subscribe() so a reload is checked at once.
	Changed <-chan struct{}
	// OnWarn, if set, is called with each warning after it is logged
	// (tests, metrics). It runs on the watcher's goroutine.
	OnWarn func(Warning)
	// Renewal, if set, says that the daemon's own certificate is renewed
	// automatically (package renew) and returns the error of its last
	// attempt while renewal is failing, nil otherwise. The own
	// certificate is then warned about only while renewal is failing,
	// and the warning says so: a short-lived certificate that is renewed
	// in time always "expires soon".
	Renewal func() error
}

// Watcher checks certificates at start, after each reload and
// periodically.
type Watcher struct {
	cfg           Config
	log           *slog.Logger
	thresholds    []time.Duration // longest first
	crlThresholds []time.Duration // longest first

	mu     sync.Mutex
	warned map[[32]byte]int // certificate hash -> levels warned (see level); guarded by mu

	cancel   context.CancelFunc
	wg       sync.WaitGroup
	stopOnce sync.Once
	stopped  chan struct{}
}

// New checks cfg; nothing is checked until Start or Check.
func New(cfg Config, logger *slog.Logger) (*Watcher, error) {
	if cfg.Certificates == nil {
		return nil, errors.New("expiry: no certificates")
	}
	th, err := sortThresholds(cfg.Thresholds, DefaultThresholds)
	if err != nil {
		return nil, err
	}
	crlTh, err := sortThresholds(cfg.CRLThresholds, DefaultCRLThresholds)
	if err != nil {
		return nil, err
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Watcher{
		cfg: cfg, log: logger, thresholds: th, crlThresholds: crlTh,
		warned: make(map[[32]byte]int), stopped: make(chan struct{}),
	}, nil
}

// sortThresholds returns th (def when empty), longest first, checked.
func sortThresholds(th, def []time.Duration) ([]time.Duration, error) {
	th = slices.Clone(th)
	if len(th) == 0 {
		th = slices.Clone(def)
	}
	for _, t := range th {
		if t <= 0 {
			return nil, errors.New("expiry: thresholds must be positive")
		}
	}
	slices.SortFunc(th, func(a, b time.Duration) int { return cmp.Compare(b, a) })
	return slices.Compact(th), nil
}

// Start checks once, before returning, then keeps checking in the
// background until Stop or until ctx is cancelled.
func (w *Watcher) Start(ctx context.Context) error {
	w.Check()
	ctx, w.cancel = context.WithCancel(ctx)
	tick := w.cfg.Tick
	var ticker *time.Ticker
	if tick == nil {
		ticker = time.NewTicker(w.cfg.Interval)
		tick = ticker.C
	}
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		if ticker != nil {
			defer ticker.Stop()
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick:
			case <-w.cfg.Changed: // nil when unset: never ready
			}
			w.Check()
		}
	}()
	return nil
}

// Stop ends the periodic checks and waits for them; it is idempotent.
func (w *Watcher) Stop() {
	w.stopOnce.Do(func() {
		if w.cancel != nil {
			w.cancel()
		}
		w.wg.Wait()
		close(w.stopped)
	})
}

// Wait blocks until the watcher has stopped. It never fails.
func (w *Watcher) Wait() error {
	<-w.stopped
	return nil
}

// level is how urgent an item with left to go is: 0 when no threshold is
// crossed, i+1 when thresholds[i] is the shortest crossed,
// len(thresholds)+1 once expired.
func level(thresholds []time.Duration, left time.Duration) int {
	if left <= 0 {
		return len(thresholds) + 1
	}
	lvl := 0
	for i, t := range thresholds {
		if left <= t {
			lvl = i + 1
		}
	}
	return lvl
}

// watched is one certificate or CRL as Check sees it.
type watched struct {
	key        [32]byte
	thresholds []time.Duration
	wn         Warning // Which, Subject, Serial and NotAfter
}

// items lists what to check now.
func (w *Watcher) items() []watched {
	var out []watched
	for _, c := range w.cfg.Certificates() {
		if c.Cert == nil {
			continue
		}
		out = append(out, watched{sha256.Sum256(c.Cert.Raw), w.thresholds, Warning{
			Which: c.Which, Subject: subject(c.Cert), Serial: c.Cert.SerialNumber.Text(16), NotAfter: c.Cert.NotAfter,
		}})
	}
	if w.cfg.CRLs != nil {
		for _, crl := range w.cfg.CRLs() {
			if crl == nil || crl.NextUpdate.IsZero() {
				continue // no promise of a next list: never stale
			}
			serial := "-"
			if crl.Number != nil {
				serial = crl.Number.String()
			}
			issuer := crl.Issuer.CommonName
			if issuer == "" {
				issuer = crl.Issuer.String()
			}
			out = append(out, watched{sha256.Sum256(crl.Raw), w.crlThresholds, Warning{
				Which: CRL, Subject: issuer, Serial: serial, NotAfter: crl.NextUpdate,
			}})
		}
	}
	return out
}

// Check checks every certificate and CRL now, logs what has become more
// urgent since the last check and returns those warnings. Safe for
// concurrent use.
func (w *Watcher) Check() []Warning {
	now := w.cfg.Now()
	items := w.items()
	var out []Warning
	var renewalErr error
	if w.cfg.Renewal != nil {
		renewalErr = w.cfg.Renewal()
	}

	w.mu.Lock()
	seen := make(map[[32]byte]bool, len(items))
	for _, it := range items {
		if seen[it.key] {
			continue // the same CA in the chain and the bundle
		}
		seen[it.key] = true
		left := it.wn.NotAfter.Sub(now)
		renewing := w.cfg.Renewal != nil && it.wn.Which == Own
		if renewing && renewalErr == nil && left > 0 {
			continue // renewal looks after it; warned once it fails
		}
		lvl := level(it.thresholds, left)
		if lvl <= w.warned[it.key] {
			continue
		}
		w.warned[it.key] = lvl
		wn := it.wn
		wn.Left = left
		if renewing && renewalErr != nil {
			wn.RenewalError = renewalErr.Error()
		}
		if lvl <= len(it.thresholds) {
			wn.Threshold = it.thresholds[lvl-1]
		}
		out = append(out, wn)
	}
	// Forget what is no longer in use, so the map does not grow with
	// every reload.
	for key := range w.warned {
		if !seen[key] {
			delete(w.warned, key)
		}
	}
	w.mu.Unlock()

	for _, wn := range out {
		w.logWarning(wn)
		if w.cfg.OnWarn != nil {
			w.cfg.OnWarn(wn)
		}
	}
	return out
}

func (w *Watcher) logWarning(wn Warning) {
	if wn.Which == CRL {
		attrs := []any{"issuer", wn.Subject, "crl_number", wn.Serial, "next_update", wn.NotAfter.UTC().Format(time.RFC3339)}
		if wn.Expired() {
			w.log.Error("revocation list is stale (past its next update): publish a new one (twoway pki crl) and reload", attrs...)
		} else {
			attrs = append(attrs, "hours_left", int(wn.Left/time.Hour))
			w.log.Warn("revocation list is due for replacement soon: publish a new one (twoway pki crl) and reload", attrs...)
		}
		return
	}
	attrs := []any{"which", wn.Which, "subject", wn.Subject, "serial", wn.Serial,
		"not_after", wn.NotAfter.UTC().Format(time.RFC3339)}
	if wn.RenewalError != "" {
		attrs = append(attrs, "renewal_error", wn.RenewalError)
	}
	switch {
	case wn.Expired():
		w.log.Error("certificate has expired", attrs...)
	case wn.RenewalError != "":
		attrs = append(attrs, "days_left", int(wn.Left/(24*time.Hour)), "hours_left", int(wn.Left/time.Hour))
		w.log.Warn("certificate expires soon and its renewal is failing", attrs...)
	default:
		attrs = append(attrs, "days_left", int(wn.Left/(24*time.Hour)), "threshold_days", int(wn.Threshold/(24*time.Hour)))
		w.log.Warn("certificate expires soon", attrs...)
	}
}

func subject(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return c.Subject.CommonName
	}
	return c.Subject.String()
}

// Credentials is where a daemon's certificates come from; *pki.Store
// implements it.
type Credentials interface {
	Certificate() *tls.Certificate
	Verifier() *pki.Verifier
}

// FromCredentials returns a Config.Certificates function that reads the
// current own certificate, the chain presented with it and the CA bundle
// from creds at every call, so a reload is seen.
func FromCredentials(creds Credentials) func() []Cert {
	return func() []Cert {
		var out []Cert
		if tc := creds.Certificate(); tc != nil {
			for i, der := range tc.Certificate {
				var c *x509.Certificate
				if i == 0 && tc.Leaf != nil {
					c = tc.Leaf
				} else {
					var err error
					if c, err = x509.ParseCertificate(der); err != nil {
						continue // the store parsed it when loading; cannot happen
					}
				}
				which := Chain
				if i == 0 {
					which = Own
				}
				out = append(out, Cert{Which: which, Cert: c})
			}
		}
		if v := creds.Verifier(); v != nil {
			for _, c := range v.CAs() {
				out = append(out, Cert{Which: CA, Cert: c})
			}
		}
		return out
	}
}

// CRLsFromCredentials returns a Config.CRLs function that reads the
// revocation lists in use from creds at every call, so a reload is seen.
func CRLsFromCredentials(creds Credentials) func() []*x509.RevocationList {
	return func() []*x509.RevocationList {
		if v := creds.Verifier(); v != nil {
			return v.CRLs()
		}
		return nil
	}
}
