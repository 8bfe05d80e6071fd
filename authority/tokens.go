package authority

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Enrollment tokens let a laptop obtain its first client certificate
// without an administrator handling its key: the administrator makes a
// token bound to an identity and groups, and whoever presents it gets a
// certificate for that identity and those groups only, once. The token is
// a bearer secret, so the CA keeps only its SHA-256 hash: reading db.json
// does not let anyone enroll.

// Token lifetimes.
const (
	DefaultTokenTTL = 24 * time.Hour
	// MaxTokenTTL bounds how long a bearer secret may lie in a chat
	// message or a ticket before someone enrolls with it.
	MaxTokenTTL = 30 * 24 * time.Hour
)

// TokenPrefix starts every enrollment token, so that a token is recognised
// on sight (and by secret scanners), and the format can change with the
// digit.
const TokenPrefix = "tw1-"

const (
	tokenBytes = 32 // 256 bits from crypto/rand
	tokenIDLen = 12 // hex digits of the hash that name a token
)

// tokenEncoding is unpadded base32, printed in lowercase: letters and
// digits only, so a token survives double-click selection, URLs and
// shells, and is read case-insensitively.
var tokenEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// Refusals of enrollment tokens, for callers to branch on (and a gateway to
// tell the laptop). Messages that wrap them name the token by ID, never by
// its secret.
var (
	ErrTokenUnknown = errors.New("unknown enrollment token")
	ErrTokenUsed    = errors.New("enrollment token already used")
	ErrTokenExpired = errors.New("enrollment token expired")
	ErrTokenRevoked = errors.New("enrollment token revoked")
)

// TokenState is where a token is in its life.
type TokenState string

// Token states, as `twoway pki token list` prints them.
const (
	TokenUnused  TokenState = "unused"
	TokenUsed    TokenState = "used"
	TokenExpired TokenState = "expired"
	TokenRevoked TokenState = "revoked"
)

// TokenOptions describe an enrollment token made by CreateToken.
type TokenOptions struct {
	// Name is the client ID the certificate will carry, checked as for
	// `twoway pki issue client`.
	Name string
	// Groups the certificate will carry (Subject OU), checked likewise.
	Groups []string
	// TTL is how long the token can be redeemed; 0 means DefaultTokenTTL,
	// more than MaxTokenTTL is refused.
	TTL time.Duration
	// Days of validity of the certificate issued on enrollment; 0 leaves
	// it to the enrolling side.
	Days int
}

// TokenRecord is what a CA keeps of an enrollment token: its hash and its
// binding, never the token.
type TokenRecord struct {
	// ID names the token in lists, logs and revocations: the first hex
	// digits of SHA256. It cannot be redeemed.
	ID string `json:"id"`
	// SHA256 is the hex SHA-256 of the token's 32 random bytes.
	SHA256 string `json:"sha256"`
	// Name, Groups and Days are the binding, as in TokenOptions: what
	// the certificate issued on enrollment carries, whatever is asked.
	Name      string     `json:"name"`
	Groups    []string   `json:"groups,omitempty"`
	Days      int        `json:"days,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt time.Time  `json:"expires_at"` // first instant it is refused
	UsedAt    *time.Time `json:"used_at,omitempty"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
}

// State is the token's state at now. A token used or revoked stays so
// after it would have expired.
func (r TokenRecord) State(now time.Time) TokenState {
	switch {
	case r.RevokedAt != nil:
		return TokenRevoked
	case r.UsedAt != nil:
		return TokenUsed
	case !now.Before(r.ExpiresAt):
		return TokenExpired
	}
	return TokenUnused
}

// ended returns when the token stopped being redeemable, if it has by now.
func (r TokenRecord) ended(now time.Time) (time.Time, bool) {
	switch r.State(now) {
	case TokenRevoked:
		return *r.RevokedAt, true
	case TokenUsed:
		return *r.UsedAt, true
	case TokenExpired:
		return r.ExpiresAt, true
	}
	return time.Time{}, false
}

// clone copies r so that callers cannot change a handle's database
// through its slices.
func (r TokenRecord) clone() TokenRecord {
	r.Groups = slices.Clone(r.Groups)
	return r
}

// check validates a record read from db.json.
func (r TokenRecord) check() error {
	if b, err := hex.DecodeString(r.SHA256); err != nil || len(b) != sha256.Size || r.SHA256 != strings.ToLower(r.SHA256) {
		return errors.New("sha256 is not a lowercase hex SHA-256")
	}
	if r.ID != r.SHA256[:tokenIDLen] {
		return fmt.Errorf("id %q does not match its hash", r.ID)
	}
	return nil
}

