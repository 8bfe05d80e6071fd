package pki

import (
	"crypto/x509"
	"log/slog"
	"net"
	"strings"
	"time"
)

// Identity is what a verified peer certificate says about its holder. It is
// attached to a tunnel session and appears in every log line about it.
type Identity struct {
	CommonName  string
	DNSNames    []string
	Emails      []string
	URIs        []string
	IPs         []net.IP
	Groups      []string // Subject OU values, one per group
	Serial      string   // lowercase hex
	Fingerprint string   // SHA-256 of the certificate, colon-separated uppercase hex
	SPKIPin     string   // base64 SHA-256 of SubjectPublicKeyInfo
	Issuer      string
	NotBefore   time.Time
	NotAfter    time.Time
	// ChainNotAfter is the earliest expiry of any certificate in the verified
	// chain: the session cannot outlive it.
	ChainNotAfter time.Time
	// Chain is the path Verify accepted, leaf first, ending at the trust
	// anchor from the CA bundle; nil for an identity not from Verify.
	// Keeping it spares callers a second walk of the same signatures.
	Chain []*x509.Certificate
	// CAs are the CAs of Chain above the leaf, the issuer first: what
	// policy "issuers" entries match (by name or fingerprint).
	CAs []CARef
	// IssuedByBundle says the CA that signed the leaf is itself in the
	// CA bundle, not a sub-CA below one. Only such certificates carry
	// groups by default (see policy.Config.CAs).
	IssuedByBundle bool
	// DroppedGroups are groups the certificate claims that the policy
	// does not let its issuer grant; Groups no longer has them.
	DroppedGroups []string
}

// CARef names one CA of a verified chain.
type CARef struct {
	Name        string // subject common name
	Fingerprint string // SHA-256 of the certificate, as Fingerprint formats it
}

// Key is what the gateway tells identities apart by: the name alone for a
// certificate issued directly by a CA of the bundle, the name with its
// issuer otherwise. Two certificates called "alice", one from the client
// CA and one from a sub-CA below it, therefore never share a VPN
// address, a lease or a session count.
func (id Identity) Key() string {
	if id.IssuedByBundle || len(id.CAs) == 0 {
		return id.Name()
	}
	fp := strings.ReplaceAll(id.CAs[0].Fingerprint, ":", "")
	return id.Name() + "@" + id.CAs[0].Name + "#" + strings.ToLower(fp[:min(16, len(fp))])
}

// IdentityFromCert extracts the identity of a leaf certificate. It does not
// verify anything.
func IdentityFromCert(c *x509.Certificate) Identity {
	id := Identity{
		CommonName:    c.Subject.CommonName,
		DNSNames:      append([]string(nil), c.DNSNames...),
		Emails:        append([]string(nil), c.EmailAddresses...),
		IPs:           append([]net.IP(nil), c.IPAddresses...),
		Groups:        append([]string(nil), c.Subject.OrganizationalUnit...),
		Serial:        c.SerialNumber.Text(16),
		Fingerprint:   Fingerprint(c),
		SPKIPin:       SPKIPin(c),
		Issuer:        c.Issuer.CommonName,
		NotBefore:     c.NotBefore,
		NotAfter:      c.NotAfter,
		ChainNotAfter: c.NotAfter,
	}
	for _, u := range c.URIs {
		id.URIs = append(id.URIs, u.String())
	}
	return id
}

// Name is the name an identity is known by: its common name, or else its
// first SAN.
func (id Identity) Name() string {
	switch {
	case id.CommonName != "":
		return id.CommonName
	case len(id.DNSNames) > 0:
		return id.DNSNames[0]
	case len(id.Emails) > 0:
		return id.Emails[0]
	case len(id.URIs) > 0:
		return id.URIs[0]
	case len(id.IPs) > 0:
		return id.IPs[0].String()
	}
	return "serial:" + id.Serial
}

// InGroup reports whether the identity carries group g.
func (id Identity) InGroup(g string) bool {
	for _, have := range id.Groups {
		if have == g {
			return true
		}
	}
	return false
}

// LogValue groups the fields operators need to tell peers apart.
func (id Identity) LogValue() slog.Value {
	attrs := []slog.Attr{
		slog.String("name", id.Name()),
		slog.String("serial", id.Serial),
	}
	if len(id.Groups) > 0 {
		attrs = append(attrs, slog.String("groups", strings.Join(id.Groups, ",")))
	}
	attrs = append(attrs, slog.String("issuer", id.Issuer), slog.String("fingerprint", id.Fingerprint))
	return slog.GroupValue(attrs...)
}
