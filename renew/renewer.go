package renew

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"time"
)

// Config configures a Renewer.
type Config struct {
	// CertFile and KeyFile are client.toml's tls.cert and tls.key: the
	// certificate (followed by its chain) is written over CertFile, and
	// a new key over KeyFile when KeyPlan says so.
	CertFile, KeyFile string
	// KeyEncrypted says KeyFile is encrypted (tls.key_password_file):
	// the key is then kept, never replaced by an unencrypted one.
	KeyEncrypted bool
	// Current returns the certificate in use (pki.Store.Certificate).
	Current func() *tls.Certificate
	// Reload loads the files again for the next connection
	// (pki.Store.Reload).
	Reload func() error
	// Renew asks the gateway to certify a request, DER, and returns the
	// new certificate and its chain (tunnel.Client.Renew).
	Renew func(ctx context.Context, csrDER []byte) ([]*x509.Certificate, error)
	// Plan decides when (DefaultPlan).
	Plan Plan
	// Now is the clock (time.Now); Rand draws in [0, 1)
	// (math/rand/v2.Float64).
	Now  func() time.Time
	Rand func() float64
	// After, if set, replaces time.After (tests).
	After func(time.Duration) <-chan time.Time
	// Changed, if set, signals that the certificate was reloaded from
	// elsewhere (pki.Store.Subscribe): the plan is made again.
	Changed <-chan struct{}
	// OnAttempt, if set, is told each attempt's outcome (nil: renewed).
	OnAttempt func(error)
}

// Status is a Renewer's state for `twoway status`.
type Status struct {
	// Next is when the next attempt is due.
	Next time.Time
	// LastAttempt, LastOutcome ("renewed" or "failed") and LastError
	// describe the last attempt; zero before the first.
	LastAttempt time.Time
	LastOutcome string
	LastError   string
	// Failures counts failed attempts since the last success.
	Failures int
}

// Outcomes in Status.LastOutcome.
const (
	OutcomeRenewed = "renewed"
	OutcomeFailed  = "failed"
)

// attemptTimeout bounds one attempt, session wait included.
const attemptTimeout = time.Minute

// Renewer renews the client certificate in the background. Status and
// Failing are safe for concurrent use.
type Renewer struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	status Status // guarded by mu
	state  State  // guarded by mu

	cancel   context.CancelFunc
	wg       sync.WaitGroup
	stopOnce sync.Once
	stopped  chan struct{}
}

// New checks cfg; nothing happens until Start.
func New(cfg Config, logger *slog.Logger) (*Renewer, error) {
	if cfg.CertFile == "" || cfg.KeyFile == "" {
		return nil, errors.New("renew: no certificate or key file to write")
	}
	if cfg.Current == nil || cfg.Reload == nil || cfg.Renew == nil {
		return nil, errors.New("renew: Current, Reload and Renew are required")
	}
	if cfg.Plan == (Plan{}) {
		cfg.Plan = DefaultPlan
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = mrand.Float64
	}
	if cfg.After == nil {
		cfg.After = time.After
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Renewer{cfg: cfg, log: logger, stopped: make(chan struct{})}, nil
}

// Start runs the renewal loop in the background until Stop or ctx ends.
func (r *Renewer) Start(ctx context.Context) error {
	ctx, r.cancel = context.WithCancel(ctx)
	r.wg.Add(1)
	go func() { defer r.wg.Done(); r.run(ctx) }()
	return nil
}

// Stop ends the loop, abandoning an attempt in progress (its files are
// either all written or not at all); idempotent.
func (r *Renewer) Stop() {
	r.stopOnce.Do(func() {
		if r.cancel != nil {
			r.cancel()
		}
		r.wg.Wait()
		close(r.stopped)
	})
}

// Wait blocks until stopped. A Renewer has no fatal errors.
func (r *Renewer) Wait() error { <-r.stopped; return nil }

// Status returns the renewal state.
func (r *Renewer) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status
}

// Failing returns the last attempt's error while renewal is failing, nil
// when the last attempt worked or none was due yet.
func (r *Renewer) Failing() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.status.Failures == 0 {
		return nil
	}
	return errors.New(r.status.LastError)
}

