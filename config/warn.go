package config

import (
	"crypto/x509"
	"errors"
	"net"
	"net/netip"

	"github.com/twoway/twoway/pki"
)

// Warnings for configurations that work but probably do not do what the
// operator meant. Warnings wraps them in an *Error naming file, line and
// key; `twoway config check` prints them and the daemon logs them at start
// and on reload.
var (
	ErrRootOnlyClientCA   = errors.New("holds only self-signed root CAs, so the issuing-CA rule is off: every CA under these roots (the server CA too) can issue client certificates; use the client CA's bundle (client-ca/bundle.crt: client CA + root)")
	ErrCRLMatchesNoCA     = errors.New("CRL issuer is none of the CAs in tls.client_ca: it is used only if a client presents that CA as an intermediate; is it the right file?")
	ErrMetricsNotLoopback = errors.New("metrics listener is reachable beyond loopback: anyone who can reach it reads identities, addresses and traffic counters; bind it to 127.0.0.1 or [::1]")
	ErrForwardNotLoopback = errors.New("forward listens beyond loopback")
)

// Warnings returns what in s works but weakens the gateway: a client_ca of
// root CAs only, a CRL matching no CA of client_ca, a metrics listener
// beyond loopback. Call it after Validate.
func (s *Server) Warnings() []*Error {
	src := s.src
	var out []*Error
	bundle, err := pki.LoadCertificates(s.TLS.ClientCA)
	if err == nil {
		if pki.RootsOnly(bundle) {
			out = append(out, src.errf("tls.client_ca", "%s %w", s.TLS.ClientCA, ErrRootOnlyClientCA))
		}
		for i, p := range s.TLS.CRLs {
			crl, err := pki.LoadCRL(p)
			if err != nil {
				continue // Validate reports it
			}
			if len(pki.UnmatchedCRLs(bundle, []*x509.RevocationList{crl})) > 0 {
				out = append(out, src.errf(indexPath("tls.crls", i), "%s (issuer %q): %w", p, crl.Issuer.String(), ErrCRLMatchesNoCA))
			}
		}
	}
	return append(out, metricsWarnings(src, s.Metrics)...)
}

// Warnings returns what in c works but exposes the client's tunnel to
// others: a -L forward listening beyond loopback (nothing authenticates
// it), a -D forward beyond loopback without [socks] authentication, and a
// metrics listener beyond loopback. Call it after Validate (also after
// adding forwards from the command line).
func (c *Client) Warnings() []*Error {
	var out []*Error
	for i, f := range c.Forwards {
		if isLoopbackListen(f.ListenAddr()) {
			continue
		}
		key := indexPath("forward", i)
		switch {
		case f.Type == ForwardLocal:
			out = append(out, c.src.errf(key, "%s: %w: anyone who can reach %s connects with this client's identity (nothing authenticates -L); bind it to 127.0.0.1", f, ErrForwardNotLoopback, f.Local))
		case f.Type == ForwardDynamic && c.SOCKS.User == "":
			out = append(out, c.src.errf(key, "%s: %w without SOCKS authentication: anyone who can reach %s uses this client's identity; set [socks] user and password_file (--socks-user, --socks-password-file) or bind it to 127.0.0.1", f, ErrForwardNotLoopback, f.Local))
		}
	}
	return append(out, metricsWarnings(c.src, c.Metrics)...)
}

func metricsWarnings(src *source, m Metrics) []*Error {
	if m.Listen == "" || isLoopbackListen(m.Listen) {
		return nil
	}
	return []*Error{src.errf("metrics.listen", "%q: %w", m.Listen, ErrMetricsNotLoopback)}
}

// isLoopbackListen reports whether a listen address (host:port) binds
// loopback only. An empty host binds every interface; a host name other
// than localhost may resolve to anything.
func isLoopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
