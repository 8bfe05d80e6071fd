package tunnel

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/twoway/twoway/pki"
)

// Renewal of client certificates on the gateway, over a live session
// (KindRenew) or EST (est.go). Both take the same path, renew: the
// client's chain is verified again now by the current verifier (validity,
// CRLs, issuing-CA rule), its identity admitted again by the current
// policy, and only then is the Renewer asked, which checks its own
// records (issued by its CA, not revoked) and certifies the new key with
// the old certificate's identity. Nothing of the request but its key is
// used.
//
// A KindRenew stream, after its header (kind 4, no host):
//
//	client:  2-byte big-endian length n (1..maxRenewRequest), n bytes of
//	         PKCS#10 certificate request, DER
//	gateway: a stream reply; with CodeOK, a 4-byte big-endian length m
//	         (..maxRenewReply), then m bytes of PEM certificates, the new
//	         one first, then its issuing chain
//
// then both sides close the stream.

// Renewer certifies a new key for the holder of a client certificate
// (package authority's CA, through the daemon). Renew is called
// concurrently. An error matching ErrRenewRefused is the client's fault
// and its text is told to the client; any other is the gateway's, logged
// but not told.
type Renewer interface {
	// Renew returns the new certificate followed by its issuing chain.
	Renew(cur *x509.Certificate, csr *x509.CertificateRequest) ([]*x509.Certificate, error)
}

// ErrRenewRefused marks a renewal refused for what the client holds or
// asked; see Renewer.
var ErrRenewRefused = errors.New("renewal refused")

// RenewOutcome is one renewal's result, for OnRenew.
type RenewOutcome struct {
	Via     string // "session" or "est"
	Peer    *pki.Identity
	Outcome string // OutcomeRenewed, OutcomeRefused or OutcomeFailed
	Serial  string // the new certificate's, hex; renewed only
}

// Outcomes of a renewal, as metrics label them.
const (
	OutcomeRenewed = "renewed"
	OutcomeRefused = "refused"
	OutcomeFailed  = "failed"
)

const (
	maxRenewRequest = 16 << 10
	maxRenewReply   = 64 << 10
	renewTimeout    = 30 * time.Second
)

// errRenewInternal is what a client is told when renewal failed for a
// reason of the gateway's.
const errRenewInternal = "renewal failed on the gateway; ask its administrator to look at its log"

// renew runs one renewal for the client that presented chain (leaf
// first) and returns the new certificate and its chain, or an error to
// tell the client (matching ErrRenewRefused, or errRenewInternal's text).
// It logs and counts the outcome.
func (s *Server) renew(via string, chain []*x509.Certificate, csrDER []byte, logger *slog.Logger) ([]*x509.Certificate, error) {
	out, peer, err := s.renewChecked(chain, csrDER)
	o := RenewOutcome{Via: via, Peer: peer}
	switch {
	case err == nil:
		o.Outcome, o.Serial = OutcomeRenewed, out[0].SerialNumber.Text(16)
		logger.Info("certificate renewed", "via", via, "old_serial", chain[0].SerialNumber.Text(16), "serial", o.Serial,
			"not_after", out[0].NotAfter.UTC().Format(time.RFC3339))
	case errors.Is(err, ErrRenewRefused):
		o.Outcome = OutcomeRefused
		logger.Warn("certificate renewal refused", "via", via, "reason", err)
	default:
		o.Outcome = OutcomeFailed
		logger.Error("certificate renewal failed", "via", via, "err", err)
		err = errors.New(errRenewInternal)
	}
	if s.cfg.OnRenew != nil {
		s.cfg.OnRenew(o)
	}
	return out, err
}

func (s *Server) renewChecked(chain []*x509.Certificate, csrDER []byte) ([]*x509.Certificate, *pki.Identity, error) {
	if len(chain) == 0 {
		return nil, nil, fmt.Errorf("%w: no client certificate", ErrRenewRefused)
	}
	peer := pki.IdentityFromCert(chain[0])
	ver := s.cfg.Credentials.Verifier()
	if ver == nil {
		return nil, &peer, errors.New("no client CA bundle loaded")
	}
	id, err := ver.Verify(chain, pki.VerifyOptions{Usage: pki.UsageClient})
	if err != nil {
		return nil, &peer, fmt.Errorf("%w: the certificate does not verify now: %w", ErrRenewRefused, err)
	}
	pol := s.pol()
	id = pol.Honour(id)
	if d := pol.Admit(id); !d.Allow {
		return nil, id, fmt.Errorf("%w: %s is not admitted (rule %q)", ErrRenewRefused, id.Name(), d.Rule)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, id, fmt.Errorf("%w: malformed certificate request: %w", ErrRenewRefused, err)
	}
	out, err := s.cfg.Renew.Renew(chain[0], csr)
	if err != nil {
		return nil, id, err
	}
	if len(out) == 0 {
		return nil, id, errors.New("renewer returned no certificate")
	}
	return out, id, nil
}

