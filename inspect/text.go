package inspect

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/twoway/twoway/pki"
)

// reportWriter prints aligned "label: value" lines, skipping empty values
// so that a summary shows only what the file has.
type reportWriter struct {
	w      io.Writer
	indent string
}

func (rw reportWriter) heading(format string, args ...any) {
	fmt.Fprintf(rw.w, "\n"+format+"\n", args...)
}

func (rw reportWriter) field(label, value string) {
	if value == "" {
		return
	}
	fmt.Fprintf(rw.w, "%s%-20s %s\n", rw.indent, label+":", value)
}

func (rw reportWriter) list(label string, values []string) {
	rw.field(label, strings.Join(values, ", "))
}

// WriteReport prints r, the report on the file at path, for people: one
// section per object, "label: value" lines, only the fields the file has,
// and validity counted from now. `twoway pki inspect` prints this; --json
// prints r itself.
func WriteReport(w io.Writer, path string, r *Report, now time.Time) {
	fmt.Fprintf(w, "%s: %s (%s)\n", path, r.Type, r.Encoding)
	rw := reportWriter{w: w, indent: "  "}
	if p := r.PKCS12; p != nil {
		rw.heading("PKCS#12 protection")
		rw.field("MAC", p.MAC)
		rw.field("Certificates", p.CertEncryption)
		rw.field("Key", p.KeyEncryption)
		if p.Legacy {
			rw.field("Note", "legacy algorithms (RC2/3DES/SHA-1): readable by old keychains, weak against guessing")
		}
	}
	for i, c := range r.Certificates {
		title := "Certificate"
		if len(r.Certificates) > 1 {
			title = fmt.Sprintf("Certificate %d of %d", i+1, len(r.Certificates))
		}
		rw.heading("%s", title)
		writeCertificate(rw, c, now)
	}
	for _, q := range r.Requests {
		rw.heading("Certificate request")
		rw.field("Subject", q.Subject)
		rw.list("Groups", q.Groups)
		writeSANs(rw, q.DNSNames, q.IPAddresses, q.Emails, q.URIs)
		rw.field("Key", q.Key.String())
		rw.field("SPKI pin", q.Key.SPKIPin)
		sig := q.SignatureAlgorithm + ", valid"
		if !q.SignatureValid {
			sig = q.SignatureAlgorithm + ", INVALID: " + q.SignatureError
		}
		rw.field("Signature", sig)
	}
	for _, c := range r.CRLs {
		rw.heading("CRL")
		rw.field("Issuer", c.Issuer)
		rw.field("CRL number", c.Number)
		rw.field("This update", formatTime(c.ThisUpdate))
		if c.NextUpdate != nil {
			next := formatTime(*c.NextUpdate)
			if c.Stale {
				next += " (STALE: a newer CRL is overdue)"
			}
			rw.field("Next update", next)
		}
		rw.field("Signature", c.SignatureAlgorithm)
		rw.field("Authority key ID", c.AuthorityKeyID)
		rw.field("Revoked", fmt.Sprintf("%d certificate(s)", len(c.Revoked)))
		for _, e := range c.Revoked {
			line := fmt.Sprintf("    serial %s  revoked %s", e.Serial, formatTime(e.RevokedAt))
			if e.Reason != "" {
				line += "  reason " + e.Reason
			}
			fmt.Fprintln(w, line)
		}
	}
	for _, k := range r.PrivateKeys {
		rw.heading("Private key")
		rw.field("Format", k.Format)
		switch {
		case k.Key == nil:
			rw.field("Key", "unknown until decrypted (give the password with --password-file)")
		case k.Key.Bits == 0 && k.Encrypted:
			rw.field("Key", k.Key.String()+" (size unknown until decrypted)")
		default:
			rw.field("Key", k.Key.String())
		}
		if k.Encrypted {
			rw.field("Encrypted", "yes, "+k.Encryption)
		} else {
			rw.field("Encrypted", "NO (anyone who can read the file has the key)")
		}
		if k.Key != nil {
			rw.field("SPKI pin", k.Key.SPKIPin)
		}
		rw.field("Matches", k.MatchesCertificate)
	}
	for _, k := range r.PublicKeys {
		rw.heading("Public key")
		rw.field("Key", k.String())
		rw.field("SPKI pin", k.SPKIPin)
	}
	if len(r.Skipped) > 0 {
		rw.heading("Skipped PEM blocks: %s", strings.Join(r.Skipped, ", "))
	}
}

