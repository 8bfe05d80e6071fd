package pki

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"sync"
	"time"
)

// Usage is the role a verified certificate must be allowed to play.
type Usage int

// Usages. A client certificate must carry the clientAuth extended key usage
// and a server certificate serverAuth, so one can never stand in for the
// other.
const (
	UsageClient Usage = iota + 1
	UsageServer
)

func (u Usage) String() string {
	switch u {
	case UsageClient:
		return "client"
	case UsageServer:
		return "server"
	}
	return fmt.Sprintf("usage(%d)", int(u))
}

func (u Usage) eku() x509.ExtKeyUsage {
	if u == UsageServer {
		return x509.ExtKeyUsageServerAuth
	}
	return x509.ExtKeyUsageClientAuth
}

// Reasons a peer certificate is refused. A *VerifyError wraps exactly one.
var (
	ErrNoCertificate = errors.New("no certificate presented")
	ErrUntrusted     = errors.New("not issued by a trusted CA")
	ErrExpired       = errors.New("certificate expired")
	ErrNotYetValid   = errors.New("certificate not yet valid")
	ErrWrongUsage    = errors.New("certificate not valid for this usage")
	ErrRevoked       = errors.New("certificate revoked")
	ErrStaleCRL      = errors.New("revocation list is stale")
	ErrNameMismatch  = errors.New("name mismatch")
	ErrPinMismatch   = errors.New("public key pin mismatch")
)

// VerifyError says which check refused a certificate and whose it was, so a
// log line can name both.
type VerifyError struct {
	Check   string // "chain", "validity", "usage", "revocation", "name", "pin"
	Subject string // the certificate that failed (leaf or CA)
	Err     error  // one of the sentinel errors above
	Detail  string // human-readable specifics
}

