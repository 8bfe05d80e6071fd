package tunnel

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/twoway/twoway/keystore"
	"github.com/twoway/twoway/pki"
)

// Credentials supply this side's certificate and the verifier for the
// peer's. Both are read again at every handshake, so a reload (see
// pki.Store, which implements this) applies to the next connection while
// live sessions continue (until Server.Revalidate re-checks them).
type Credentials interface {
	Certificate() *tls.Certificate
	Verifier() *pki.Verifier
}

// serverHandshake records what happened during one server-side handshake,
// for the session and for the refusal log.
type serverHandshake struct {
	// hello, if set, is told that the ClientHello arrived; false means
	// the connection was evicted meanwhile and must not go on.
	hello     func() bool
	helloSeen bool
	verifier  *pki.Verifier
	presented []*x509.Certificate
	identity  *pki.Identity
	err       error // our own verdict, when we failed the handshake
	// enroll is set when the client is let in to enroll, without a
	// certificate: it gets no session, only the Enroller.
	enroll bool
	// est is set when a verified client negotiated ESTALPN: it gets no
	// session, only one EST request (est.go).
	est bool
}

// serverTLSConfig returns the config for one incoming connection. The
// certificate and verifier are taken from creds when the ClientHello
// arrives, so the CA names in the CertificateRequest and the verifier that
// judges the answer come from the same snapshot. Session tickets are
// encrypted with ticketKeys (newest first); none means no tickets. With
// enroll, a client that offers EnrollALPN gets enrollConfig instead. With
// est, a client that offers ESTALPN but not ALPN gets the same client
// certificate check as a session, for one EST request.
func serverTLSConfig(creds Credentials, ticketKeys [][32]byte, enroll, est bool, hs *serverHandshake) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			hs.helloSeen = true
			if hs.hello != nil && !hs.hello() {
				return nil, errEvicted
			}
			cert, ver := creds.Certificate(), creds.Verifier()
			if cert == nil || ver == nil {
				return nil, errors.New("no server certificate or client CA bundle loaded")
			}
			if enroll && slices.Contains(hello.SupportedProtos, EnrollALPN) {
				return enrollConfig(cert, hs), nil
			}
			hs.verifier = ver
			proto := ALPN
			if est && slices.Contains(hello.SupportedProtos, ESTALPN) && !slices.Contains(hello.SupportedProtos, ALPN) {
				proto = ESTALPN
				ticketKeys = nil // an EST client has nothing to resume
			}
			cfg := &tls.Config{
				MinVersion:   tls.VersionTLS13,
				Certificates: []tls.Certificate{*cert},
				NextProtos:   []string{proto},
				// RequireAnyClientCert makes crypto/tls demand a certificate
				// but leave judging it to VerifyConnection: pki.Verifier
				// applies rules crypto/tls cannot (the issuing-CA rule,
				// CRLs). ClientCAs is only used for the CA names in the
				// CertificateRequest, so clients pick the right certificate.
				ClientAuth: tls.RequireAnyClientCert,
				ClientCAs:  ver.Pool(),
				// On a resumed connection crypto/tls restores the
				// certificates from the ticket and calls
				// VerifyConnection with them too, so they are judged by
				// the current verifier (CRLs, expiry, issuer) exactly
				// like presented ones (tickets.go).
				SessionTicketsDisabled: len(ticketKeys) == 0,
				VerifyConnection: func(cs tls.ConnectionState) error {
					hs.presented = cs.PeerCertificates
					if cs.NegotiatedProtocol != proto {
						hs.err = ErrALPN
						return hs.err
					}
					id, err := ver.Verify(cs.PeerCertificates, pki.VerifyOptions{Usage: pki.UsageClient})
					if err != nil {
						hs.err = err
						return err
					}
					hs.identity = id
					hs.est = proto == ESTALPN
					return nil
				},
			}
			if len(ticketKeys) > 0 {
				// Set on the returned config, or crypto/tls would use
				// the outer one's automatic keys, and that config is
				// made per connection: no ticket would ever open.
				cfg.SetSessionTicketKeys(ticketKeys)
			}
			return cfg, nil
		},
	}
}

