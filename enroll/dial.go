package enroll

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/twoway/twoway/pki"
)

// Dial connects to the gateway at addr for enrollment: TLS 1.3 offering
// ALPN only, no client certificate, and the gateway's certificate judged
// by ver as the tunnel client judges it (chain, serverAuth usage, name
// serverName, CRLs), so that the token goes to the real gateway only.
func Dial(ctx context.Context, addr, serverName string, ver *pki.Verifier) (*tls.Conn, error) {
	if serverName == "" {
		return nil, errors.New("no gateway name to verify the certificate against")
	}
	d := &tls.Dialer{Config: &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: serverName,
		NextProtos: []string{ALPN},
		// crypto/tls's own chain check is replaced by ver in
		// VerifyConnection, which runs on every handshake: nothing is
		// skipped (see tunnel's clientTLSConfig).
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if cs.NegotiatedProtocol != ALPN {
				return fmt.Errorf("gateway does not serve enrollment (it offers ALPN %q, not %q)", cs.NegotiatedProtocol, ALPN)
			}
			_, err := ver.Verify(cs.PeerCertificates, pki.VerifyOptions{Usage: pki.UsageServer, ServerName: serverName})
			return err
		},
	}}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("enroll at %s: %w", addr, err)
	}
	return c.(*tls.Conn), nil
}