func (e *VerifyError) Error() string {
	s := e.Check + ": " + e.Err.Error()
	if e.Subject != "" {
		s += fmt.Sprintf(" (%s)", e.Subject)
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

func (e *VerifyError) Unwrap() error { return e.Err }

// VerifyOptions parameterise one verification.
type VerifyOptions struct {
	Usage Usage
	// ServerName, for UsageServer, must match a DNS or IP SAN of the leaf.
	ServerName string
	// Pins, if any, are SPKI pins (see SPKIPin); one certificate of the
	// verified chain must match one of them.
	Pins []string
	// Now is the time to verify at; zero means time.Now().
	Now time.Time
	// Intermediates are extra CA certificates to build the chain with, in
	// addition to those presented after the leaf.
	Intermediates []*x509.Certificate
}

// Verifier checks peer chains the way the tunnel does: chain to the CA
// bundle, the bundle's issuing-CA rule, validity, extended key usage, CRLs,
// server name and pins. A Verifier is immutable and safe for concurrent use.
type Verifier struct {
	cas           []*x509.Certificate
	roots         *x509.CertPool
	intermediates []*x509.Certificate // bundle CAs that are not self-signed
	// issuing holds the bundle's non-root CAs: when there are any, a chain
	// must pass through one. A client-CA bundle (client CA + root) thus
	// refuses certificates from the server CA under the same root.
	issuing [][]byte
	pool    *x509.CertPool
	crls    []*crlIndex
	// rejectStale refuses certificates covered by a CRL whose next
	// update has passed (see StoreConfig.RejectStaleCRLs).
	rejectStale bool
}

type crlIndex struct {
	crl     *x509.RevocationList
	revoked map[string]x509.RevocationListEntry // by serial bytes
	mu      sync.Mutex
	goodSig map[string]bool // issuer raw cert -> signature verified
}

// NewVerifier builds a verifier trusting the CA certificates in bundle and
// honouring crls. Every bundle entry must be a CA certificate. A CRL whose
// issuer is a bundle CA must be signed by it; a CRL from a CA outside the
// bundle (a sub-CA the peer presents) is checked against that CA at use.
// Delta and scoped CRLs are refused (see CheckCRLScope).
func NewVerifier(bundle []*x509.Certificate, crls []*x509.RevocationList) (*Verifier, error) {
	if len(bundle) == 0 {
		return nil, errors.New("CA bundle is empty")
	}
	v := &Verifier{roots: x509.NewCertPool(), pool: x509.NewCertPool()}
	var selfSigned []*x509.Certificate
	for _, c := range bundle {
		if !c.BasicConstraintsValid || !c.IsCA {
			return nil, fmt.Errorf("CA bundle entry %q is not a CA certificate", c.Subject.String())
		}
		v.cas = append(v.cas, c)
		v.pool.AddCert(c)
		if IsSelfSigned(c) {
			selfSigned = append(selfSigned, c)
			v.roots.AddCert(c)
		} else {
			v.intermediates = append(v.intermediates, c)
			v.issuing = append(v.issuing, c.Raw)
		}
	}
	if len(selfSigned) == 0 {
		// A bundle of intermediates only: trust them as anchors, which is
		// what the issuing-CA rule would demand anyway.
		for _, c := range v.intermediates {
			v.roots.AddCert(c)
		}
	}
	for i, crl := range crls {
		if err := CheckCRLScope(crl); err != nil {
			return nil, fmt.Errorf("CRL %d (issuer %q): %w", i+1, crl.Issuer.String(), err)
		}
		idx := &crlIndex{crl: crl, revoked: make(map[string]x509.RevocationListEntry, len(crl.RevokedCertificateEntries)), goodSig: map[string]bool{}}
		for _, e := range crl.RevokedCertificateEntries {
			idx.revoked[string(e.SerialNumber.Bytes())] = e
		}
		for _, ca := range bundle {
			if !bytes.Equal(ca.RawSubject, crl.RawIssuer) {
				continue
			}
			if err := crl.CheckSignatureFrom(ca); err != nil {
				return nil, fmt.Errorf("CRL %d (issuer %q): signature does not verify against the CA in the bundle: %w", i+1, crl.Issuer.String(), err)
			}
			idx.goodSig[string(ca.Raw)] = true
		}
		v.crls = append(v.crls, idx)
	}
	return v, nil
}

// IsSelfSigned reports whether c is a root: issued by itself, and signed by
// its own key (a matching name alone is not enough).
func IsSelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil
}

// RootsOnly reports whether bundle holds nothing but self-signed roots: a
// Verifier of such a bundle has no issuing CA to require, so every CA
// under those roots can issue peer certificates.
func RootsOnly(bundle []*x509.Certificate) bool {
	for _, c := range bundle {
		if !IsSelfSigned(c) {
			return false
		}
	}
	return len(bundle) > 0
}

// CAs returns the bundle's certificates.
func (v *Verifier) CAs() []*x509.Certificate { return slices.Clone(v.cas) }

// Pool returns the bundle as a pool, for the CA names a server sends in its
// CertificateRequest.
func (v *Verifier) Pool() *x509.CertPool { return v.pool }

// CRLs returns the revocation lists in use.
func (v *Verifier) CRLs() []*x509.RevocationList {
	out := make([]*x509.RevocationList, len(v.crls))
	for i, c := range v.crls {
		out[i] = c.crl
	}
	return out
}

// Verify checks a peer chain (leaf first, then any intermediates it
// presented) and returns the leaf's identity.
func (v *Verifier) Verify(chain []*x509.Certificate, opts VerifyOptions) (*Identity, error) {
	if len(chain) == 0 || chain[0] == nil {
		return nil, &VerifyError{Check: "chain", Err: ErrNoCertificate}
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	leaf := chain[0]
	subj := describe(leaf)

	if now.Before(leaf.NotBefore) {
		return nil, &VerifyError{Check: "validity", Subject: subj, Err: ErrNotYetValid, Detail: "valid from " + leaf.NotBefore.UTC().Format(time.RFC3339)}
	}
	if now.After(leaf.NotAfter) {
		return nil, &VerifyError{Check: "validity", Subject: subj, Err: ErrExpired, Detail: "expired " + leaf.NotAfter.UTC().Format(time.RFC3339)}
	}
	if opts.Usage != UsageClient && opts.Usage != UsageServer {
		return nil, fmt.Errorf("verify: usage must be client or server")
	}
	if !hasEKU(leaf, opts.Usage.eku()) {
		return nil, &VerifyError{Check: "usage", Subject: subj, Err: ErrWrongUsage, Detail: fmt.Sprintf("a %s certificate needs the %s extended key usage; this one has %s", opts.Usage, ExtKeyUsageName(opts.Usage.eku()), ekuList(leaf))}
	}

	inter := x509.NewCertPool()
	for _, c := range v.intermediates {
		inter.AddCert(c)
	}
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	for _, c := range opts.Intermediates {
		inter.AddCert(c)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:         v.roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{opts.Usage.eku()},
	})
	if err != nil {
		return nil, v.chainError(leaf, err, now)
	}

	var firstErr error
	for _, ch := range chains {
		if !v.passesIssuing(ch) {
			if firstErr == nil {
				firstErr = &VerifyError{Check: "chain", Subject: subj, Err: ErrUntrusted, Detail: fmt.Sprintf("issued by %q, which is not one of the accepted issuing CAs (%s)", leaf.Issuer.CommonName, v.issuingNames())}
			}
			continue
		}
		if err := v.checkRevocation(ch, now); err != nil {
			if firstErr == nil || !errors.Is(firstErr, ErrRevoked) {
				firstErr = err
			}
			continue
		}
		if opts.ServerName != "" {
			if err := leaf.VerifyHostname(opts.ServerName); err != nil {
				return nil, &VerifyError{Check: "name", Subject: subj, Err: ErrNameMismatch, Detail: fmt.Sprintf("certificate is not valid for %q (names: %s)", opts.ServerName, sanList(leaf))}
			}
		}
		if len(opts.Pins) > 0 && !matchesPin(ch, opts.Pins) {
			return nil, &VerifyError{Check: "pin", Subject: subj, Err: ErrPinMismatch, Detail: "leaf pin " + SPKIPin(leaf)}
		}
		id := IdentityFromCert(leaf)
		id.Chain = ch
		for _, c := range ch[1:] {
			id.CAs = append(id.CAs, CARef{Name: c.Subject.CommonName, Fingerprint: Fingerprint(c)})
		}
		if len(ch) > 1 {
			for _, c := range v.cas {
				if c.Equal(ch[1]) {
					id.IssuedByBundle = true
				}
			}
		}
		for _, c := range ch {
			if c.NotAfter.Before(id.ChainNotAfter) {
				id.ChainNotAfter = c.NotAfter
			}
		}
		return &id, nil
	}
	return nil, firstErr
}

func (v *Verifier) chainError(leaf *x509.Certificate, err error, now time.Time) error {
	subj := describe(leaf)
	var inv x509.CertificateInvalidError
	if errors.As(err, &inv) {
		who := subj
		if inv.Cert != nil {
			who = describe(inv.Cert)
		}
		switch inv.Reason {
		case x509.Expired:
			sentinel := ErrExpired
			if inv.Cert != nil && now.Before(inv.Cert.NotBefore) {
				sentinel = ErrNotYetValid
			}
			return &VerifyError{Check: "validity", Subject: who, Err: sentinel, Detail: "CA certificate in the chain: " + inv.Error()}
		case x509.IncompatibleUsage:
			return &VerifyError{Check: "usage", Subject: subj, Err: ErrWrongUsage, Detail: "a CA in the chain does not allow this usage"}
		case x509.CANotAuthorizedForThisName:
			return &VerifyError{Check: "chain", Subject: subj, Err: ErrUntrusted, Detail: "outside the issuing CA's name constraints: " + inv.Detail}
		}
		return &VerifyError{Check: "chain", Subject: who, Err: ErrUntrusted, Detail: inv.Error()}
	}
	var ua x509.UnknownAuthorityError
	if errors.As(err, &ua) {
		return &VerifyError{Check: "chain", Subject: subj, Err: ErrUntrusted, Detail: fmt.Sprintf("issuer %q is not in the CA bundle (%s)", leaf.Issuer.CommonName, v.issuingNames())}
	}
	return &VerifyError{Check: "chain", Subject: subj, Err: ErrUntrusted, Detail: err.Error()}
}

func (v *Verifier) passesIssuing(chain []*x509.Certificate) bool {
	if len(v.issuing) == 0 {
		return true
	}
	for _, c := range chain[1:] {
		for _, raw := range v.issuing {
			if bytes.Equal(c.Raw, raw) {
				return true
			}
		}
	}
	return false
}

func (v *Verifier) issuingNames() string {
	var names []string
	src := v.intermediates
	if len(src) == 0 {
		src = v.cas
	}
	for _, c := range src {
		names = append(names, fmt.Sprintf("%q", c.Subject.CommonName))
	}
	return "accepted: " + strings.Join(names, ", ")
}

// checkRevocation looks every certificate of the chain up in the CRLs of its
// issuer. A CRL counts only if its signature verifies against that issuer.
func (v *Verifier) checkRevocation(chain []*x509.Certificate, now time.Time) error {
	for i := 0; i+1 < len(chain); i++ {
		cert, issuer := chain[i], chain[i+1]
		for _, idx := range v.crls {
			if !bytes.Equal(idx.crl.RawIssuer, issuer.RawSubject) || !idx.signedBy(issuer) {
				continue
			}
			if e, ok := idx.revoked[string(cert.SerialNumber.Bytes())]; ok && sameSerial(e.SerialNumber, cert.SerialNumber) {
				detail := fmt.Sprintf("serial %s revoked %s by %q", cert.SerialNumber.Text(16), e.RevocationTime.UTC().Format(time.RFC3339), issuer.Subject.CommonName)
				if r := ReasonName(e.ReasonCode); r != "" {
					detail += ", reason " + r
				}
				return &VerifyError{Check: "revocation", Subject: describe(cert), Err: ErrRevoked, Detail: detail}
			}
			if v.rejectStale && CRLStale(idx.crl, now) {
				return &VerifyError{Check: "revocation", Subject: describe(cert), Err: ErrStaleCRL,
					Detail: fmt.Sprintf("the CRL of %q (number %s) was due to be replaced %s; stale CRLs are refused", issuer.Subject.CommonName, crlNumber(idx.crl), idx.crl.NextUpdate.UTC().Format(time.RFC3339))}
			}
		}
	}
	return nil
}

// CRLStale reports whether crl's next update is past at now: its issuer
// promised a newer list by then, so revocations made since may be missing.
// A CRL without a next update never goes stale.
func CRLStale(crl *x509.RevocationList, now time.Time) bool {
	return !crl.NextUpdate.IsZero() && now.After(crl.NextUpdate)
}

// crlNumber renders crl's number for messages ("-" when it has none).
func crlNumber(crl *x509.RevocationList) string {
	if crl.Number == nil {
		return "-"
	}
	return crl.Number.String()
}

func sameSerial(a, b *big.Int) bool { return a != nil && b != nil && a.Cmp(b) == 0 }

func (idx *crlIndex) signedBy(issuer *x509.Certificate) bool {
	idx.mu.Lock()
	defer idx.mu.Unlock()
	key := string(issuer.Raw)
	if ok, seen := idx.goodSig[key]; seen {
		return ok
	}
	ok := idx.crl.CheckSignatureFrom(issuer) == nil
	idx.goodSig[key] = ok
	return ok
}

// reasonNames are RFC 5280 CRLReason codes, as written on the command line.
var reasonNames = map[int]string{
	0:  "unspecified",
	1:  "keyCompromise",
	2:  "caCompromise",
	3:  "affiliationChanged",
	4:  "superseded",
	5:  "cessationOfOperation",
	6:  "certificateHold",
	8:  "removeFromCRL",
	9:  "privilegeWithdrawn",
	10: "aACompromise",
}

// ReasonName returns the RFC 5280 name of a CRL reason code, or "" for
// unspecified.
func ReasonName(code int) string {
	if code == 0 {
		return ""
	}
	if n, ok := reasonNames[code]; ok {
		return n
	}
	return fmt.Sprintf("reason(%d)", code)
}

func matchesPin(chain []*x509.Certificate, pins []string) bool {
	for _, c := range chain {
		p := SPKIPin(c)
		for _, want := range pins {
			if p == want {
				return true
			}
		}
	}
	return false
}

// hasEKU reports whether c names want among its extended key usages.
// anyExtendedKeyUsage alone does not count (RFC 5280 4.2.1.12 lets an
// application that needs a particular purpose refuse it): a leaf good for
// "any purpose" could be presented as a client and as a server alike.
func hasEKU(c *x509.Certificate, want x509.ExtKeyUsage) bool {
	return slices.Contains(c.ExtKeyUsage, want)
}

func ekuList(c *x509.Certificate) string {
	if len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 {
		return "none"
	}
	var names []string
	for _, u := range c.ExtKeyUsage {
		names = append(names, ExtKeyUsageName(u))
	}
	for _, oid := range c.UnknownExtKeyUsage {
		names = append(names, oid.String())
	}
	return strings.Join(names, ", ")
}

func sanList(c *x509.Certificate) string {
	var names []string
	names = append(names, c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

func describe(c *x509.Certificate) string {
	name := c.Subject.CommonName
	if name == "" {
		name = c.Subject.String()
	}
	return fmt.Sprintf("%q serial %s", name, c.SerialNumber.Text(16))
}

// extKeyUsageNames are the short names of extended key usages, as in
// RFC 5280 and openssl's configuration files, so that a refusal names the
// usage the way the CA's operator wrote it.
var extKeyUsageNames = map[x509.ExtKeyUsage]string{
	x509.ExtKeyUsageAny:                            "any",
	x509.ExtKeyUsageServerAuth:                     "serverAuth",
	x509.ExtKeyUsageClientAuth:                     "clientAuth",
	x509.ExtKeyUsageCodeSigning:                    "codeSigning",
	x509.ExtKeyUsageEmailProtection:                "emailProtection",
	x509.ExtKeyUsageIPSECEndSystem:                 "ipsecEndSystem",
	x509.ExtKeyUsageIPSECTunnel:                    "ipsecTunnel",
	x509.ExtKeyUsageIPSECUser:                      "ipsecUser",
	x509.ExtKeyUsageTimeStamping:                   "timeStamping",
	x509.ExtKeyUsageOCSPSigning:                    "OCSPSigning",
	x509.ExtKeyUsageMicrosoftServerGatedCrypto:     "msSGC",
	x509.ExtKeyUsageNetscapeServerGatedCrypto:      "nsSGC",
	x509.ExtKeyUsageMicrosoftCommercialCodeSigning: "msCodeCom",
	x509.ExtKeyUsageMicrosoftKernelCodeSigning:     "msKernelCodeSigning",
}

// ExtKeyUsageName is the short name of an extended key usage ("serverAuth",
// "clientAuth"), or "eku(N)" for one without a name here.
func ExtKeyUsageName(u x509.ExtKeyUsage) string {
	if n, ok := extKeyUsageNames[u]; ok {
		return n
	}
	return fmt.Sprintf("eku(%d)", int(u))
}