// Validate checks the options without touching a CA: names and groups as
// `twoway pki issue client` does, the token lifetime and the certificate's
// days.
func (o TokenOptions) Validate() error {
	_, _, err := o.plan()
	return err
}

func (o TokenOptions) plan() (*leafSpec, time.Duration, error) {
	s, err := newLeafSpec(KindClient, o.Name, nil, nil, nil, o.Groups)
	if err != nil {
		return nil, 0, err
	}
	ttl := o.TTL
	switch {
	case ttl == 0:
		ttl = DefaultTokenTTL
	case ttl < 0:
		return nil, 0, fmt.Errorf("--ttl must be positive, not %v", ttl)
	case ttl > MaxTokenTTL:
		return nil, 0, fmt.Errorf("--ttl %v is longer than the %v a token may live", ttl, MaxTokenTTL)
	}
	if o.Days < 0 {
		return nil, 0, fmt.Errorf("--days must be positive, not %d", o.Days)
	}
	return s, ttl, nil
}

// tokenSum is the hex SHA-256 of a token's random bytes.
func tokenSum(raw []byte) string {
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:])
}

// parseToken returns the hash of a token as printed by CreateToken, in
// either case and with surrounding space. What is not a token is unknown;
// the message does not repeat it, since it may be a real token mistyped.
func parseToken(token string) (string, error) {
	t := strings.TrimSpace(token)
	if len(t) < len(TokenPrefix) || !strings.EqualFold(t[:len(TokenPrefix)], TokenPrefix) {
		return "", errorf(ErrTokenUnknown, "not an enrollment token: it does not start with %s", TokenPrefix)
	}
	raw, err := tokenEncoding.DecodeString(strings.ToUpper(t[len(TokenPrefix):]))
	if err != nil || len(raw) != tokenBytes {
		return "", errorf(ErrTokenUnknown, "not an enrollment token: %s must be followed by %d letters and digits",
			TokenPrefix, tokenEncoding.EncodedLen(tokenBytes))
	}
	return tokenSum(raw), nil
}

// findToken returns the index of the token with hash sum, or -1. Every
// record is compared, each in constant time, so the time taken says
// nothing about how close a guess came to a stored hash.
func findToken(db *DB, sum string) int {
	found := -1
	for i := range db.Tokens {
		if subtle.ConstantTimeCompare([]byte(db.Tokens[i].SHA256), []byte(sum)) == 1 {
			found = i
		}
	}
	return found
}

// CreateToken makes a single-use enrollment token bound to opts' name and
// groups, records its hash in the CA's database and returns the token: the
// only time it exists in clear. The CA must be able to issue the client
// certificate now (an intermediate, valid, outliving --days); enrollment
// checks again. No key is needed.
func (ca *CA) CreateToken(opts TokenOptions) (token string, rec TokenRecord, err error) {
	s, ttl, err := opts.plan()
	if err != nil {
		return "", TokenRecord{}, err
	}
	if _, _, err := ca.leafValidity(s, opts.Days); err != nil {
		return "", TokenRecord{}, err
	}
	now := time.Now().UTC().Truncate(time.Second)
	err = ca.update(func(db *DB) error {
		raw := make([]byte, tokenBytes)
		var sum string
		for {
			if _, err := rand.Read(raw); err != nil {
				return err
			}
			sum = tokenSum(raw)
			// IDs are short; a token whose ID is taken is drawn again
			// so that an ID names one token.
			if !slices.ContainsFunc(db.Tokens, func(t TokenRecord) bool { return t.ID == sum[:tokenIDLen] }) {
				break
			}
		}
		rec = TokenRecord{ID: sum[:tokenIDLen], SHA256: sum, Name: s.name, Groups: s.groups, Days: opts.Days,
			CreatedAt: now, ExpiresAt: now.Add(ttl)}
		db.Tokens = append(db.Tokens, rec)
		token = TokenPrefix + strings.ToLower(tokenEncoding.EncodeToString(raw))
		return nil
	})
	if err != nil {
		return "", TokenRecord{}, err
	}
	return token, rec.clone(), nil
}

