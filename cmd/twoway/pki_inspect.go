package main

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/twoway/twoway/pki"
)

func init() {
	pkiSubcommands = append(pkiSubcommands, newPKIInspectCmd, newPKIVerifyCmd, newPKIExportP12Cmd)
}

func newPKIInspectCmd() *cobra.Command {
	var (
		passFile string
		asJSON   bool
	)
	cmd := &cobra.Command{
		Use:   "inspect FILE",
		Short: "Summarise a certificate, chain, CSR, CRL, PKCS#12 file or key",
		Long: `inspect shows what a PKI file holds, detected by content (PEM or DER):
certificates (subject, SANs, groups, usages, CA constraints, validity,
serial, SHA-256 fingerprint and SPKI pin), certificate requests (and whether
their signature is valid), CRLs (revoked serials with dates and reasons),
PKCS#12 files (which need the password) and private keys (type, size and
protection; never the key itself).`,
		Example: `  twoway pki inspect alice.crt
  twoway pki inspect --json client-ca/crl.pem
  twoway pki inspect --password-file pw.txt alice.p12`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := args[0]
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			password := func() ([]byte, error) {
				pw, err := readPassword(cmd, passFile, "--password-file", "Password for "+path+": ", false)
				if errors.Is(err, errNoPasswordSource) {
					// Say so in a way Inspect understands: an encrypted
					// key is then shown as encrypted instead of failing
					// the whole command.
					return nil, fmt.Errorf("%w: use --password-file or run on a terminal", pki.ErrPasswordRequired)
				}
				return pw, err
			}
			r, err := pki.Inspect(data, password)
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(r)
			}
			writeReport(out, path, r, time.Now())
			return nil
		},
	}
	cmd.Flags().StringVar(&passFile, "password-file", "", "read the PKCS#12 or key password from the first line of this file")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

func newPKIVerifyCmd() *cobra.Command {
	var (
		bundleFile, usage, name string
		crlFiles, pins          []string
	)
	cmd := &cobra.Command{
		Use:   "verify --ca-bundle FILE --usage client|server CERT",
		Short: "Verify a certificate exactly as the tunnel does",
		Long: `verify runs the tunnel's peer verification on CERT (the leaf, optionally
followed by intermediates): chain to the CA bundle (passing through one of the
bundle's issuing CAs when it has any), validity of every certificate, the
extended key usage for the role, revocation against the given CRLs, and
optionally the server name and SPKI pins. It prints OK and the identity the
tunnel would see, or the check that failed and exits 1.`,
		Example: `  twoway pki verify --ca-bundle pki/client-ca/bundle.crt --crl pki/client-ca/crl.pem --usage client alice.crt
  twoway pki verify --ca-bundle pki/server-ca/bundle.crt --usage server --name gw.example.com gw.crt`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var u pki.Usage
			switch usage {
			case "client":
				u = pki.UsageClient
			case "server":
				u = pki.UsageServer
			default:
				return fmt.Errorf("--usage must be client or server, not %q", usage)
			}
			bundle, err := pki.LoadCertificates(bundleFile)
			if err != nil {
				return fmt.Errorf("CA bundle: %w", err)
			}
			var crls []*x509.RevocationList
			for _, f := range crlFiles {
				crl, err := pki.LoadCRL(f)
				if err != nil {
					return fmt.Errorf("CRL: %w", err)
				}
				crls = append(crls, crl)
			}
			v, err := pki.NewVerifier(bundle, crls)
			if err != nil {
				return fmt.Errorf("%s: %w", bundleFile, err)
			}
			chain, err := pki.LoadCertificates(args[0])
			if err != nil {
				return err
			}
			id, err := v.Verify(chain, pki.VerifyOptions{Usage: u, ServerName: name, Pins: pins})
			if err != nil {
				return fmt.Errorf("verification failed: %w", err)
			}
			writeIdentity(cmd.OutOrStdout(), id, time.Now())
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&bundleFile, "ca-bundle", "", "PEM file of trusted CA certificates (a CA's bundle.crt)")
	f.StringArrayVar(&crlFiles, "crl", nil, "CRL file (PEM or DER) to check revocation against; repeatable")
	f.StringVar(&usage, "usage", "", "role the certificate must be valid for: client or server")
	f.StringVar(&name, "name", "", "host name or IP address the certificate must be valid for")
	f.StringArrayVar(&pins, "pin", nil, "accepted SPKI pin (base64 SHA-256); any certificate of the chain may match; repeatable")
	_ = cmd.MarkFlagRequired("ca-bundle")
	_ = cmd.MarkFlagRequired("usage")
	return cmd
}

