// Package probe inspects any TLS server the way an operator debugging a
// mutual-TLS setup needs: protocol and cipher, the server's chain with
// expiry and fingerprints, whether it asks for a client certificate and
// which CAs it names, and whether a given client certificate is accepted.
package probe

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/twoway/twoway/pki"
)

// Options describe one probe.
type Options struct {
	// Addr is host:port to connect to.
	Addr string
	// ServerName is sent as SNI and checked against the server
	// certificate; defaults to the host part of Addr.
	ServerName string
	// ALPN protocols to offer, if any.
	ALPN []string
	// ClientCert, if set, is offered when the server asks for one.
	ClientCert *tls.Certificate
	// Verifier, if set, verifies the server chain (as a twoway client
	// would). Without it the system roots are used.
	Verifier *pki.Verifier
	// Timeout bounds the connection and handshake; AlertWait is how long
	// to wait after the handshake for the server to reject our
	// certificate (TLS 1.3 servers do so only after the client finishes).
	Timeout   time.Duration
	AlertWait time.Duration
}

// Cert summarises one certificate of the server's chain.
type Cert struct {
	Subject     string    `json:"subject"`
	Issuer      string    `json:"issuer"`
	DNSNames    []string  `json:"dns_names,omitempty"`
	IPs         []string  `json:"ips,omitempty"`
	NotAfter    time.Time `json:"not_after"`
	DaysLeft    int       `json:"days_left"` // whole days, negative once expired
	Serial      string    `json:"serial"`
	Fingerprint string    `json:"sha256_fingerprint"`
	SPKIPin     string    `json:"spki_pin"`
	IsCA        bool      `json:"is_ca"`
}

// Result is what a probe found.
type Result struct {
	Addr        string `json:"addr"`
	ServerName  string `json:"server_name"`
	TLSVersion  string `json:"tls_version"`
	CipherSuite string `json:"cipher_suite"`
	ALPN        string `json:"alpn,omitempty"`
	Chain       []Cert `json:"chain"`
	// ServerVerified reports the server chain check; VerifiedWith names
	// what it was checked against.
	ServerVerified bool   `json:"server_verified"`
	VerifiedWith   string `json:"verified_with"`
	ServerError    string `json:"server_error,omitempty"`
	// ClientCertRequested: the server sent a CertificateRequest (two-way
	// TLS). AcceptableCAs are the CA names it listed.
	ClientCertRequested bool     `json:"client_cert_requested"`
	AcceptableCAs       []string `json:"acceptable_cas,omitempty"`
	// ClientCertSent: we had a certificate and sent it.
	ClientCertSent bool `json:"client_cert_sent"`
	// ClientCertAccepted is nil when no verdict applies (no request),
	// false when the server refused us, true when it did not within
	// AlertWait. ClientCertError carries the server's alert.
	ClientCertAccepted *bool  `json:"client_cert_accepted,omitempty"`
	ClientCertError    string `json:"client_cert_error,omitempty"`
}

