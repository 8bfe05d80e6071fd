// Package enroll is the enrollment protocol: a laptop holding a one-time
// token (authority.CreateToken) sends a certificate request for a key it
// made itself to a gateway, over a TLS connection on which it
// authenticated the gateway but presented no certificate, and gets back
// its client certificate and chain.
//
// The exchange is one JSON request and one JSON reply, each at most
// MaxMessage bytes:
//
//	laptop:  {"token": "tw1-...", "csr": "-----BEGIN CERTIFICATE REQUEST-----..."}
//	gateway: {"ok": true, "chain": "-----BEGIN CERTIFICATE-----..."}  (leaf first)
//	     or  {"error": "enrollment token already used"}
//
// The connection is negotiated with ALPN so that a gateway tells an
// enrollment from a session before asking for a client certificate.
package enroll

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/twoway/twoway/authority"
	"github.com/twoway/twoway/pki"
)

// ALPN is the TLS application protocol of enrollment connections.
const ALPN = "twoway-enroll/1"

// MaxMessage bounds a request and a reply; a request holds a token and
// one CSR, a reply a few certificates.
const MaxMessage = 64 << 10

// DefaultTimeout bounds a whole exchange on the gateway's side, so that a
// laptop that sends nothing does not hold a connection.
const DefaultTimeout = 30 * time.Second

// ErrRefused means the gateway refused the enrollment; the error also
// matches the authority sentinel the gateway named, when it named one
// (authority.ErrTokenUsed, ErrTokenExpired, ErrTokenUnknown,
// ErrTokenRevoked, ErrBadCSR).
var ErrRefused = errors.New("gateway refused enrollment")

// refusals are the reasons a gateway tells the laptop by name. Anything
// else (a CA that cannot issue, a full disk) is the gateway's business and
// is logged there, not sent.
var refusals = []error{
	authority.ErrTokenUnknown,
	authority.ErrTokenUsed,
	authority.ErrTokenExpired,
	authority.ErrTokenRevoked,
	authority.ErrBadCSR,
}

// errInternal is what the laptop is told when enrollment failed for a
// reason of the gateway's.
const errInternal = "enrollment failed on the gateway; ask its administrator to look at its log"

type request struct {
	Token string `json:"token"`
	CSR   string `json:"csr"`
}

type reply struct {
	OK    bool   `json:"ok,omitempty"`
	Chain string `json:"chain,omitempty"`
	Error string `json:"error,omitempty"`
}

// Authority is what a Handler needs of a CA: *authority.CA implements it.
// Enroll must be safe for concurrent use.
type Authority interface {
	Enroll(token string, csr *x509.CertificateRequest, now time.Time) (*authority.Issued, authority.TokenRecord, error)
}

// Handler serves enrollments on the gateway's side. Its fields are read
// only; Serve is safe for concurrent use.
type Handler struct {
	ca      Authority
	log     *slog.Logger
	timeout time.Duration
}

// NewHandler returns a handler that enrolls with ca and logs to logger
// (nil discards).
func NewHandler(ca Authority, logger *slog.Logger) *Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Handler{ca: ca, log: logger, timeout: DefaultTimeout}
}

// Serve runs one enrollment on conn, whose TLS handshake (if any) is done,
// within DefaultTimeout. remote names the laptop in logs. Each refusal is
// logged with its reason and the token's ID, never the token. Serve does
// not close conn. It reports whether the laptop enrolled.
func (h *Handler) Serve(conn net.Conn, remote string) bool {
	log := h.log.With("remote", remote)
	_ = conn.SetDeadline(time.Now().Add(h.timeout))
	var req request
	if err := json.NewDecoder(io.LimitReader(conn, MaxMessage)).Decode(&req); err != nil {
		log.Warn("enrollment refused", "reason", fmt.Sprintf("read request: %v (at most %d bytes of JSON)", err, MaxMessage))
		writeReply(conn, reply{Error: "malformed or oversized enrollment request"})
		return false
	}
	iss, rec, err := h.enroll(req)
	if rec.ID != "" {
		log = log.With("token", rec.ID, "name", rec.Name)
	}
	if err != nil {
		log.Warn("enrollment refused", "reason", err)
		writeReply(conn, reply{Error: refusal(err)})
		return false
	}
	chain := authority.EncodeCertificatesPEM(append([]*x509.Certificate{iss.Cert}, iss.Chain...)...)
	if err := writeReply(conn, reply{OK: true, Chain: string(chain)}); err != nil {
		// The token is burnt and the certificate issued: the laptop
		// needs a new token, and the log says which certificate to
		// revoke if that matters.
		log.Warn("enrolled, but the reply was not delivered", "serial", iss.Cert.SerialNumber.Text(16), "err", err)
		return true
	}
	log.Info("enrolled", "serial", iss.Cert.SerialNumber.Text(16), "groups", iss.Cert.Subject.OrganizationalUnit, "not_after", iss.Cert.NotAfter)
	return true
}