func writeCertificate(rw reportWriter, c CertificateInfo, now time.Time) {
	rw.field("Subject", c.Subject)
	rw.list("Groups", c.Groups)
	writeSANs(rw, c.DNSNames, c.IPAddresses, c.Emails, c.URIs)
	issuer := c.Issuer
	if c.SelfSigned {
		issuer += " (self-signed)"
	}
	rw.field("Issuer", issuer)
	rw.field("Serial", c.Serial)
	rw.field("Not before", formatTime(c.NotBefore))
	rw.field("Not after", formatTime(c.NotAfter))
	rw.field("Validity", validityText(c, now))
	rw.field("Key", c.Key.String())
	rw.field("Signature", c.SignatureAlgorithm)
	rw.list("Key usage", c.KeyUsage)
	rw.list("Extended key usage", c.ExtKeyUsage)
	switch {
	case !c.IsCA:
		rw.field("CA", "no")
	case c.MaxPathLen != nil:
		rw.field("CA", fmt.Sprintf("yes, path length %d", *c.MaxPathLen))
	default:
		rw.field("CA", "yes, no path length limit")
	}
	if nc := c.NameConstraints; nc != nil {
		var parts []string
		add := func(what string, v []string) {
			if len(v) > 0 {
				parts = append(parts, what+" "+strings.Join(v, ", "))
			}
		}
		add("permitted DNS", nc.PermittedDNS)
		add("excluded DNS", nc.ExcludedDNS)
		add("permitted IP", nc.PermittedIPs)
		add("excluded IP", nc.ExcludedIPs)
		add("permitted email", nc.PermittedEmails)
		add("excluded email", nc.ExcludedEmails)
		add("permitted URI", nc.PermittedURIs)
		add("excluded URI", nc.ExcludedURIs)
		s := strings.Join(parts, "; ")
		if nc.Critical {
			s += " (critical)"
		}
		rw.field("Name constraints", s)
	}
	rw.field("SHA-256 fingerprint", c.Fingerprint)
	rw.field("SPKI pin", c.SPKIPin)
	rw.field("Subject key ID", c.SubjectKeyID)
	rw.field("Authority key ID", c.AuthorityKeyID)
	rw.list("CRL distribution", c.CRLDistributionPoints)
}

func writeSANs(rw reportWriter, dns, ips, emails, uris []string) {
	rw.list("DNS names", dns)
	rw.list("IP addresses", ips)
	rw.list("Emails", emails)
	rw.list("URIs", uris)
}

func validityText(c CertificateInfo, now time.Time) string {
	switch c.Status {
	case pki.StatusExpired:
		return ExpiredText(c.DaysLeft)
	case pki.StatusNotYetValid:
		return "NOT YET VALID (starts " + daysFrom(int(c.NotBefore.Sub(now)/(24*time.Hour))) + ")"
	}
	switch c.DaysLeft {
	case 0:
		return "valid, expires in less than a day"
	case 1:
		return "valid, 1 day left"
	}
	return fmt.Sprintf("valid, %d days left", c.DaysLeft)
}

// ExpiredText says how long ago a certificate expired, from its DaysLeft
// (floored, as pki.DaysLeft: -1 is within the last day): "EXPIRED less than
// a day ago", "EXPIRED 3 days ago".
func ExpiredText(daysLeft int) string { return "EXPIRED " + daysAgo(-daysLeft-1) }

func daysAgo(n int) string {
	switch n {
	case 0:
		return "less than a day ago"
	case 1:
		return "1 day ago"
	}
	return fmt.Sprintf("%d days ago", n)
}

func daysFrom(n int) string {
	switch n {
	case 0:
		return "in less than a day"
	case 1:
		return "in 1 day"
	}
	return fmt.Sprintf("in %d days", n)
}

func formatTime(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 MST") }

// WriteIdentity prints "OK" and what the tunnel would know a verified peer
// as, in the layout of WriteReport: what `twoway pki verify` prints.
func WriteIdentity(w io.Writer, id *pki.Identity, now time.Time) {
	fmt.Fprintln(w, "OK")
	rw := reportWriter{w: w, indent: "  "}
	rw.field("Name", id.Name())
	rw.list("Groups", id.Groups)
	rw.field("Serial", id.Serial)
	rw.field("Issuer", id.Issuer)
	left := int(id.NotAfter.Sub(now) / (24 * time.Hour))
	rw.field("Expires", fmt.Sprintf("%s (%s)", formatTime(id.NotAfter), daysFrom(left)))
	if id.ChainNotAfter.Before(id.NotAfter) {
		rw.field("Chain expires", fmt.Sprintf("%s (a CA certificate expires first)", formatTime(id.ChainNotAfter)))
	}
	rw.field("SPKI pin", id.SPKIPin)
}
