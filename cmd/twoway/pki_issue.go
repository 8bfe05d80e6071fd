package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/twoway/twoway/authority"
)

func init() {
	pkiSubcommands = append(pkiSubcommands, newPKIIssueCmd, newPKICSRCmd, newPKISignCmd)
}

func parseIPs(flag string, values []string) ([]net.IP, error) {
	var out []net.IP
	for _, s := range values {
		ip := net.ParseIP(s)
		if ip == nil {
			return nil, fmt.Errorf("%s: invalid IP address %q", flag, s)
		}
		out = append(out, ip)
	}
	return out, nil
}

// leafKeyFlags are the flags of commands that make a leaf key.
type leafKeyFlags struct {
	keyType         string
	encrypt         bool
	keyPasswordFile string
}

func (k *leafKeyFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&k.keyType, "key-type", string(authority.KeyECDSAP256), "key type: ecdsa-p256, ed25519 or rsa-3072")
	f.BoolVar(&k.encrypt, "encrypt", false, "encrypt the new private key with a password")
	f.StringVar(&k.keyPasswordFile, "key-password-file", "", "with --encrypt: read the new key's password from the first line of this file (implies --encrypt)")
}

// password returns the new key's password, or nil for an unencrypted key.
func (k *leafKeyFlags) password(cmd *cobra.Command, keyFile string) ([]byte, error) {
	if !k.encrypt && k.keyPasswordFile == "" {
		return nil, nil
	}
	return readPassword(cmd, k.keyPasswordFile, "--key-password-file", "New password for "+keyFile+": ", true)
}

func newPKIIssueCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "issue server|client",
		Short: "Issue a server or client certificate and its key",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newPKIIssueKindCmd(authority.KindServer), newPKIIssueKindCmd(authority.KindClient))
	return cmd
}

func newPKIIssueKindCmd(kind authority.Kind) *cobra.Command {
	var (
		ca, name, outDir, passwordFile string
		dns, ips, emails, groups       []string
		days                           int
		force                          bool
		key                            leafKeyFlags
	)
	cmd := &cobra.Command{Args: cobra.NoArgs}
	switch kind {
	case authority.KindServer:
		cmd.Use = "server --ca CA --name HOST"
		cmd.Short = "Issue a gateway certificate (serverAuth) and its key"
		cmd.Long = `issue server makes a key and a certificate for a gateway, valid for
serverAuth only. HOST (a DNS name or IP address) is put in the certificate's
names, with any --dns and --ip. It writes OUT/HOST.crt (the certificate and
the issuing CA chain: what TLS presents) and OUT/HOST.key (mode 0600).
Validity defaults to 397 days and cannot exceed the CA's.`
		cmd.Example = `  twoway pki issue server --ca ./pki/server-ca --name gw.example.com --dns vpn.example.com --ip 203.0.113.7`
	case authority.KindClient:
		cmd.Use = "client --ca CA --name ID"
		cmd.Short = "Issue a user or device certificate (clientAuth) and its key"
		cmd.Long = `issue client makes a key and a certificate for a user or device, valid for
clientAuth only. ID is the certificate's common name; each --group becomes a
Subject OU (1-64 characters of A-Z a-z 0-9 . _ -) that gateway policies can
match; --email adds e-mail SANs. It writes OUT/ID.crt (the certificate and the
issuing CA chain) and OUT/ID.key (mode 0600). Validity defaults to 365 days
and cannot exceed the CA's.`
		cmd.Example = `  twoway pki issue client --ca ./pki/client-ca --name alice --group eng --group vpn-users --email alice@example.com
  twoway pki issue client --ca ./pki/client-ca --name laptop-42 --encrypt --out-dir ./out`
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		kt, err := authority.ParseKeyType(key.keyType)
		if err != nil {
			return err
		}
		ipList, err := parseIPs("--ip", ips)
		if err != nil {
			return err
		}
		req := authority.IssueRequest{Kind: kind, Name: name, DNSNames: dns, IPs: ipList, Emails: emails, Groups: groups,
			Days: days, KeyType: kt, OutDir: outDir, Force: force}
		if err := req.Validate(); err != nil {
			return err
		}
		c, err := openCA(cmd, ca, passwordFile)
		if err != nil {
			return err
		}
		if err := c.Unlock(); err != nil {
			return err
		}
		if req.KeyPassword, err = key.password(cmd, name+".key"); err != nil {
			return err
		}
		defer clear(req.KeyPassword)
		iss, err := c.Issue(req)
		if err != nil {
			return err
		}
		printIssued(cmd.OutOrStdout(), c, kind, iss, len(req.KeyPassword) > 0)
		return nil
	}
	f := cmd.Flags()
	f.StringVar(&ca, "ca", "", "directory of the issuing CA")
	f.IntVar(&days, "days", 0, "validity in days (default 397 for servers, 365 for clients)")
	f.StringVar(&outDir, "out-dir", ".", "directory to write NAME.crt and NAME.key to")
	f.StringVar(&passwordFile, "password-file", "", "read the CA key's password from the first line of this file")
	f.BoolVar(&force, "force", false, "overwrite existing files")
	key.add(cmd)
	if kind == authority.KindServer {
		f.StringVar(&name, "name", "", "host name or IP address of the gateway")
		f.StringSliceVar(&dns, "dns", nil, "additional DNS name (wildcards like *.example.com allowed); repeatable")
		f.StringSliceVar(&ips, "ip", nil, "additional IP address; repeatable")
	} else {
		f.StringVar(&name, "name", "", "ID of the user or device (the common name)")
		f.StringSliceVar(&emails, "email", nil, "e-mail address; repeatable")
		f.StringSliceVar(&groups, "group", nil, "group (Subject OU); repeatable")
	}
	_ = cmd.MarkFlagRequired("ca")
	_ = cmd.MarkFlagRequired("name")
	return cmd
}

