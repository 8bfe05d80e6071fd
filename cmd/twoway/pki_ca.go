package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/twoway/twoway/authority"
	"github.com/twoway/twoway/pki"
)

func init() {
	pkiSubcommands = append(pkiSubcommands, newPKIInitCmd, newPKICACmd, newPKIRevokeCmd, newPKICRLCmd, newPKIListCmd)
}

// openCA opens the CA directory given with --ca, asking for its key's
// password only if something is signed and the key is encrypted.
func openCA(cmd *cobra.Command, dir, passwordFile string) (*authority.CA, error) {
	return authority.OpenCA(dir, func() ([]byte, error) {
		return readPassword(cmd, passwordFile, "--password-file", "Password for CA key "+filepath.Join(dir, authority.CAKeyFile)+": ", false)
	})
}

// newKeyPassword returns the password for a new CA key: none with
// --no-password, else from the file or typed twice.
func newKeyPassword(cmd *cobra.Command, passwordFile string, noPassword bool, prompt string) ([]byte, error) {
	if noPassword {
		if passwordFile != "" {
			return nil, errors.New("--no-password and --password-file contradict each other")
		}
		return nil, nil
	}
	return readPassword(cmd, passwordFile, "--password-file", prompt, true)
}

func newPKIInitCmd() *cobra.Command {
	var (
		dir, org, passwordFile, keyType string
		noPassword, force               bool
	)
	cmd := &cobra.Command{
		Use:   "init --dir DIR",
		Short: "Create a PKI: an offline root CA with a server CA and a client CA",
		Long: `init creates three certificate authorities in DIR:

  DIR/root       the root CA (10 years). Keep it offline: it is needed only
                 to create or revoke intermediate CAs.
  DIR/server-ca  issues gateway certificates (5 years)
  DIR/client-ca  issues user and device certificates (5 years)

The CA keys are encrypted with one password (from --password-file or typed
twice) unless --no-password is given. Existing files are refused unless
--force.`,
		Example: `  twoway pki init --dir ./pki --org "Example Corp"
  twoway pki init --dir ./pki --password-file ca-password.txt --key-type ed25519`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			kt, err := authority.ParseKeyType(keyType)
			if err != nil {
				return err
			}
			pw, err := newKeyPassword(cmd, passwordFile, noPassword, "New password for the CA keys: ")
			if err != nil {
				return err
			}
			defer clear(pw)
			res, err := authority.Init(dir, authority.InitOptions{Org: org, KeyType: kt, Password: pw, Force: force})
			if err != nil {
				return err
			}
			// Each CA's first, empty CRL, so that a gateway configured with
			// crls (as `twoway config example server` is) starts right away.
			// Init's handles hold the keys: no password is asked again.
			for _, ca := range []*authority.CA{res.Root, res.ServerCA, res.ClientCA} {
				if _, _, err := ca.CRL(authority.CRLOptions{Initial: true}); err != nil {
					return err
				}
			}
			printInit(cmd.OutOrStdout(), dir, res, len(pw) > 0)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&dir, "dir", "", "directory to create the PKI in")
	f.StringVar(&org, "org", "", `organization name in the CA certificates (default "twoway")`)
	f.StringVar(&passwordFile, "password-file", "", "encrypt the CA keys with the first line of this file")
	f.BoolVar(&noPassword, "no-password", false, "leave the CA keys unencrypted (tests and throwaway PKIs only)")
	f.StringVar(&keyType, "key-type", string(authority.KeyECDSAP256), "CA key type: ecdsa-p256, ed25519 or rsa-3072")
	f.BoolVar(&force, "force", false, "replace an existing PKI in DIR")
	_ = cmd.MarkFlagRequired("dir")
	return cmd
}

