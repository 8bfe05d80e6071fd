package authority

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"path/filepath"
	"strings"
	"time"

	"github.com/twoway/twoway/pki"
)

// DefaultCRLDays is how long a CRL is valid when not told otherwise: peers
// treat revocation as current for this long, so it bounds how late a CRL
// refresh may come.
const DefaultCRLDays = 7

// revocationReasons are the RFC 5280 CRLReason codes an operator may give,
// by the names RFC 5280 and openssl use.
var revocationReasons = []struct {
	name string
	code int
}{
	{"unspecified", 0},
	{"keyCompromise", 1},
	{"caCompromise", 2},
	{"affiliationChanged", 3},
	{"superseded", 4},
	{"cessationOfOperation", 5},
	{"certificateHold", 6},
}

// ParseReason maps a revocation reason name (case-insensitive; empty means
// unspecified) to its RFC 5280 code and canonical name.
func ParseReason(s string) (code int, name string, err error) {
	if s == "" {
		return 0, "unspecified", nil
	}
	var names []string
	for _, r := range revocationReasons {
		if strings.EqualFold(s, r.name) {
			return r.code, r.name, nil
		}
		names = append(names, r.name)
	}
	return 0, "", fmt.Errorf("%w %q (want one of %s)", ErrUnknownReason, s, strings.Join(names, ", "))
}

// Revoke marks the certificate with the given serial as revoked in the
// CA's database. It takes effect for peers with the next CRL. The serial
// must be one this CA issued and not yet revoked. No key is needed.
func (ca *CA) Revoke(serial *big.Int, reason string) (*Record, error) {
	_, name, err := ParseReason(reason)
	if err != nil {
		return nil, err
	}
	var out Record
	err = ca.update(func(db *DB) error {
		i := db.Find(serial)
		if i < 0 {
			return errorf(ErrNotIssued, "serial %s was not issued by CA %q (%s)", serial.Text(16), ca.Name(), ca.Dir)
		}
		r := &db.Certificates[i]
		if r.Revoked() {
			return errorf(ErrAlreadyRevoked, "serial %s (%s) was already revoked on %s", r.Serial, r.Subject, r.RevokedAt.Format(time.RFC3339))
		}
		at := time.Now().UTC().Truncate(time.Second)
		r.RevokedAt, r.Reason = &at, name
		out = *r
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// RevokeCert revokes cert, which must have been signed by this CA.
func (ca *CA) RevokeCert(cert *x509.Certificate, reason string) (*Record, error) {
	if err := cert.CheckSignatureFrom(ca.Cert); err != nil {
		return nil, errorf(ErrNotIssued, "certificate %q (serial %s) was not issued by CA %q (%s)",
			cert.Subject.CommonName, cert.SerialNumber.Text(16), ca.Name(), ca.Dir)
	}
	return ca.Revoke(cert.SerialNumber, reason)
}

// CRLOptions configure (*CA).CRL.
type CRLOptions struct {
	// Days until the CRL's next update; 0 means DefaultCRLDays.
	Days int
	// Out is the file written; default CA_DIR/crl.pem. A CRL is public and
	// meant to be refreshed, so an existing file is always replaced.
	Out string
	// Initial signs the CA's first CRL, before it has signed any, as
	// number 0 without recording it: peers can load a valid list at once,
	// and the first CRL made after a revocation is still number 1. It is
	// refused once the CA has signed a CRL (the number would go back). It
	// is meant for a CA just made: `twoway pki init` uses it once per CA.
	Initial bool
}

// CRL signs a new X.509 v2 CRL listing every certificate the CA revoked,
// with the next CRL number, and writes it as PEM. The number is saved in the
// database before the CRL is written, so numbers never repeat.
// It returns the CRL and the file written.
func (ca *CA) CRL(opts CRLOptions) (*x509.RevocationList, string, error) {
	days := opts.Days
	if days < 0 {
		return nil, "", fmt.Errorf("--days must be positive, not %d", days)
	}
	if days == 0 {
		days = DefaultCRLDays
	}
	out := opts.Out
	if out == "" {
		out = filepath.Join(ca.Dir, CRLFile)
	}
	now := time.Now().UTC().Truncate(time.Second)
	if err := ca.checkUsable(now); err != nil {
		return nil, "", err
	}
	key, err := ca.signer()
	if err != nil {
		return nil, "", err
	}
	var der []byte
	err = ca.update(func(db *DB) error {
		number := db.CRLNumber + 1
		if opts.Initial {
			if db.CRLNumber != 0 {
				return fmt.Errorf("CA %q (%s) has signed CRL number %d already; an initial CRL would go back to 0", ca.Name(), ca.Dir, db.CRLNumber)
			}
			number = 0
		}
		tmpl := &x509.RevocationList{
			Number: big.NewInt(number),
			// Pulled back like leaf NotBefore, so peers whose clocks lag
			// do not see a CRL from the future.
			ThisUpdate: now.Add(-clockSkew),
			NextUpdate: now.AddDate(0, 0, days),
		}
		for _, r := range db.Certificates {
			if !r.Revoked() {
				continue
			}
			serial, err := ParseSerial(r.Serial)
			if err != nil {
				return err
			}
			code, _, err := ParseReason(r.Reason)
			if err != nil {
				return fmt.Errorf("CA database, serial %s: %w", r.Serial, err)
			}
			tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{
				SerialNumber:   serial,
				RevocationTime: *r.RevokedAt,
				ReasonCode:     code,
			})
		}
		var err error
		if der, err = x509.CreateRevocationList(rand.Reader, tmpl, ca.Cert, key); err != nil {
			return fmt.Errorf("sign CRL: %w", err)
		}
		if !opts.Initial {
			db.CRLNumber++
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, "", err
	}
	if err := WriteFile(out, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), 0o644, true); err != nil {
		return nil, "", err
	}
	return crl, out, nil
}

// StatusRevoked is List's status for a revoked certificate; the other
// statuses are pki's (pki.StatusValid, pki.StatusExpired,
// pki.StatusNotYetValid), as in inspect.CertificateInfo.
const StatusRevoked = "revoked"

// ListEntry is a database record with its status at a given time.
type ListEntry struct {
	Record
	Status string `json:"status"`
	// DaysLeft is the number of whole days until NotAfter, rounded down
	// (pki.DaysLeft): 0 on the last day, negative once expired (-1 within
	// the first day), as in `twoway pki inspect --json`.
	DaysLeft int `json:"days_left"`
}

// List returns every certificate the CA issued, oldest first, with its
// status at now. It reads db.json afresh and changes nothing: neither the
// file nor the handle, whose view (CRLNumber) only its own changes move.
func (ca *CA) List(now time.Time) ([]ListEntry, error) {
	db, err := LoadDB(filepath.Join(ca.Dir, DBFile))
	if err != nil {
		return nil, err
	}
	out := make([]ListEntry, 0, len(db.Certificates))
	for _, r := range db.Certificates {
		e := ListEntry{Record: r, Status: pki.StatusValid}
		switch {
		case r.Revoked():
			e.Status = StatusRevoked
		case now.After(r.NotAfter):
			e.Status = pki.StatusExpired
		case now.Before(r.NotBefore):
			e.Status = pki.StatusNotYetValid
		}
		e.DaysLeft = pki.DaysLeft(r.NotAfter, now)
		out = append(out, e)
	}
	return out, nil
}
