package pki

import (
	"bytes"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
)

// Reasons a CRL is refused. twoway treats every CRL it loads as the
// complete list of its issuer's revocations, so a CRL that is only part of
// that list, or older than the one in use, must not replace it.
var (
	// ErrDeltaCRL: a delta CRL lists only the revocations since a base
	// CRL; alone it would un-revoke everything the base listed.
	ErrDeltaCRL = errors.New("delta CRL (deltaCRLIndicator) refused: load the issuer's full CRL")
	// ErrScopedCRL: an Issuing Distribution Point that narrows the CRL
	// to some certificates, some reasons or another issuer's
	// certificates.
	ErrScopedCRL = errors.New("scoped CRL (issuing distribution point) refused: load a CRL that covers every certificate of its issuer")
	// ErrCRLCritical: RFC 5280 forbids using a CRL with a critical
	// extension the reader does not understand.
	ErrCRLCritical = errors.New("CRL has an unknown critical extension")
	// ErrCRLRollback: a reload would replace a CRL with one its issuer
	// published earlier, bringing back certificates revoked since.
	ErrCRLRollback = errors.New("CRL number is lower than that of the CRL in use")
)

var (
	oidDeltaCRLIndicator = asn1.ObjectIdentifier{2, 5, 29, 27}
	oidIssuingDistPoint  = asn1.ObjectIdentifier{2, 5, 29, 28}
	// Extensions crypto/x509 parses itself, critical or not.
	oidAuthorityKeyID = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidCRLNumber      = asn1.ObjectIdentifier{2, 5, 29, 20}
)

// CheckCRLScope refuses CRLs that cannot stand for the complete revocation
// list of their issuer: delta CRLs, CRLs with an Issuing Distribution Point
// other than an empty (full-scope) one, which covers indirect CRLs, CRLs of
// user or CA certificates only, of some reasons only, or of one
// distribution point only, and CRLs with an unknown critical extension.
func CheckCRLScope(crl *x509.RevocationList) error {
	for _, ext := range crl.Extensions {
		switch {
		case ext.Id.Equal(oidDeltaCRLIndicator):
			return ErrDeltaCRL
		case ext.Id.Equal(oidIssuingDistPoint):
			if err := checkIDP(ext.Value); err != nil {
				return err
			}
		case ext.Id.Equal(oidAuthorityKeyID), ext.Id.Equal(oidCRLNumber):
		case ext.Critical:
			return fmt.Errorf("%w: %s", ErrCRLCritical, ext.Id)
		}
	}
	return nil
}

// checkIDP accepts an IssuingDistributionPoint (RFC 5280 5.2.5) only when
// it narrows nothing: every field absent, or a boolean one explicitly
// FALSE (which DER forbids, but which narrows nothing either).
//
//	IssuingDistributionPoint ::= SEQUENCE {
//	  distributionPoint          [0] DistributionPointName OPTIONAL,
//	  onlyContainsUserCerts      [1] BOOLEAN DEFAULT FALSE,
//	  onlyContainsCACerts        [2] BOOLEAN DEFAULT FALSE,
//	  onlySomeReasons            [3] ReasonFlags OPTIONAL,
//	  indirectCRL                [4] BOOLEAN DEFAULT FALSE,
//	  onlyContainsAttributeCerts [5] BOOLEAN DEFAULT FALSE }
func checkIDP(der []byte) error {
	var seq asn1.RawValue
	rest, err := asn1.Unmarshal(der, &seq)
	if err != nil || len(rest) > 0 || seq.Class != asn1.ClassUniversal || seq.Tag != asn1.TagSequence {
		return fmt.Errorf("%w: malformed issuing distribution point", ErrScopedCRL)
	}
	fields := map[int]string{0: "distributionPoint", 1: "onlyContainsUserCerts", 2: "onlyContainsCACerts",
		3: "onlySomeReasons", 4: "indirectCRL", 5: "onlyContainsAttributeCerts"}
	for body := seq.Bytes; len(body) > 0; {
		var f asn1.RawValue
		if body, err = asn1.Unmarshal(body, &f); err != nil || f.Class != asn1.ClassContextSpecific {
			return fmt.Errorf("%w: malformed issuing distribution point", ErrScopedCRL)
		}
		name, known := fields[f.Tag]
		switch {
		case !known:
			return fmt.Errorf("%w: unknown issuing distribution point field [%d]", ErrScopedCRL, f.Tag)
		case f.Tag == 0 || f.Tag == 3:
			return fmt.Errorf("%w: it sets %s", ErrScopedCRL, name)
		case !bytes.Equal(f.Bytes, []byte{0}):
			return fmt.Errorf("%w: it sets %s", ErrScopedCRL, name)
		}
	}
	return nil
}

// crlIssuerKey identifies the CA a CRL's numbers belong to: its name and,
// when the CRL says, its key, so a re-keyed CA under the same name starts
// a sequence of its own.
func crlIssuerKey(crl *x509.RevocationList) string {
	return string(crl.RawIssuer) + "\x00" + string(crl.AuthorityKeyId)
}

// checkCRLNumbers refuses next when one of its CRLs has a lower CRL number
// (or none) than the highest number prev holds for the same issuer. An
// issuer prev has no CRL for, or a CRL left out of the configuration, is
// not a rollback.
func checkCRLNumbers(prev, next []*x509.RevocationList) error {
	highest := map[string]*big.Int{}
	for _, c := range prev {
		k := crlIssuerKey(c)
		if c.Number != nil && (highest[k] == nil || c.Number.Cmp(highest[k]) > 0) {
			highest[k] = c.Number
		}
	}
	for _, c := range next {
		h := highest[crlIssuerKey(c)]
		if h == nil || c.Number != nil && c.Number.Cmp(h) >= 0 {
			continue
		}
		return fmt.Errorf("%w: the CRL of %q has number %s, the one in use %s; keeping the one in use",
			ErrCRLRollback, c.Issuer.String(), crlNumber(c), h)
	}
	return nil
}

// UnmatchedCRLs returns the CRLs whose issuer is none of the CAs in
// bundle. Such a CRL is used only when a peer presents its issuer as an
// intermediate; more often it is the wrong file.
func UnmatchedCRLs(bundle []*x509.Certificate, crls []*x509.RevocationList) []*x509.RevocationList {
	var out []*x509.RevocationList
	for _, crl := range crls {
		matched := false
		for _, ca := range bundle {
			if bytes.Equal(ca.RawSubject, crl.RawIssuer) {
				matched = true
				break
			}
		}
		if !matched {
			out = append(out, crl)
		}
	}
	return out
}