func printInit(w io.Writer, dir string, res *authority.InitResult, encrypted bool) {
	prot := "unencrypted"
	if encrypted {
		prot = "encrypted"
	}
	fmt.Fprintf(w, "Created a PKI in %s (CA keys %s):\n", dir, prot)
	for _, ca := range []*authority.CA{res.Root, res.ServerCA, res.ClientCA} {
		fmt.Fprintf(w, "  %-24s %-28s expires %s\n", ca.Name(), ca.Dir, ca.Cert.NotAfter.UTC().Format(time.DateOnly))
	}
	fmt.Fprintf(w, "\nKeep %s offline: it is needed only to create or revoke intermediate CAs.\n", res.Root.Dir)
	serverBundle := filepath.Join(res.ServerCA.Dir, authority.BundleFile)
	clientBundle := filepath.Join(res.ClientCA.Dir, authority.BundleFile)
	fmt.Fprintf(w, `
The gateway (server) holds:
  its certificate and key    twoway pki issue server --ca %s --name HOST
  the client-CA bundle       %s   (to verify clients)

Each client holds:
  its certificate and key    twoway pki issue client --ca %s --name ID --group GROUP
  the server-CA bundle       %s   (to verify the gateway)
`, res.ServerCA.Dir, clientBundle, res.ClientCA.Dir, serverBundle)
}

func newPKICACmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Manage intermediate CAs",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newPKICACreateCmd())
	return cmd
}

func newPKICACreateCmd() *cobra.Command {
	var (
		name, parent, dir, passwordFile, newPasswordFile, keyType string
		permitDNS, permitIP                                       []string
		pathLen, days                                             int
		noPassword, force                                         bool
	)
	cmd := &cobra.Command{
		Use:   "create --name NAME --parent CA",
		Short: "Create an intermediate CA under another CA",
		Long: `ca create makes a subordinate CA signed by --parent, records it in the
parent's database (revoke it through the parent) and writes its directory:
by default a sibling of the parent's directory named NAME.

--path-len sets how many CA levels may follow below the new CA (default 0:
it issues only end-entity certificates). --permit-dns and --permit-ip add
critical name constraints: the new CA can then only issue for those domains
and address ranges (given only one of the two, it can issue no names of the
other kind at all). Validity defaults to the parent's remaining lifetime, at
most 5 years.

The parent's key password comes from --password-file (or is asked for). The
new key is encrypted with --new-password-file, else with the parent's
password (or --password-file if the parent's key is unencrypted), else a
typed one; --no-password leaves it unencrypted.`,
		Example: `  twoway pki ca create --parent ./pki/server-ca --name "branch gateways" --dir ./pki/branch-ca --permit-dns branch.example.com
  twoway pki ca create --parent ./pki/root --name "partner client CA" --path-len 0 --days 730`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			kt, err := authority.ParseKeyType(keyType)
			if err != nil {
				return err
			}
			var ips []*net.IPNet
			for _, s := range permitIP {
				_, n, err := net.ParseCIDR(s)
				if err != nil {
					return fmt.Errorf("--permit-ip: invalid CIDR %q (want e.g. 10.0.0.0/8)", s)
				}
				ips = append(ips, n)
			}
			if noPassword && newPasswordFile != "" {
				return errors.New("--no-password and --new-password-file contradict each other")
			}
			// Remember the parent's password so the new key can share it.
			var parentPW []byte
			defer func() { clear(parentPW) }()
			ca, err := authority.OpenCA(parent, func() ([]byte, error) {
				pw, err := readPassword(cmd, passwordFile, "--password-file", "Password for CA key "+filepath.Join(parent, authority.CAKeyFile)+": ", false)
				parentPW = pw
				return pw, err
			})
			if err != nil {
				return err
			}
			opts := authority.SubCAOptions{Name: name, Dir: dir, PathLen: pathLen, PermittedDNS: permitDNS, PermittedIPs: ips,
				Days: days, KeyType: kt, Force: force}
			// Ask for the new password after the parent's, and only once the
			// parent's key has been unlocked (CreateSubCA then reuses it).
			var newPW []byte
			defer func() { clear(newPW) }()
			if !noPassword && newPasswordFile != "" {
				if newPW, err = readPassword(cmd, newPasswordFile, "--new-password-file", "", false); err != nil {
					return err
				}
			}
			if !noPassword && newPW == nil {
				if err := ca.Unlock(); err != nil {
					return err
				}
				switch {
				case parentPW != nil:
					newPW = append([]byte(nil), parentPW...)
				default:
					// An unencrypted parent: --password-file, if given,
					// is then meant for the new key.
					if newPW, err = readPassword(cmd, passwordFile, "--new-password-file", "New password for the CA key of "+name+": ", true); err != nil {
						return err
					}
				}
			}
			opts.Password = newPW
			sub, err := ca.CreateSubCA(opts)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "Created CA %q in %s (serial %s, expires %s, path length %s)\n",
				sub.Name(), sub.Dir, sub.Cert.SerialNumber.Text(16), sub.Cert.NotAfter.UTC().Format(time.DateOnly), pathLenString(sub))
			fmt.Fprintf(w, "Peers trust it through %s; issue with: twoway pki issue server|client --ca %s ...\n",
				filepath.Join(sub.Dir, authority.BundleFile), sub.Dir)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "common name of the new CA")
	f.StringVar(&parent, "parent", "", "directory of the CA that signs the new CA")
	f.StringVar(&dir, "dir", "", "directory of the new CA (default: next to the parent's, named NAME)")
	f.IntVar(&pathLen, "path-len", 0, "CA levels allowed below the new CA (0: leaf certificates only)")
	f.StringSliceVar(&permitDNS, "permit-dns", nil, "permitted DNS domain (name constraint); repeatable")
	f.StringSliceVar(&permitIP, "permit-ip", nil, "permitted IP range in CIDR form (name constraint); repeatable")
	f.IntVar(&days, "days", 0, "validity in days (default: the parent's remaining lifetime, at most 5 years)")
	f.StringVar(&keyType, "key-type", string(authority.KeyECDSAP256), "key type: ecdsa-p256, ed25519 or rsa-3072")
	f.StringVar(&passwordFile, "password-file", "", "read the parent CA key's password from the first line of this file")
	f.StringVar(&newPasswordFile, "new-password-file", "", "encrypt the new CA key with the first line of this file")
	f.BoolVar(&noPassword, "no-password", false, "leave the new CA key unencrypted")
	f.BoolVar(&force, "force", false, "replace an existing CA in the target directory")
	_ = cmd.MarkFlagRequired("name")
	_ = cmd.MarkFlagRequired("parent")
	return cmd
}

