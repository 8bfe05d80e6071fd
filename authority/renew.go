package authority

import (
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Errors of Renew that callers branch on (besides ErrNotIssued and
// ErrBadCSR).
var (
	ErrRevoked  = errors.New("certificate revoked")
	ErrNotValid = errors.New("certificate not valid now")
)

// Renew certifies the key of csr for the holder of cur, a client
// certificate this CA issued: the new certificate carries cur's name,
// e-mail addresses and groups, never anything the request asks for, and
// lives as long as cur did (NotAfter - NotBefore), or maxLifetime if that
// is shorter and not 0. It is recorded in the CA's database like any
// other.
//
// Refused: a certificate this CA did not sign or has no record of
// (ErrNotIssued), one revoked in its database (ErrRevoked; checked under
// the database lock, so a revocation by `twoway pki revoke` in another
// process counts at once), one outside its validity at now (ErrNotValid),
// and a request whose signature does not verify or whose key is weak
// (ErrBadCSR, as for enrollment). The caller is expected to have verified
// the certificate as a peer (chain, CRLs) and its admission by policy;
// this is the CA's own check, on its own records.
func (ca *CA) Renew(cur *x509.Certificate, csr *x509.CertificateRequest, now time.Time, maxLifetime time.Duration) (*Issued, error) {
	if cur == nil {
		return nil, fmt.Errorf("%w: no certificate", ErrNotIssued)
	}
	if err := cur.CheckSignatureFrom(ca.Cert); err != nil {
		return nil, errorf(ErrNotIssued, "certificate %s of %q was not issued by CA %q", cur.SerialNumber.Text(16), cur.Subject.CommonName, ca.Name())
	}
	if now.Before(cur.NotBefore) || now.After(cur.NotAfter) {
		return nil, errorf(ErrNotValid, "certificate %s of %q is valid from %s to %s only", cur.SerialNumber.Text(16), cur.Subject.CommonName,
			cur.NotBefore.UTC().Format(time.RFC3339), cur.NotAfter.UTC().Format(time.RFC3339))
	}
	if !slices.Contains(cur.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		return nil, errorf(ErrNotIssued, "certificate %s of %q is not a client certificate", cur.SerialNumber.Text(16), cur.Subject.CommonName)
	}
	if err := checkCSR(csr); err != nil {
		return nil, err
	}
	s, err := newLeafSpec(KindClient, cur.Subject.CommonName, nil, nil, cur.EmailAddresses, cur.Subject.OrganizationalUnit)
	if err != nil {
		return nil, err
	}
	if ca.IsRoot() {
		return nil, errorf(ErrRootIssue, "CA %q (%s) is a root CA and issues no client certificates", ca.Name(), ca.Dir)
	}
	if err := ca.checkUsable(now); err != nil {
		return nil, err
	}
	lifetime := cur.NotAfter.Sub(cur.NotBefore)
	if maxLifetime > 0 && lifetime > maxLifetime {
		lifetime = maxLifetime
	}
	// The same shape as what issue makes: valid from a little before now
	// (clock skew), for the whole lifetime from there. A certificate of
	// minutes is backdated by a tenth of its lifetime at most, or it
	// would be born half spent.
	skew := min(clockSkew, lifetime/10)
	start := now.UTC().Truncate(time.Second)
	notBefore, notAfter, err := ca.validity(start, start.Add(lifetime-skew), fmt.Sprintf("renewed certificate of %q", s.name))
	if err != nil {
		return nil, err
	}
	if b := start.Add(-skew); notBefore.Before(b) {
		notBefore = b // validity backdated by all of clockSkew
	}
	var cert *x509.Certificate
	// The record is checked and the new certificate added in one update,
	// under the database lock: a revocation cannot slip in between.
	err = ca.update(func(db *DB) error {
		i := db.Find(cur.SerialNumber)
		if i < 0 {
			return errorf(ErrNotIssued, "certificate %s of %q is not in the database of CA %q", cur.SerialNumber.Text(16), cur.Subject.CommonName, ca.Name())
		}
		if r := db.Certificates[i]; r.Revoked() {
			return errorf(ErrRevoked, "certificate %s of %q was revoked on %s (%s)", r.Serial, cur.Subject.CommonName, r.RevokedAt.UTC().Format(time.RFC3339), r.Reason)
		}
		serial, err := newSerial(db)
		if err != nil {
			return err
		}
		tmpl, err := s.template(ca, serial, csr.PublicKey, notBefore, notAfter)
		if err != nil {
			return err
		}
		if cert, err = ca.sign(tmpl, csr.PublicKey, x509.ExtKeyUsageClientAuth); err != nil {
			return err
		}
		db.Certificates = append(db.Certificates, newRecord(cert, KindClient))
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &Issued{Cert: cert, Chain: ca.chain()}, nil
}

// checkCSR checks that csr proves possession of its key and that the key
// is strong enough: what enrollment and renewal both ask of a request.
func checkCSR(csr *x509.CertificateRequest) error {
	if csr == nil {
		return fmt.Errorf("%w: no request", ErrBadCSR)
	}
	if err := csr.CheckSignature(); err != nil {
		return errorf(ErrBadCSR, "certificate request signature does not verify (%v)", err)
	}
	return checkPublicKey(csr.PublicKey)
}