func printIssued(w io.Writer, ca *authority.CA, kind authority.Kind, iss *authority.Issued, encrypted bool) {
	c := iss.Cert
	fmt.Fprintf(w, "Issued %s certificate %q by %q\n", kind, c.Subject.CommonName, ca.Name())
	fmt.Fprintf(w, "  certificate  %s (with %d CA certificate(s) of the chain)\n", iss.CertFile, len(iss.Chain))
	if iss.KeyFile != "" {
		prot := "unencrypted"
		if encrypted {
			prot = "encrypted"
		}
		fmt.Fprintf(w, "  key          %s (mode 0600, %s)\n", iss.KeyFile, prot)
	}
	fmt.Fprintf(w, "  serial       %s\n", c.SerialNumber.Text(16))
	fmt.Fprintf(w, "  valid until  %s (%d days)\n", c.NotAfter.UTC().Format(time.RFC3339), int(time.Until(c.NotAfter).Hours()/24+0.5))
	// Name the bundle the holder needs to verify its peers when the
	// standard layout makes it obvious.
	holder, peer := "gateway", authority.ClientCADir
	if kind == authority.KindClient {
		holder, peer = "client", authority.ServerCADir
	}
	bundle := filepath.Join(filepath.Dir(filepath.Clean(ca.Dir)), peer, authority.BundleFile)
	if _, err := os.Stat(bundle); err == nil {
		fmt.Fprintf(w, "The %s also needs %s to verify its peers.\n", holder, bundle)
	}
}

func newPKICSRCmd() *cobra.Command {
	var (
		name, outDir             string
		dns, ips, emails, groups []string
		force                    bool
		key                      leafKeyFlags
		keyRef                   string
	)
	cmd := &cobra.Command{
		Use:   "csr --name ID [--key pkcs11:...]",
		Short: "Make a key and a certificate request, for signing by a CA elsewhere",
		Long: `csr makes a private key and a certificate signing request (CSR) for it, so
that the key never leaves this machine: OUT/NAME.key (mode 0600) and
OUT/NAME.csr. Send the CSR to the CA operator, who runs "twoway pki sign".
The CA decides usages and validity; it takes names and groups from the CSR.
For a server, NAME is its host name; for a client, its ID.

With --key pkcs11:token=...;object=...?module-path=...&pin-source=file:...
the key is made inside that PKCS#11 token instead (ECDSA P-256, not
extractable) and only NAME.csr is written; the configuration then names
the token's key (tls.key = "pkcs11:...") instead of a key file.`,
		Example: `  twoway pki csr --name alice --group eng --email alice@example.com --encrypt
  twoway pki csr --name gw.example.com --dns vpn.example.com`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			kt, err := authority.ParseKeyType(key.keyType)
			if err != nil {
				return err
			}
			ipList, err := parseIPs("--ip", ips)
			if err != nil {
				return err
			}
			req := authority.CSRRequest{Name: name, DNSNames: dns, IPs: ipList, Emails: emails, Groups: groups,
				KeyType: kt, OutDir: outDir, Force: force}
			if keyRef != "" {
				return tokenCSR(cmd, req, keyRef, key)
			}
			if err := req.Validate(); err != nil {
				return err
			}
			if req.KeyPassword, err = key.password(cmd, name+".key"); err != nil {
				return err
			}
			defer clear(req.KeyPassword)
			res, err := authority.CreateCSR(req)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "Wrote %s (mode 0600) and %s\n", res.KeyFile, res.CSRFile)
			fmt.Fprintf(w, "The CA signs it with: twoway pki sign --ca CA --csr %s server|client\n", filepath.Base(res.CSRFile))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "client ID or server host name (the common name)")
	f.StringSliceVar(&dns, "dns", nil, "DNS name (servers); repeatable")
	f.StringSliceVar(&ips, "ip", nil, "IP address (servers); repeatable")
	f.StringSliceVar(&emails, "email", nil, "e-mail address (clients); repeatable")
	f.StringSliceVar(&groups, "group", nil, "group, as Subject OU (clients); repeatable")
	f.StringVar(&outDir, "out-dir", ".", "directory to write NAME.key and NAME.csr to")
	f.BoolVar(&force, "force", false, "overwrite existing files")
	f.StringVar(&keyRef, "key", "", "make the key inside this PKCS#11 token instead of NAME.key: pkcs11:token=...;object=...?module-path=...&pin-source=file:...")
	key.add(cmd)
	_ = cmd.MarkFlagRequired("name")
	return cmd
}

