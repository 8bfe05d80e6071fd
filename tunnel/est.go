package tunnel

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/smallstep/pkcs7"
)

// EST simple re-enrollment (RFC 7030 §4.2.2) over the gateway's mutual
// TLS, for standard EST clients: a client that offers ALPN ESTALPN (and
// not ALPN) and presents a certificate the gateway would admit to a
// session gets one HTTP/1.1 request on that connection:
//
//	POST /.well-known/est/simplereenroll
//	     body: base64 PKCS#10 request (application/pkcs10)
//	200: application/pkcs7-mime; smime-type=certs-only, base64 of a
//	     degenerate PKCS#7 SignedData holding the new certificate only
//	403: refused (text/plain reason); 400: malformed; 404: other paths;
//	500: the gateway's failure
//
// The renewal itself is Server.renew, the same as over a session. A
// client offering no ALPN at all is still refused as before: every twoway
// client offers ALPN, and a gateway must not mistake one that does not
// for an EST client. /cacerts and the other EST operations are not
// served: enrollment is twoway enroll's job.

// ESTALPN is the application protocol of EST connections.
const ESTALPN = "http/1.1"

// ESTPath is the path of simple re-enrollment.
const ESTPath = "/.well-known/est/simplereenroll"

// maxESTBody bounds an EST request body: a base64 certificate request.
const maxESTBody = 64 << 10

// serveEST serves one EST request on tc, whose client hs verified, within
// EnrollTimeout, then closes tc.
func (s *Server) serveEST(tc *tls.Conn, hs *serverHandshake, remote net.Addr) {
	defer tc.Close()
	_ = tc.SetDeadline(time.Now().Add(EnrollTimeout))
	stop := context.AfterFunc(s.ctx, func() { _ = tc.NetConn().Close() })
	defer stop()
	logger := s.log.With("peer", hs.identity, "remote", addrString(remote))
	status, body, ctype := s.estRequest(tc, hs, logger)
	res := &http.Response{
		StatusCode: status, ProtoMajor: 1, ProtoMinor: 1, Close: true,
		Header:        http.Header{"Content-Type": {ctype}},
		ContentLength: int64(len(body)), Body: io.NopCloser(bytes.NewReader(body)),
	}
	if status == http.StatusOK {
		res.Header.Set("Content-Transfer-Encoding", "base64")
	}
	if err := res.Write(tc); err != nil {
		logger.Info("EST reply not delivered", "err", err)
	}
}

// estRequest reads and answers one request: status, body, content type.
func (s *Server) estRequest(tc *tls.Conn, hs *serverHandshake, logger *slog.Logger) (int, []byte, string) {
	plain := func(status int, msg string) (int, []byte, string) {
		return status, []byte(msg + "\n"), "text/plain; charset=utf-8"
	}
	req, err := http.ReadRequest(bufio.NewReaderSize(tc, 4096))
	if err != nil {
		logger.Info("bad EST request", "err", err)
		return plain(http.StatusBadRequest, "malformed HTTP request")
	}
	if req.URL.Path != ESTPath {
		return plain(http.StatusNotFound, "only "+ESTPath+" is served here")
	}
	if req.Method != http.MethodPost {
		return plain(http.StatusMethodNotAllowed, "use POST")
	}
	if strings.EqualFold(req.Header.Get("Expect"), "100-continue") {
		// curl asks before sending a body over 1 KiB (an RSA request).
		_, _ = io.WriteString(tc, "HTTP/1.1 100 Continue\r\n\r\n")
	}
	raw, err := io.ReadAll(io.LimitReader(req.Body, maxESTBody+1))
	if err != nil || len(raw) > maxESTBody {
		return plain(http.StatusBadRequest, "unreadable or oversized body (at most "+strconv.Itoa(maxESTBody)+" bytes)")
	}
	der, err := decodeBase64Body(raw)
	if err != nil {
		return plain(http.StatusBadRequest, "body is not a base64 PKCS#10 request: "+err.Error())
	}
	chain, err := s.renew("est", hs.presented, der, logger)
	switch {
	case errors.Is(err, ErrRenewRefused):
		return plain(http.StatusForbidden, err.Error())
	case err != nil:
		return plain(http.StatusInternalServerError, err.Error())
	}
	p7, err := pkcs7.DegenerateCertificate(chain[0].Raw)
	if err != nil {
		return plain(http.StatusInternalServerError, fmt.Sprintf("encode PKCS#7: %v", err))
	}
	return http.StatusOK, encodeBase64Lines(p7), "application/pkcs7-mime; smime-type=certs-only"
}

// decodeBase64Body decodes an EST body: base64 with line breaks anywhere.
func decodeBase64Body(b []byte) ([]byte, error) {
	clean := bytes.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r == ' ' || r == '\t' {
			return -1
		}
		return r
	}, b)
	return base64.StdEncoding.DecodeString(string(clean))
}

// encodeBase64Lines encodes b as base64 in lines of 64 characters, as
// openssl and base64 -d read (RFC 8951: EST clients take any line breaks).
func encodeBase64Lines(b []byte) []byte {
	enc := base64.StdEncoding.EncodeToString(b)
	var out bytes.Buffer
	for len(enc) > 64 {
		out.WriteString(enc[:64])
		out.WriteByte('\n')
		enc = enc[64:]
	}
	out.WriteString(enc)
	out.WriteByte('\n')
	return out.Bytes()
}