func (r *Renewer) run(ctx context.Context) {
	var serial string
	var logged time.Time // the due time last logged
	u := r.cfg.Rand()
	for {
		leaf := leafOf(r.cfg.Current())
		if leaf == nil {
			r.log.Warn("certificate renewal off: no client certificate loaded")
			return
		}
		r.mu.Lock()
		if s := leaf.SerialNumber.Text(16); s != serial {
			// A new certificate (renewed, or replaced by hand): a new
			// plan, and a new draw so that its due time is its own.
			serial, u = s, r.cfg.Rand()
			r.state = State{NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter}
		}
		next := r.cfg.Plan.Next(r.state, u)
		r.status.Next = next
		r.mu.Unlock()
		if r.state.Failures == 0 && !next.Equal(logged) {
			logged = next
			r.log.Info("certificate renewal scheduled", "serial", serial, "at", next.UTC().Format(time.RFC3339), "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
		}
		select {
		case <-ctx.Done():
			return
		case <-r.cfg.Changed:
			continue
		case <-r.cfg.After(max(next.Sub(r.cfg.Now()), 0)):
		}
		err := r.attempt(ctx, leaf)
		if ctx.Err() != nil {
			return
		}
		now := r.cfg.Now()
		r.mu.Lock()
		r.status.LastAttempt = now
		if err == nil {
			r.status.LastOutcome, r.status.LastError, r.status.Failures = OutcomeRenewed, "", 0
			r.state.Failures = 0
		} else {
			r.status.LastOutcome, r.status.LastError = OutcomeFailed, err.Error()
			r.status.Failures++
			r.state.Failures, r.state.LastAttempt = r.status.Failures, now
		}
		st := r.state
		r.mu.Unlock()
		if r.cfg.OnAttempt != nil {
			r.cfg.OnAttempt(err)
		}
		if err != nil {
			attrs := []any{"err", err, "failures", st.Failures, "not_after", leaf.NotAfter.UTC().Format(time.RFC3339)}
			if st.Urgent(now) {
				r.log.Error("certificate renewal failing and the certificate expires soon", attrs...)
			} else {
				r.log.Warn("certificate renewal failed; will retry", attrs...)
			}
		}
	}
}

// attempt renews once: request, write, reload.
func (r *Renewer) attempt(ctx context.Context, leaf *x509.Certificate) error {
	cur := r.cfg.Current()
	newKey, why := KeyPlan(r.cfg.KeyFile, r.cfg.KeyEncrypted)
	var key crypto.Signer
	if newKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		key = k
	} else {
		k, ok := cur.PrivateKey.(crypto.Signer)
		if !ok {
			return fmt.Errorf("the key in use cannot sign a certificate request (%T)", cur.PrivateKey)
		}
		key = k
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: leaf.Subject}, key)
	if err != nil {
		return fmt.Errorf("make certificate request: %w", err)
	}
	actx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	certs, err := r.cfg.Renew(actx, csr)
	if err != nil {
		return err
	}
	var certPEM []byte
	for _, c := range certs {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	var keyPEM []byte
	if newKey {
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return err
		}
		keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	if err := writePair(r.cfg.CertFile, certPEM, r.cfg.KeyFile, keyPEM); err != nil {
		return err
	}
	if err := r.cfg.Reload(); err != nil {
		return fmt.Errorf("renewed certificate written, but reloading it failed: %w", err)
	}
	r.log.Info("certificate renewed", "old_serial", leaf.SerialNumber.Text(16), "serial", certs[0].SerialNumber.Text(16),
		"not_after", certs[0].NotAfter.UTC().Format(time.RFC3339), "new_key", newKey, "key", why)
	return nil
}

func leafOf(c *tls.Certificate) *x509.Certificate {
	if c == nil || len(c.Certificate) == 0 {
		return nil
	}
	if c.Leaf != nil {
		return c.Leaf
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return nil
	}
	return leaf
}

// keyRef matches a key reference that is not a file: an RFC 3986 scheme
// of two or more characters ("pkcs11:", "tpm:", "keychain:"); one letter
// before a colon is a Windows drive.
var keyRef = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]+:`)

// KeyPlan decides whether a renewal makes a new key, and says why. A new
// ECDSA P-256 key, written over key, is the default: a key that changes
// with every certificate limits what a copied key file is worth. A key
// reference that is not a plain file (a pkcs11: URI and the like) keeps
// its key, which never leaves its token; so does an encrypted key file,
// which must not be replaced by an unencrypted one.
func KeyPlan(key string, encrypted bool) (newKey bool, why string) {
	switch {
	case keyRef.MatchString(key):
		return false, "kept: the key is held outside a file"
	case encrypted:
		return false, "kept: the key file is encrypted"
	}
	return true, "new ECDSA P-256 key"
}

// writePair writes cert over certFile and, unless key is nil, key over
// keyFile (mode 0600), each atomically: a temporary file in the same
// directory, synced, then renamed over the old one, which is not kept.
// The key goes first: a crash between the two renames leaves a new key
// beside the old certificate, which the next load reports as a mismatch
// (the running client keeps its loaded pair); a reader never sees a half
// written file.
func writePair(certFile string, cert []byte, keyFile string, key []byte) error {
	certMode := os.FileMode(0o644)
	if fi, err := os.Stat(certFile); err == nil {
		certMode = fi.Mode().Perm()
	}
	tmpCert, err := writeTemp(certFile, cert, certMode)
	if err != nil {
		return err
	}
	if key != nil {
		tmpKey, err := writeTemp(keyFile, key, 0o600)
		if err != nil {
			os.Remove(tmpCert)
			return err
		}
		if err := os.Rename(tmpKey, keyFile); err != nil {
			os.Remove(tmpKey)
			os.Remove(tmpCert)
			return fmt.Errorf("replace %s: %w", keyFile, err)
		}
	}
	if err := os.Rename(tmpCert, certFile); err != nil {
		os.Remove(tmpCert)
		return fmt.Errorf("replace %s: %w", certFile, err)
	}
	return nil
}

func writeTemp(path string, data []byte, mode os.FileMode) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".renew-*")
	if err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	name := f.Name()
	err = f.Chmod(mode)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(name)
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return name, nil
}