func pathLenString(ca *authority.CA) string {
	if ca.Cert.MaxPathLen < 0 || (ca.Cert.MaxPathLen == 0 && !ca.Cert.MaxPathLenZero) {
		return "unlimited"
	}
	return fmt.Sprint(ca.Cert.MaxPathLen)
}

func newPKIRevokeCmd() *cobra.Command {
	var ca, serial, certFile, reason string
	cmd := &cobra.Command{
		Use:   "revoke --ca CA (--serial N | --cert FILE)",
		Short: "Revoke a certificate the CA issued",
		Long: `revoke marks a certificate as revoked in the CA's database. Peers learn of
it from the next CRL: run "twoway pki crl" afterwards and distribute the CRL.
The serial is hexadecimal as list and inspect print it (0x and colons are
accepted). An intermediate CA is revoked through its parent (e.g. the root).

Reasons: unspecified, keyCompromise, caCompromise, affiliationChanged,
superseded, cessationOfOperation, certificateHold.`,
		Example: `  twoway pki revoke --ca ./pki/client-ca --cert alice.crt --reason keyCompromise
  twoway pki revoke --ca ./pki/client-ca --serial 5e:0f:3a... --reason superseded`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (serial == "") == (certFile == "") {
				return errors.New("give exactly one of --serial and --cert")
			}
			if _, _, err := authority.ParseReason(reason); err != nil {
				return err
			}
			c, err := authority.OpenCA(ca, nil) // revoking signs nothing
			if err != nil {
				return err
			}
			var rec *authority.Record
			if certFile != "" {
				certs, err := pki.LoadCertificates(certFile)
				if err != nil {
					return err
				}
				rec, err = c.RevokeCert(certs[0], reason)
				if err != nil {
					return fmt.Errorf("%s: %w", certFile, err)
				}
			} else {
				n, err := authority.ParseSerial(serial)
				if err != nil {
					return err
				}
				if rec, err = c.Revoke(n, reason); err != nil {
					return err
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Revoked %s certificate %s (serial %s), reason %s.\nPublish it: twoway pki crl --ca %s\n",
				rec.Kind, rec.Subject, rec.Serial, rec.Reason, c.Dir)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&ca, "ca", "", "directory of the CA that issued the certificate")
	f.StringVar(&serial, "serial", "", "serial number (hex) of the certificate to revoke")
	f.StringVar(&certFile, "cert", "", "certificate file to revoke (its first certificate)")
	f.StringVar(&reason, "reason", "unspecified", "RFC 5280 revocation reason")
	_ = cmd.MarkFlagRequired("ca")
	return cmd
}

func newPKICRLCmd() *cobra.Command {
	var ca, out, passwordFile string
	var days int
	cmd := &cobra.Command{
		Use:   "crl --ca CA",
		Short: "Sign a new certificate revocation list",
		Long: `crl signs an X.509 v2 CRL of everything the CA revoked, with the next CRL
number, valid for --days (default 7): publish a new one before then. It is
written to CA/crl.pem unless --out is given, replacing the previous CRL.`,
		Example: `  twoway pki crl --ca ./pki/client-ca
  twoway pki crl --ca ./pki/root --days 90 --out root.crl`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := openCA(cmd, ca, passwordFile)
			if err != nil {
				return err
			}
			crl, path, err := c.CRL(authority.CRLOptions{Days: days, Out: out})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Wrote CRL number %s of %q to %s: %d revoked, next update %s\n",
				crl.Number, c.Name(), path, len(crl.RevokedCertificateEntries), crl.NextUpdate.UTC().Format(time.RFC3339))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&ca, "ca", "", "directory of the CA")
	f.IntVar(&days, "days", authority.DefaultCRLDays, "days until the next update")
	f.StringVar(&out, "out", "", "output file (default CA/crl.pem)")
	f.StringVar(&passwordFile, "password-file", "", "read the CA key's password from the first line of this file")
	_ = cmd.MarkFlagRequired("ca")
	return cmd
}