// enrollConfig lets a client in without a certificate, for enrollment
// only: it negotiates EnrollALPN or nothing, and VerifyConnection insists
// on it, so that a connection without a certificate can never become a
// session. No tickets: there is no client identity to resume.
func enrollConfig(cert *tls.Certificate, hs *serverHandshake) *tls.Config {
	return &tls.Config{
		MinVersion:             tls.VersionTLS13,
		Certificates:           []tls.Certificate{*cert},
		NextProtos:             []string{EnrollALPN},
		ClientAuth:             tls.NoClientCert,
		SessionTicketsDisabled: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if cs.NegotiatedProtocol != EnrollALPN {
				hs.err = ErrALPN
				return hs.err
			}
			hs.enroll = true
			return nil
		},
	}
}

// clientHandshake records the client side's verdict on the gateway.
type clientHandshake struct {
	verifier *pki.Verifier
	identity *pki.Identity
	err      error
}

// clientTLSConfig returns the config for one connection to a gateway.
func clientTLSConfig(creds Credentials, serverName string, pins []string, tickets tls.ClientSessionCache, hs *clientHandshake) (*tls.Config, error) {
	ver := creds.Verifier()
	if ver == nil {
		return nil, errors.New("no gateway CA bundle loaded")
	}
	if serverName == "" {
		// pki.Verifier skips the name check for an empty name, which
		// would accept any gateway certificate from the server CA.
		return nil, errors.New("no gateway name to verify the certificate against")
	}
	hs.verifier = ver
	if c := creds.Certificate(); c != nil && keystore.InStore(c.PrivateKey) {
		// A key in a token (keystore) is there so that pulling the
		// token cuts access; resuming with a ticket would skip the
		// signature that proves the token is present.
		tickets = nil
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: serverName,
		NextProtos: []string{ALPN},
		// InsecureSkipVerify only switches off crypto/tls's built-in chain
		// check, so that the gateway's chain is judged by pki.Verifier in
		// VerifyConnection below instead: the same checks (chain, validity,
		// serverAuth usage, name) plus the issuing-CA rule, CRLs and pins.
		// VerifyConnection runs on every handshake and a failure aborts it,
		// so nothing is skipped. This is not, and must never become, a
		// user-facing switch: there is no way to disable verification.
		InsecureSkipVerify: true,
		// Tickets are kept per server name. A resumed connection's
		// gateway certificate comes from the ticket and goes through
		// VerifyConnection all the same (name, chain, CRLs, pins).
		ClientSessionCache: tickets,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if cs.NegotiatedProtocol != ALPN {
				hs.err = ErrALPN
				return hs.err
			}
			id, err := ver.Verify(cs.PeerCertificates, pki.VerifyOptions{
				Usage:      pki.UsageServer,
				ServerName: serverName,
				Pins:       pins,
			})
			if err != nil {
				hs.err = err
				return err
			}
			hs.identity = id
			return nil
		},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if c := creds.Certificate(); c != nil {
				return c, nil
			}
			return &tls.Certificate{}, nil // none: the gateway will refuse us
		},
	}, nil
}

// classifyHandshake turns a failed server handshake into a refusal.
func classifyHandshake(remote net.Addr, hs *serverHandshake, err error) Refusal {
	r := Refusal{Remote: remote, Stage: "tls", Err: err}
	if len(hs.presented) > 0 {
		id := pki.IdentityFromCert(hs.presented[0])
		r.Presented = &id
	}
	switch {
	case errors.Is(hs.err, ErrALPN):
		r.Stage, r.Err = "alpn", hs.err
	case hs.err != nil:
		r.Stage, r.Err = "verify", hs.err
	default:
		// crypto/tls refused before our verifier ran: no certificate,
		// TLS 1.2 only, no shared cipher, garbage, or a timeout.
		r.Err = fmt.Errorf("TLS handshake: %w", err)
	}
	return r
}