func (h *Handler) enroll(req request) (*authority.Issued, authority.TokenRecord, error) {
	now := time.Now()
	csr, err := authority.ParseCSR([]byte(req.CSR))
	if err != nil {
		// The token is burnt even for what is not a request at all,
		// as for any other failed enrollment; a refusal of the token
		// itself says more than the request's flaw.
		_, rec, terr := h.ca.Enroll(req.Token, nil, now)
		if terr != nil && !errors.Is(terr, authority.ErrBadCSR) {
			return nil, rec, terr
		}
		return nil, rec, err
	}
	return h.ca.Enroll(req.Token, csr, now)
}

// refusal is the text the laptop is told for err: the sentinel's, and for
// a bad request its reason too, which names nothing of the gateway's.
func refusal(err error) string {
	for _, s := range refusals {
		if !errors.Is(err, s) {
			continue
		}
		if s == authority.ErrBadCSR {
			if msg := err.Error(); !strings.HasPrefix(msg, s.Error()) {
				return s.Error() + ": " + msg
			}
			return err.Error()
		}
		return s.Error()
	}
	return errInternal
}

func writeReply(w io.Writer, r reply) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// Enroll asks the gateway at the other end of conn to certify csr (PEM or
// DER) with token, and returns the certificate followed by its chain.
// conn must have authenticated the gateway (a TLS connection verified
// against the server CA, negotiated with ALPN). ctx bounds the exchange.
// A refusal matches ErrRefused and, when the gateway named it, the
// authority sentinel. Enroll does not close conn.
func Enroll(ctx context.Context, conn net.Conn, token string, csr []byte) ([]*x509.Certificate, error) {
	req, err := authority.ParseCSR(csr)
	if err != nil {
		return nil, err
	}
	if d, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(d)
	}
	// Cancelling ctx unblocks the exchange through the deadline.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	csrPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: req.Raw})
	b, err := json.Marshal(request{Token: token, CSR: string(csrPEM)})
	if err != nil {
		return nil, err
	}
	if len(b) > MaxMessage {
		return nil, fmt.Errorf("enrollment request of %d bytes exceeds %d", len(b), MaxMessage)
	}
	if _, err := conn.Write(b); err != nil {
		return nil, ctxErr(ctx, fmt.Errorf("send enrollment request: %w", err))
	}
	var rep reply
	if err := json.NewDecoder(io.LimitReader(conn, MaxMessage)).Decode(&rep); err != nil {
		return nil, ctxErr(ctx, fmt.Errorf("read enrollment reply: %w", err))
	}
	if !rep.OK {
		return nil, refused(rep.Error)
	}
	certs, err := pki.ParseCertificatesPEM([]byte(rep.Chain))
	if err != nil {
		return nil, fmt.Errorf("enrollment reply: %w", err)
	}
	if len(certs) == 0 {
		return nil, errors.New("enrollment reply holds no certificate")
	}
	if !bytes.Equal(certs[0].RawSubjectPublicKeyInfo, req.RawSubjectPublicKeyInfo) {
		return nil, errors.New("enrollment reply: the certificate is not for the requested key")
	}
	return certs, nil
}

// ctxErr blames ctx for err when ctx ended the exchange. The connection's
// deadline is ctx's, so it may fire a moment before ctx is done.
func ctxErr(ctx context.Context, err error) error {
	if _, ok := ctx.Deadline(); ok && errors.Is(err, os.ErrDeadlineExceeded) {
		<-ctx.Done()
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", ctx.Err(), err)
	}
	return err
}

// refusedError is a refusal the gateway explained.
type refusedError struct {
	reason string
	known  error // authority sentinel named by reason, or nil
}

func (e *refusedError) Error() string { return ErrRefused.Error() + ": " + e.reason }

func (e *refusedError) Unwrap() []error {
	if e.known == nil {
		return []error{ErrRefused}
	}
	return []error{ErrRefused, e.known}
}

func refused(reason string) error {
	if reason == "" {
		reason = "no reason given"
	}
	e := &refusedError{reason: reason}
	for _, s := range refusals {
		if reason == s.Error() || strings.HasPrefix(reason, s.Error()+": ") {
			e.known = s
		}
	}
	return e
}
