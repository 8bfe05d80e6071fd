package authority

import (
	"crypto/x509"
	"slices"
	"strings"
	"time"
)

// Enroll redeems an enrollment token and certifies the key of csr with
// the identity and groups bound to the token, for the token's days (or
// DefaultClientDays). The token is burnt first, so that whatever fails
// afterwards (a bad request, a CA that cannot issue) needs a new token:
// a stolen token cannot be tried again with a better request.
//
// The request proves possession of its key and names the client; it
// need not name anything, but a common name or groups (Subject OU) that
// differ from the token's are refused with ErrBadCSR, so that a laptop
// asking for more than it was given learns so. Other requested names and
// extensions are ignored. The certificate is recorded in the CA's
// database as SignCSR records it; nothing is written to a file.
//
// The returned record is the token's (also on most refusals after the
// token was found), for the caller's log line; it never holds the token.
func (ca *CA) Enroll(token string, csr *x509.CertificateRequest, now time.Time) (*Issued, TokenRecord, error) {
	rec, err := ca.RedeemToken(token, now)
	if err != nil {
		return nil, rec, err
	}
	s, err := enrollSpec(rec, csr)
	if err != nil {
		return nil, rec, err
	}
	cert, err := ca.issue(s, csr.PublicKey, rec.Days)
	if err != nil {
		return nil, rec, err
	}
	chain := ca.chain()
	if err := ca.record(newRecord(cert, s.kind)); err != nil {
		return nil, rec, err
	}
	return &Issued{Cert: cert, Chain: chain}, rec, nil
}

// enrollSpec checks csr against the binding of rec and returns what to
// certify: the token's name and groups, never the request's.
func enrollSpec(rec TokenRecord, csr *x509.CertificateRequest) (*leafSpec, error) {
	if err := checkCSR(csr); err != nil {
		return nil, err
	}
	if cn := csr.Subject.CommonName; cn != "" && cn != rec.Name {
		return nil, errorf(ErrBadCSR, "certificate request asks for name %q, but the enrollment token is for %q", cn, rec.Name)
	}
	if ous := csr.Subject.OrganizationalUnit; len(ous) > 0 && !sameSet(ous, rec.Groups) {
		return nil, errorf(ErrBadCSR, "certificate request asks for groups [%s], but the enrollment token is for [%s]",
			strings.Join(ous, ", "), strings.Join(rec.Groups, ", "))
	}
	return newLeafSpec(KindClient, rec.Name, nil, nil, nil, rec.Groups)
}

// sameSet says whether a and b hold the same strings, ignoring order and
// repetition.
func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}
