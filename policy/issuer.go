package policy

import (
	"encoding/hex"
	"strings"

	"github.com/twoway/twoway/pki"
)

// issuerRef is a compiled issuers or [[policy.ca]] entry: a CA's common
// name, or the fingerprint of its certificate.
type issuerRef struct {
	name        string
	fingerprint string // upper-case hex with colons, as pki.Fingerprint; "" for a name
}

// parseIssuer reads "Example client CA", "sha256:AB:CD:..." or the bare
// 64 hex digits of a fingerprint.
func parseIssuer(s string) (issuerRef, error) {
	if s == "" || strings.TrimSpace(s) != s {
		return issuerRef{}, errorf("invalid issuer %q", s)
	}
	hexdigits := strings.ReplaceAll(strings.TrimPrefix(strings.ToLower(s), "sha256:"), ":", "")
	if b, err := hex.DecodeString(hexdigits); err == nil && len(b) == 32 {
		parts := make([]string, len(b))
		for i, x := range b {
			parts[i] = strings.ToUpper(hex.EncodeToString([]byte{x}))
		}
		return issuerRef{fingerprint: strings.Join(parts, ":")}, nil
	}
	if strings.HasPrefix(strings.ToLower(s), "sha256:") {
		return issuerRef{}, errorf("invalid issuer %q: a sha256: fingerprint has 64 hex digits", s)
	}
	return issuerRef{name: s}, nil
}

func (r issuerRef) matches(ca pki.CARef) bool {
	if r.fingerprint != "" {
		return r.fingerprint == ca.Fingerprint
	}
	return r.name == ca.Name
}

// issuedBy reports whether one of refs names the CA that signed id's
// certificate. Only the direct issuer counts: a CA below the named one
// is a different CA, which may have been handed to a branch office.
func issuedBy(id *pki.Identity, refs []issuerRef) bool {
	if len(id.CAs) == 0 {
		return false
	}
	for _, r := range refs {
		if r.matches(id.CAs[0]) {
			return true
		}
	}
	return false
}

// Honour returns id with only the groups its CAs may grant (see
// Config.CAs); the others move to DroppedGroups. id itself is not changed.
// The tunnel calls it once per session, so that Admit, Dial and the VPN
// router only ever see honoured groups.
func (p *Policy) Honour(id *pki.Identity) *pki.Identity {
	if id == nil || len(id.Groups) == 0 {
		return id
	}
	out := *id
	out.Groups, out.DroppedGroups = nil, nil
	for _, g := range id.Groups {
		if p.grants(id, g) {
			out.Groups = append(out.Groups, g)
		} else {
			out.DroppedGroups = append(out.DroppedGroups, g)
		}
	}
	return &out
}

func (p *Policy) grants(id *pki.Identity, group string) bool {
	if len(p.cas) == 0 {
		return id.IssuedByBundle
	}
	for _, c := range p.cas {
		if !c.issuer.matches(firstCA(id)) {
			continue
		}
		if c.any {
			return true
		}
		for _, g := range c.groups {
			if g == group {
				return true
			}
		}
	}
	return false
}

func firstCA(id *pki.Identity) pki.CARef {
	if len(id.CAs) == 0 {
		return pki.CARef{}
	}
	return id.CAs[0]
}