func newPKISignCmd() *cobra.Command {
	var (
		ca, csrFile, out, passwordFile, name string
		groups                               []string
		days                                 int
		force                                bool
	)
	cmd := &cobra.Command{
		Use:   "sign --ca CA --csr FILE server|client",
		Short: "Issue a certificate for a certificate request",
		Long: `sign checks a CSR's signature and issues a server or client certificate for
its key under the same policy as "issue": the CA decides usages and validity,
names are taken from the CSR and checked, and any other extension the CSR asks
for is ignored. The output (default: the CSR's name with .crt) holds the
certificate followed by the issuing CA chain.

A CSR is written by whoever wants the certificate, so sign shows what it asks
for and signs only what you vouch for: --name must repeat the name it asks for
(or, on a terminal without --name, you confirm it), and groups (OU) are kept
only when you list each with --group; any other group the CSR asks for is
dropped.`,
		Example: `  twoway pki sign --ca ./pki/client-ca --csr alice.csr client --name alice --group eng
  twoway pki sign --ca ./pki/server-ca --csr gw.csr server --name gw.example.com --days 90 --out gw.crt`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return errors.New("want the certificate kind: server or client")
			}
			_, err := authority.ParseKind(args[0])
			return err
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, _ := authority.ParseKind(args[0])
			csr, err := authority.LoadCSR(csrFile)
			if err != nil {
				return err
			}
			if out == "" {
				out = strings.TrimSuffix(csrFile, ".csr") + ".crt"
			}
			req := authority.SignRequest{CSR: csr, Kind: kind, Days: days, Out: out, Force: force, Name: name, Groups: groups}
			fmt.Fprintf(cmd.ErrOrStderr(), "%s asks for a %s certificate: %s\n", csrFile, kind, authority.CSRSummary(csr))
			if name == "" {
				ok, err := confirm(cmd, "Sign it? [y/N] ")
				if err != nil {
					return fmt.Errorf("%s: %w (%v); it asks for %s", csrFile, authority.ErrUnconfirmed, err, authority.CSRSummary(csr))
				}
				if !ok {
					return fmt.Errorf("%s: not signed", csrFile)
				}
				req.Confirmed = true
			}
			if err := req.Validate(); err != nil {
				return fmt.Errorf("%s: %w", csrFile, err)
			}
			c, err := openCA(cmd, ca, passwordFile)
			if err != nil {
				return err
			}
			iss, err := c.SignCSR(req)
			if err != nil {
				return err
			}
			printIssued(cmd.OutOrStdout(), c, kind, iss, false)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&ca, "ca", "", "directory of the issuing CA")
	f.StringVar(&csrFile, "csr", "", "certificate request file (PEM or DER)")
	f.IntVar(&days, "days", 0, "validity in days (default 397 for servers, 365 for clients)")
	f.StringVar(&out, "out", "", "certificate file to write (default: the CSR file name with .crt)")
	f.StringVar(&passwordFile, "password-file", "", "read the CA key's password from the first line of this file")
	f.BoolVar(&force, "force", false, "overwrite --out if it exists")
	f.StringVar(&name, "name", "", "the name (CN) the CSR must ask for; without it, confirm on a terminal")
	f.StringSliceVar(&groups, "group", nil, "a group (OU) the CSR asks for that the certificate may carry (repeatable); others are dropped")
	_ = cmd.MarkFlagRequired("ca")
	_ = cmd.MarkFlagRequired("csr")
	return cmd
}

// confirm asks a yes/no question on the terminal; without one it fails.
func confirm(cmd *cobra.Command, question string) (bool, error) {
	in, ok := cmd.InOrStdin().(*os.File)
	if !ok || !term.IsTerminal(int(in.Fd())) {
		return false, errors.New("no terminal to confirm on: pass --name")
	}
	fmt.Fprint(cmd.ErrOrStderr(), question)
	line, err := bufio.NewReader(in).ReadString('\n')
	if err != nil {
		return false, err
	}
	answer := strings.ToLower(strings.TrimSpace(line))
	return answer == "y" || answer == "yes", nil
}