func newPKIExportP12Cmd() *cobra.Command {
	var (
		certFile, keyFile, chainFile, outFile, passFile, keyPassFile string
		legacy, force                                                bool
	)
	cmd := &cobra.Command{
		Use:   "export-p12 --cert FILE --key FILE --out FILE",
		Short: "Bundle a certificate, its chain and its key into a password-protected PKCS#12 file",
		Long: `export-p12 writes a PKCS#12 (.p12/.pfx) file for importing a client identity
into an OS keychain or browser. The certificate file may hold the leaf
followed by intermediates; --chain adds more CA certificates. The file is
protected with AES-256 (PBES2); --legacy uses the old RC2/3DES algorithms
that older macOS and Windows imports need.`,
		Example: `  twoway pki export-p12 --cert alice.crt --key alice.key --out alice.p12
  twoway pki export-p12 --cert alice.crt --key alice.key --chain pki/root/ca.crt --out alice.p12 --legacy`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Refuse before asking for any password.
			if !force {
				if _, err := os.Lstat(outFile); err == nil {
					return fmt.Errorf("%s: %w", outFile, pki.ErrExists)
				}
			}
			chain, err := pki.LoadCertificates(certFile)
			if err != nil {
				return err
			}
			if chainFile != "" {
				extra, err := pki.LoadCertificates(chainFile)
				if err != nil {
					return fmt.Errorf("--chain: %w", err)
				}
				chain = append(chain, extra...)
			}
			encrypted, err := pki.IsEncryptedKeyFile(keyFile)
			if err != nil {
				return err
			}
			var keyPW []byte
			if encrypted {
				if keyPW, err = readPassword(cmd, keyPassFile, "--key-password-file", "Password for "+keyFile+": ", false); err != nil {
					return err
				}
			}
			key, err := pki.LoadPrivateKey(keyFile, keyPW)
			clear(keyPW)
			if err != nil {
				return err
			}
			if err := pki.KeyMatches(chain[0], key); err != nil {
				return fmt.Errorf("%s does not belong to the first certificate in %s: %w", keyFile, certFile, err)
			}
			pw, err := readPassword(cmd, passFile, "--password-file", "Password for "+outFile+": ", true)
			if err != nil {
				return err
			}
			defer clear(pw)
			if len(pw) == 0 {
				return pki.ErrEmptyPassword
			}
			enc := pki.PKCS12Modern
			if legacy {
				enc = pki.PKCS12Legacy
			}
			der, err := pki.ExportPKCS12(key, chain, pw, enc)
			if err != nil {
				return err
			}
			if err := pki.WriteFile(outFile, der, 0o600, force); err != nil {
				return err
			}
			kind := "AES-256"
			if legacy {
				kind = "legacy RC2/3DES"
				fmt.Fprintln(cmd.ErrOrStderr(), "note: legacy PKCS#12 encryption is weak; use a strong password and delete the file after import")
			}
			unique := map[string]bool{}
			for _, c := range chain {
				unique[string(c.Raw)] = true
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s (PKCS#12, %s): %q and %d CA certificate(s)\n",
				outFile, kind, chain[0].Subject.String(), len(unique)-1)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&certFile, "cert", "", "certificate file (PEM): the leaf, optionally followed by its intermediates")
	f.StringVar(&keyFile, "key", "", "private key file of the certificate (PEM, may be encrypted)")
	f.StringVar(&chainFile, "chain", "", "extra CA certificates to include (PEM)")
	f.StringVar(&outFile, "out", "", "PKCS#12 file to write (mode 0600)")
	f.StringVar(&passFile, "password-file", "", "read the PKCS#12 password from the first line of this file")
	f.StringVar(&keyPassFile, "key-password-file", "", "read the private key's password from the first line of this file")
	f.BoolVar(&legacy, "legacy", false, "use RC2/3DES and a SHA-1 MAC, for older macOS and Windows imports")
	f.BoolVar(&force, "force", false, "overwrite --out if it exists")
	_ = cmd.MarkFlagRequired("cert")
	_ = cmd.MarkFlagRequired("key")
	_ = cmd.MarkFlagRequired("out")
	return cmd
}

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

func writeReport(w io.Writer, path string, r *pki.Report, now time.Time) {
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

func writeCertificate(rw reportWriter, c pki.CertificateInfo, now time.Time) {
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

func validityText(c pki.CertificateInfo, now time.Time) string {
	switch c.Status {
	case pki.StatusExpired:
		return "EXPIRED " + daysAgo(-c.DaysLeft-1) // floored: -1 is within the last day
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

// writeIdentity prints what the tunnel would know a verified peer as.
func writeIdentity(w io.Writer, id *pki.Identity, now time.Time) {
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