func newPKIListCmd() *cobra.Command {
	var ca string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list --ca CA",
		Short: "List the certificates a CA issued, with their status",
		Example: `  twoway pki list --ca ./pki/client-ca
  twoway pki list --ca ./pki/root --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := authority.OpenCA(ca, nil)
			if err != nil {
				return err
			}
			entries, err := c.List(time.Now())
			if err != nil {
				return err
			}
			rows := [][]string{{"SERIAL", "KIND", "STATUS", "DAYS LEFT", "NOT AFTER", "SUBJECT"}}
			for _, e := range entries {
				status := e.Status
				if e.Revoked() {
					status += " (" + e.Reason + ")"
				}
				left := "-"
				if e.Status == pki.StatusValid {
					left = fmt.Sprint(e.DaysLeft)
				}
				rows = append(rows, []string{e.Serial, string(e.Kind), status, left, e.NotAfter.Format(time.DateOnly), e.Subject})
			}
			return printListing(cmd, asJSON, entries, rows, c.Dir+" has issued no certificates")
		},
	}
	cmd.Flags().StringVar(&ca, "ca", "", "directory of the CA")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	_ = cmd.MarkFlagRequired("ca")
	return cmd
}

// printListing prints what a list command found: v as indented JSON with
// --json, else rows as an aligned table, the first row being the header.
// An empty table is explained on standard error, so that standard output
// stays the table.
func printListing(cmd *cobra.Command, asJSON bool, v any, rows [][]string, empty string) error {
	w := cmd.OutOrStdout()
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(rows) <= 1 {
		fmt.Fprintln(cmd.ErrOrStderr(), empty)
	}
	return nil
}
