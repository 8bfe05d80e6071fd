// Package expiry warns, in the log, before the certificates a daemon
// depends on run out: its own certificate, the chain it presents and the CA
// bundle it verifies peers with. Each certificate is warned about once per
// threshold (30, 7 and 1 days by default) and once more when it has
// expired; a certificate that a reload puts in place starts afresh.
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
}

// Expired reports whether the warning is about an expired certificate.
func (w Warning) Expired() bool { return w.Left <= 0 }

// DefaultThresholds are when to warn: 30, 7 and 1 days before expiry.
var DefaultThresholds = []time.Duration{30 * 24 * time.Hour, 7 * 24 * time.Hour, 24 * time.Hour}

// Config configures a Watcher.
type Config struct {
	// Certificates returns the certificates to watch. It is called at
	// every check, so certificates replaced by a reload are picked up;
	// see FromCredentials.
	Certificates func() []Cert
	// Thresholds are how long before expiry to warn (DefaultThresholds).
	Thresholds []time.Duration
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
}

// Watcher checks certificates at start, after each reload and
// periodically.
type Watcher struct {
	cfg        Config
	log        *slog.Logger
	thresholds []time.Duration // longest first

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
	th := slices.Clone(cfg.Thresholds)
	if len(th) == 0 {
		th = slices.Clone(DefaultThresholds)
	}
	for _, t := range th {
		if t <= 0 {
			return nil, errors.New("expiry: thresholds must be positive")
		}
	}
	slices.SortFunc(th, func(a, b time.Duration) int { return cmp.Compare(b, a) })
	th = slices.Compact(th)
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
		cfg: cfg, log: logger, thresholds: th,
		warned: make(map[[32]byte]int), stopped: make(chan struct{}),
	}, nil
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

// level is how urgent a certificate with left to go is: 0 when no
// threshold is crossed, i+1 when thresholds[i] is the shortest crossed,
// len(thresholds)+1 once expired.
func (w *Watcher) level(left time.Duration) int {
	if left <= 0 {
		return len(w.thresholds) + 1
	}
	lvl := 0
	for i, t := range w.thresholds {
		if left <= t {
			lvl = i + 1
		}
	}
	return lvl
}

// Check checks every certificate now, logs what has become more urgent
// since the last check and returns those warnings. Safe for concurrent use.
func (w *Watcher) Check() []Warning {
	now := w.cfg.Now()
	certs := w.cfg.Certificates()
	var out []Warning

	w.mu.Lock()
	seen := make(map[[32]byte]bool, len(certs))
	for _, c := range certs {
		if c.Cert == nil {
			continue
		}
		key := sha256.Sum256(c.Cert.Raw)
		if seen[key] {
			continue // the same CA in the chain and the bundle
		}
		seen[key] = true
		left := c.Cert.NotAfter.Sub(now)
		lvl := w.level(left)
		if lvl <= w.warned[key] {
			continue
		}
		w.warned[key] = lvl
		wn := Warning{
			Which: c.Which, Subject: subject(c.Cert), Serial: c.Cert.SerialNumber.Text(16),
			NotAfter: c.Cert.NotAfter, Left: left,
		}
		if lvl <= len(w.thresholds) {
			wn.Threshold = w.thresholds[lvl-1]
		}
		out = append(out, wn)
	}
	// Forget certificates no longer in use, so the map does not grow
	// with every reload.
	for key := range w.warned {
		if !seen[key] {
			delete(w.warned, key)
		}
	}
	w.mu.Unlock()

	for _, wn := range out {
		attrs := []any{"which", wn.Which, "subject", wn.Subject, "serial", wn.Serial,
			"not_after", wn.NotAfter.UTC().Format(time.RFC3339)}
		if wn.Expired() {
			w.log.Error("certificate has expired", attrs...)
		} else {
			attrs = append(attrs, "days_left", int(wn.Left/(24*time.Hour)), "threshold_days", int(wn.Threshold/(24*time.Hour)))
			w.log.Warn("certificate expires soon", attrs...)
		}
		if w.cfg.OnWarn != nil {
			w.cfg.OnWarn(wn)
		}
	}
	return out
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
