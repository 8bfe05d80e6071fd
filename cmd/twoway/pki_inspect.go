package main

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/twoway/twoway/authority"
	"github.com/twoway/twoway/inspect"
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
			r, err := inspect.Inspect(data, password)
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(r)
			}
			inspect.WriteReport(out, path, r, time.Now())
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
			inspect.WriteIdentity(cmd.OutOrStdout(), id, time.Now())
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
					return fmt.Errorf("%s: %w", outFile, authority.ErrExists)
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
				return authority.ErrEmptyPassword
			}
			enc := authority.PKCS12Modern
			if legacy {
				enc = authority.PKCS12Legacy
			}
			der, err := authority.ExportPKCS12(key, chain, pw, enc)
			if err != nil {
				return err
			}
			if err := authority.WriteFile(outFile, der, 0o600, force); err != nil {
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