// RedeemToken burns token: it marks it used at now and returns its
// binding, the identity and groups to certify. Of any number of concurrent
// attempts, from goroutines or processes, exactly one succeeds, because
// the check and the mark are one change under the database lock. It
// refuses with ErrTokenUnknown (also for what is not a token at all),
// ErrTokenUsed, ErrTokenExpired or ErrTokenRevoked; with the last three it
// returns the record too, for the refusal's log line. The token is burnt
// before anything is issued, so a failed enrollment needs a new token.
func (ca *CA) RedeemToken(token string, now time.Time) (TokenRecord, error) {
	sum, err := parseToken(token)
	if err != nil {
		return TokenRecord{}, err
	}
	// Unknown tokens are refused from a read without the lock, so a stream
	// of guesses never holds up the CA's other changes. A token is in
	// db.json before CreateToken returns it, so no real one is missed.
	db, err := LoadDB(filepath.Join(ca.Dir, DBFile))
	if err != nil {
		return TokenRecord{}, err
	}
	if findToken(db, sum) < 0 {
		return TokenRecord{}, errorf(ErrTokenUnknown, "enrollment token unknown to CA %q (%s)", ca.Name(), ca.Dir)
	}
	var rec TokenRecord
	err = ca.update(func(db *DB) error {
		i := findToken(db, sum)
		if i < 0 { // pruned since the first look
			return errorf(ErrTokenUnknown, "enrollment token unknown to CA %q (%s)", ca.Name(), ca.Dir)
		}
		r := &db.Tokens[i]
		rec = r.clone()
		switch r.State(now) {
		case TokenRevoked:
			return errorf(ErrTokenRevoked, "enrollment token %s for %q was revoked on %s", r.ID, r.Name, r.RevokedAt.Format(time.RFC3339))
		case TokenUsed:
			return errorf(ErrTokenUsed, "enrollment token %s for %q was already used on %s", r.ID, r.Name, r.UsedAt.Format(time.RFC3339))
		case TokenExpired:
			return errorf(ErrTokenExpired, "enrollment token %s for %q expired on %s", r.ID, r.Name, r.ExpiresAt.Format(time.RFC3339))
		}
		at := now.UTC().Truncate(time.Second)
		r.UsedAt = &at
		rec = r.clone()
		return nil
	})
	return rec, err
}

// ListTokens returns the CA's enrollment tokens, oldest first. Like List,
// it reads db.json afresh and changes nothing.
func (ca *CA) ListTokens() ([]TokenRecord, error) {
	db, err := LoadDB(filepath.Join(ca.Dir, DBFile))
	if err != nil {
		return nil, err
	}
	out := make([]TokenRecord, 0, len(db.Tokens))
	for _, r := range db.Tokens {
		out = append(out, r.clone())
	}
	return out, nil
}

// RevokeToken makes the token with the given ID unusable. An expired
// token may be revoked (it then lists as revoked); a used one is refused
// with ErrTokenUsed: the certificate it enrolled is what must be revoked.
func (ca *CA) RevokeToken(id string) (TokenRecord, error) {
	id = strings.ToLower(strings.TrimSpace(id))
	var rec TokenRecord
	err := ca.update(func(db *DB) error {
		i := slices.IndexFunc(db.Tokens, func(t TokenRecord) bool { return t.ID == id })
		if i < 0 {
			return errorf(ErrTokenUnknown, "CA %q (%s) has no enrollment token with ID %q", ca.Name(), ca.Dir, id)
		}
		r := &db.Tokens[i]
		switch {
		case r.RevokedAt != nil:
			return errorf(ErrTokenRevoked, "enrollment token %s for %q was already revoked on %s", r.ID, r.Name, r.RevokedAt.Format(time.RFC3339))
		case r.UsedAt != nil:
			return errorf(ErrTokenUsed, "enrollment token %s for %q was used on %s: revoke the certificate it enrolled instead",
				r.ID, r.Name, r.UsedAt.Format(time.RFC3339))
		}
		at := time.Now().UTC().Truncate(time.Second)
		r.RevokedAt = &at
		rec = r.clone()
		return nil
	})
	if err != nil {
		return TokenRecord{}, err
	}
	return rec, nil
}

// PruneTokens removes the records of tokens that stopped being redeemable
// (used, revoked or expired) more than olderThan before now, and returns
// them. Tokens that can still be redeemed are kept whatever their age.
func (ca *CA) PruneTokens(olderThan time.Duration, now time.Time) ([]TokenRecord, error) {
	if olderThan < 0 {
		return nil, fmt.Errorf("--older-than must not be negative, not %v", olderThan)
	}
	cut := now.Add(-olderThan)
	var pruned []TokenRecord
	err := ca.update(func(db *DB) error {
		db.Tokens = slices.DeleteFunc(db.Tokens, func(r TokenRecord) bool {
			end, ok := r.ended(now)
			if ok && !end.After(cut) {
				pruned = append(pruned, r.clone())
				return true
			}
			return false
		})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return pruned, nil
}
