package authority

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"strings"
	"time"

	"github.com/twoway/twoway/pki"
)

// Kind says what an issued certificate is for.
type Kind string

// Certificate kinds recorded in a CA's database.
const (
	KindServer Kind = "server" // gateway certificate: serverAuth
	KindClient Kind = "client" // user or device certificate: clientAuth
	KindCA     Kind = "ca"     // subordinate CA
)

// ParseKind parses "server" or "client" as given on the command line.
func ParseKind(s string) (Kind, error) {
	switch k := Kind(strings.ToLower(s)); k {
	case KindServer, KindClient:
		return k, nil
	}
	return "", fmt.Errorf("unknown certificate kind %q (want server or client)", s)
}

// Formats of db.json. A newer file is refused rather than rewritten
// without the fields this version does not know. Version 2 adds enrollment
// tokens; a database without any is still written as version 1, so that
// older twoway binaries keep working on CAs that never made a token, and
// refuse with a clear message (not "corrupt") those that did.
const (
	dbVersionNoTokens = 1
	dbVersion         = 2
)

// DB is a CA's record of what it issued and revoked, kept in the CA
// directory as db.json. It is the source of every CRL the CA signs.
type DB struct {
	Version int `json:"version"`
	// CRLNumber is the number of the last CRL signed (0: none yet, or only
	// the initial CRL, number 0). CRL numbers must increase, so it is
	// persisted before the CRL is written.
	CRLNumber    int64    `json:"crl_number"`
	Certificates []Record `json:"certificates"`
	// Tokens are the enrollment tokens the CA made, by hash only, kept
	// after use or expiry for audit until pruned.
	Tokens []TokenRecord `json:"tokens,omitempty"`
}

// Record describes one issued certificate.
type Record struct {
	Serial    string     `json:"serial"` // lowercase hex, as pki.Identity.Serial
	Subject   string     `json:"subject"`
	Kind      Kind       `json:"kind"`
	NotBefore time.Time  `json:"not_before"`
	NotAfter  time.Time  `json:"not_after"`
	SHA256    string     `json:"sha256"` // pki.Fingerprint of the certificate
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	Reason    string     `json:"reason,omitempty"` // RFC 5280 reason name, set when revoked
}

// Revoked reports whether the certificate has been revoked.
func (r Record) Revoked() bool { return r.RevokedAt != nil }

func newRecord(c *x509.Certificate, kind Kind) Record {
	return Record{
		Serial:    c.SerialNumber.Text(16),
		Subject:   c.Subject.String(),
		Kind:      kind,
		NotBefore: c.NotBefore.UTC(),
		NotAfter:  c.NotAfter.UTC(),
		SHA256:    pki.Fingerprint(c),
	}
}

// LoadDB reads a CA database.
func LoadDB(path string) (*DB, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var db DB
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&db); err != nil {
		return nil, fmt.Errorf("%s: corrupt CA database: %w", path, err)
	}
	if db.Version < dbVersionNoTokens || db.Version > dbVersion {
		return nil, fmt.Errorf("%s: unsupported CA database version %d (want %d or older); use a newer twoway", path, db.Version, dbVersion)
	}
	if db.CRLNumber < 0 {
		return nil, fmt.Errorf("%s: corrupt CA database: negative crl_number", path)
	}
	for i, r := range db.Certificates {
		if _, err := ParseSerial(r.Serial); err != nil {
			return nil, fmt.Errorf("%s: corrupt CA database: certificate %d: %w", path, i+1, err)
		}
	}
	for i, t := range db.Tokens {
		if err := t.check(); err != nil {
			return nil, fmt.Errorf("%s: corrupt CA database: token %d: %w", path, i+1, err)
		}
	}
	return &db, nil
}

// Save writes the database atomically (temporary file and rename), so that
// a crash leaves either the old or the new database, never half of one. It
// takes no lock: changes to a CA's database go through the CA, which does.
// The file is private (0600): it says which identities a token enrolls.
func (db *DB) Save(path string) error {
	data, err := dbJSON(db)
	if err != nil {
		return err
	}
	return WriteFile(path, data, 0o600, true)
}

// dbJSON renders db as db.json holds it.
func dbJSON(db *DB) ([]byte, error) {
	db.Version = dbVersionNoTokens
	if len(db.Tokens) > 0 {
		db.Version = dbVersion
	}
	if db.Certificates == nil {
		db.Certificates = []Record{}
	}
	data, err := json.MarshalIndent(db, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(data, '\n'), nil
}

// Find returns the index of the record with the given serial, or -1.
func (db *DB) Find(serial *big.Int) int {
	for i, r := range db.Certificates {
		if n, err := ParseSerial(r.Serial); err == nil && n.Cmp(serial) == 0 {
			return i
		}
	}
	return -1
}

// ErrBadSerial is returned for a serial number that is not hexadecimal.
var ErrBadSerial = errors.New("invalid serial number")

// ParseSerial parses a serial number in hex, as list and inspect print it:
// case-insensitive, with or without a 0x prefix and colons between bytes.
func ParseSerial(s string) (*big.Int, error) {
	t := strings.ReplaceAll(strings.TrimSpace(s), ":", "")
	t = strings.TrimPrefix(strings.TrimPrefix(t, "0x"), "0X")
	n, ok := new(big.Int).SetString(t, 16)
	if !ok || t == "" || strings.ContainsAny(t, "+-") {
		return nil, fmt.Errorf("%w %q: want hexadecimal, e.g. 3f:a2:... or 0x3fa2...", ErrBadSerial, s)
	}
	return n, nil
}