// handleRenew serves a KindRenew stream.
func (ss *serverSession) handleRenew(st *yamux.Stream) {
	s := ss.srv
	if s.cfg.Renew == nil {
		ss.refuseStream(st, CodeUnsupported, "this gateway does not renew certificates")
		return
	}
	_ = st.SetDeadline(time.Now().Add(renewTimeout))
	csr, err := readRenewRequest(st)
	if err != nil {
		ss.log.Info("bad renewal request", "stream", st.StreamID(), "err", err)
		ss.refuseStream(st, CodeBadRequest, "malformed renewal request")
		return
	}
	chain, err := s.renew("session", ss.chain, csr, ss.log)
	if err != nil {
		code := CodeDenied
		if !errors.Is(err, ErrRenewRefused) {
			code = CodeDialFailed // the gateway's failure, not the client's
		}
		ss.refuseStream(st, code, err.Error())
		return
	}
	body := encodeCertsPEM(chain)
	b := streamReply{Code: CodeOK}.marshal()
	b = binary.BigEndian.AppendUint32(b, uint32(len(body)))
	b = append(b, body...)
	if _, err := st.Write(b); err != nil {
		ss.log.Warn("renewed, but the reply was not delivered", "serial", chain[0].SerialNumber.Text(16), "err", err)
	}
	_ = st.Close()
}

func readRenewRequest(r io.Reader) ([]byte, error) {
	var n [2]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	l := int(binary.BigEndian.Uint16(n[:]))
	if l == 0 || l > maxRenewRequest {
		return nil, fmt.Errorf("request of %d bytes (1..%d)", l, maxRenewRequest)
	}
	b := make([]byte, l)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	return b, nil
}

// ErrNoRenewal means the gateway of the current session does not renew
// certificates (it did not announce capRenew).
var ErrNoRenewal = errors.New("gateway does not renew certificates")

// Renew asks the gateway of the current session (waiting for one as a
// forward would) to certify the key of csrDER (a PKCS#10 request, DER)
// in place of the client certificate the session was made with, and
// returns the new certificate followed by its chain. A refusal is a
// *StreamError carrying the gateway's reason. It neither changes the
// session nor the client's credentials: the caller writes the new ones
// and reloads them, for the next connection.
func (c *Client) Renew(ctx context.Context, csrDER []byte) ([]*x509.Certificate, error) {
	if len(csrDER) == 0 || len(csrDER) > maxRenewRequest {
		return nil, fmt.Errorf("%w: certificate request of %d bytes (1..%d)", ErrBadRequest, len(csrDER), maxRenewRequest)
	}
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	cs, err := c.session(ctx)
	if err != nil {
		return nil, err
	}
	if !cs.peerCaps[capRenew] {
		return nil, ErrNoRenewal
	}
	if !cs.streamStart() {
		return nil, ErrStopped
	}
	defer cs.streamDone()
	st, err := cs.mux.OpenStream()
	if err != nil {
		return nil, err
	}
	cs.ctr.streamsOpened.Add(1)
	deadline := time.Now().Add(renewTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = st.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = st.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	defer st.Close()
	hdr, _ := streamHeader{Kind: KindRenew}.marshal()
	hdr = binary.BigEndian.AppendUint16(hdr, uint16(len(csrDER)))
	if _, err := st.Write(append(hdr, csrDER...)); err != nil {
		return nil, fmt.Errorf("send renewal request: %w", err)
	}
	rep, err := readStreamReply(st)
	if err != nil {
		return nil, fmt.Errorf("read renewal reply: %w", err)
	}
	if err := rep.err(); err != nil {
		return nil, err
	}
	var n [4]byte
	if _, err := io.ReadFull(st, n[:]); err != nil {
		return nil, fmt.Errorf("read renewal reply: %w", err)
	}
	l := binary.BigEndian.Uint32(n[:])
	if l == 0 || l > maxRenewReply {
		return nil, fmt.Errorf("renewal reply of %d bytes (1..%d)", l, maxRenewReply)
	}
	body := make([]byte, l)
	if _, err := io.ReadFull(st, body); err != nil {
		return nil, fmt.Errorf("read renewal reply: %w", err)
	}
	certs, err := pki.ParseCertificatesPEM(body)
	if err != nil {
		return nil, fmt.Errorf("renewal reply: %w", err)
	}
	if len(certs) == 0 {
		return nil, errors.New("renewal reply holds no certificate")
	}
	if !bytes.Equal(certs[0].RawSubjectPublicKeyInfo, csr.RawSubjectPublicKeyInfo) {
		return nil, errors.New("renewal reply: the certificate is not for the requested key")
	}
	return certs, nil
}

func encodeCertsPEM(certs []*x509.Certificate) []byte {
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return b
}