// Run connects to opts.Addr and reports what it found. Only failure to
// connect or to complete the handshake is an error; a rejected client
// certificate or an untrusted server is a finding in the Result.
func Run(ctx context.Context, opts Options) (*Result, error) {
	if opts.Timeout == 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.AlertWait == 0 {
		opts.AlertWait = 2 * time.Second
	}
	host, _, err := net.SplitHostPort(opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("address %q: %w", opts.Addr, err)
	}
	if opts.ServerName == "" {
		opts.ServerName = host
	}
	res := &Result{Addr: opts.Addr, ServerName: opts.ServerName}
	cfg := &tls.Config{
		ServerName: opts.ServerName,
		NextProtos: opts.ALPN,
		// The probe reports on certificates it may not trust, so it takes
		// the chain unverified here and verifies it itself below.
		InsecureSkipVerify: true,
		MinVersion:         tls.VersionTLS10,
		GetClientCertificate: func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			res.ClientCertRequested = true
			for _, dn := range cri.AcceptableCAs {
				res.AcceptableCAs = append(res.AcceptableCAs, dnString(dn))
			}
			if opts.ClientCert == nil {
				return &tls.Certificate{}, nil
			}
			res.ClientCertSent = true
			return opts.ClientCert, nil
		},
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	d := tls.Dialer{Config: cfg}
	c, err := d.DialContext(ctx, "tcp", opts.Addr)
	if err != nil {
		// A TLS 1.2 server rejects a client certificate inside the
		// handshake; report that as a finding when it is one.
		if res.ClientCertRequested && isAlert(err) {
			f := false
			res.ClientCertAccepted = &f
			res.ClientCertError = err.Error()
			return res, nil
		}
		return nil, fmt.Errorf("connect %s: %w", opts.Addr, err)
	}
	conn := c.(*tls.Conn)
	defer conn.Close()
	st := conn.ConnectionState()
	res.TLSVersion = tls.VersionName(st.Version)
	res.CipherSuite = tls.CipherSuiteName(st.CipherSuite)
	res.ALPN = st.NegotiatedProtocol
	now := time.Now()
	for _, pc := range st.PeerCertificates {
		res.Chain = append(res.Chain, summarize(pc, now))
	}
	verifyServer(res, st.PeerCertificates, opts)

	if res.ClientCertRequested {
		// Our certificate is judged after our Finished in TLS 1.3: a
		// refusal arrives as an alert on the first read.
		conn.SetReadDeadline(time.Now().Add(opts.AlertWait))
		var b [1]byte
		_, rerr := conn.Read(b[:])
		ok := true
		if rerr != nil && isAlert(rerr) {
			ok = false
			res.ClientCertError = rerr.Error()
		}
		res.ClientCertAccepted = &ok
	}
	return res, nil
}

func verifyServer(res *Result, chain []*x509.Certificate, opts Options) {
	if len(chain) == 0 {
		res.ServerError = "server sent no certificate"
		return
	}
	if opts.Verifier != nil {
		res.VerifiedWith = "CA bundle"
		_, err := opts.Verifier.Verify(chain, pki.VerifyOptions{Usage: pki.UsageServer, ServerName: opts.ServerName})
		if err != nil {
			res.ServerError = err.Error()
			return
		}
		res.ServerVerified = true
		return
	}
	res.VerifiedWith = "system roots"
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	_, err := chain[0].Verify(x509.VerifyOptions{DNSName: opts.ServerName, Intermediates: inter})
	if err != nil {
		res.ServerError = err.Error()
		return
	}
	res.ServerVerified = true
}

// summarize describes c at now. DaysLeft is floored, not truncated, so a
// certificate that expired hours ago does not read as "0 days left".
func summarize(c *x509.Certificate, now time.Time) Cert {
	s := Cert{
		Subject:     c.Subject.String(),
		Issuer:      c.Issuer.String(),
		DNSNames:    c.DNSNames,
		NotAfter:    c.NotAfter,
		DaysLeft:    pki.DaysLeft(c.NotAfter, now),
		Serial:      c.SerialNumber.Text(16),
		Fingerprint: pki.Fingerprint(c),
		SPKIPin:     pki.SPKIPin(c),
		IsCA:        c.IsCA,
	}
	for _, ip := range c.IPAddresses {
		s.IPs = append(s.IPs, ip.String())
	}
	return s
}

// isAlert reports whether err is a TLS alert received from the server.
// crypto/tls wraps those in a *net.OpError with Op "remote error".
func isAlert(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "remote error"
}

func dnString(der []byte) string {
	var seq pkix.RDNSequence
	if rest, err := asn1.Unmarshal(der, &seq); err != nil || len(rest) > 0 {
		return fmt.Sprintf("(unparseable name, %d bytes)", len(der))
	}
	var n pkix.Name
	n.FillFromRDNSequence(&seq)
	return n.String()
}
