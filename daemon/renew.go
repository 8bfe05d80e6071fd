package daemon

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twoway/twoway/authority"
	"github.com/twoway/twoway/config"
	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/renew"
	"github.com/twoway/twoway/tunnel"
)

// caRenewer is the gateway's tunnel.Renewer: the enrolling CA ([enroll]
// ca) renews the client certificates it issued.
type caRenewer struct {
	ca          *authority.CA
	maxLifetime time.Duration // 0: none
}

// renewRefusals are the CA's reasons that are the client's business: its
// certificate or its request. Anything else (a CA that cannot sign, a
// full disk) is the gateway's and is not told.
var renewRefusals = []error{authority.ErrNotIssued, authority.ErrRevoked, authority.ErrNotValid, authority.ErrBadCSR, authority.ErrOutlivesCA}

func (r *caRenewer) Renew(cur *x509.Certificate, csr *x509.CertificateRequest) ([]*x509.Certificate, error) {
	iss, err := r.ca.Renew(cur, csr, time.Now(), r.maxLifetime)
	if err != nil {
		for _, s := range renewRefusals {
			if errors.Is(err, s) {
				return nil, fmt.Errorf("%w: %w", tunnel.ErrRenewRefused, err)
			}
		}
		return nil, err
	}
	return append([]*x509.Certificate{iss.Cert}, iss.Chain...), nil
}

// newRenewer makes the client's certificate renewer: it renews over the
// session of c's tunnel (set before the renewer starts) and writes the
// files of [tls].
func newRenewer(t *config.ClientTLS, store *pki.Store, c *Client, logger *slog.Logger) (*renew.Renewer, error) {
	return renew.New(renew.Config{
		CertFile:     t.Cert,
		KeyFile:      t.Key,
		KeyEncrypted: t.KeyPasswordFile != "",
		Current:      store.Certificate,
		Reload:       store.Reload,
		Renew: func(ctx context.Context, csr []byte) ([]*x509.Certificate, error) {
			return c.tunnel.Renew(ctx, csr)
		},
		Changed: store.Subscribe(),
	}, logger.With("component", "renew"))
}
