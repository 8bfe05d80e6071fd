package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/twoway/twoway/inspect"
	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/probe"
)

func init() { subcommands = append(subcommands, newProbeCmd) }

func newProbeCmd() *cobra.Command {
	var (
		certFile, keyFile, keyPassFile, caFile, name string
		alpn                                         []string
		asJSON                                       bool
		timeout                                      time.Duration
	)
	cmd := &cobra.Command{
		Use:   "probe HOST:PORT",
		Short: "Inspect any TLS server: version, cipher, chain, and whether it wants (and accepts) a client certificate",
		Long: `probe connects to a TLS server (twoway or any other) and reports the TLS
version and cipher suite, the server's certificate chain with expiry,
fingerprints and SPKI pins, whether the server asks for a client certificate
(two-way TLS) and which CA names it accepts, and, given --cert and --key,
whether the server accepts that certificate.

The exit status is 1 when a check you asked for fails: the server's chain
does not verify against --ca, or the server refuses --cert. That makes
probe usable as a health check. Without --ca the chain is checked against
the system roots and only reported.`,
		Example: `  twoway probe gw.example.com:8443
  twoway probe gw.example.com:8443 --ca server-ca/bundle.crt --cert alice.crt --key alice.key`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			opts := probe.Options{Addr: args[0], ServerName: name, ALPN: alpn, Timeout: timeout}
			if certFile != "" || keyFile != "" {
				var pw []byte
				if enc, err := pki.IsEncryptedKeyFile(keyFile); err == nil && enc {
					if pw, err = readPassword(cmd, keyPassFile, "--key-password-file", "Password for "+keyFile+": ", false); err != nil {
						return err
					}
				}
				c, err := pki.LoadKeyPair(certFile, keyFile, pw)
				if err != nil {
					return err
				}
				opts.ClientCert = c
			}
			if caFile != "" {
				bundle, err := pki.LoadCertificates(caFile)
				if err != nil {
					return err
				}
				if opts.Verifier, err = pki.NewVerifier(bundle, nil); err != nil {
					return fmt.Errorf("%s: %w", caFile, err)
				}
			}
			res, err := probe.Run(cmd.Context(), opts)
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(res); err != nil {
					return err
				}
			} else {
				printProbe(cmd.OutOrStdout(), res)
			}
			return probeVerdict(res, caFile != "", opts.ClientCert != nil)
		},
	}
	f := cmd.Flags()
	f.StringVar(&certFile, "cert", "", "client certificate to offer (PEM, leaf then chain)")
	f.StringVar(&keyFile, "key", "", "private key of --cert")
	f.StringVar(&keyPassFile, "key-password-file", "", "file holding the password of an encrypted --key")
	f.StringVar(&caFile, "ca", "", "CA bundle to verify the server with (default: system roots)")
	f.StringVar(&name, "name", "", "server name for SNI and verification (default: the host)")
	f.StringSliceVar(&alpn, "alpn", nil, "ALPN protocols to offer")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	f.DurationVar(&timeout, "timeout", 10*time.Second, "connect and handshake timeout")
	return cmd
}

// probeVerdict is the error (exit status 1) for a check the user asked for
// that failed: the chain against --ca, the server's answer to --cert.
func probeVerdict(r *probe.Result, checkedCA, sentCert bool) error {
	switch {
	case checkedCA && !r.ServerVerified:
		return exitError{code: 1, msg: "the server's chain does not verify against --ca: " + r.ServerError}
	case sentCert && r.ClientCertAccepted != nil && !*r.ClientCertAccepted:
		return exitError{code: 1, msg: "the server refused --cert: " + r.ClientCertError}
	}
	return nil
}

func printProbe(w io.Writer, r *probe.Result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "server\t%s (name %s)\n", r.Addr, r.ServerName)
	fmt.Fprintf(tw, "protocol\t%s, %s\n", r.TLSVersion, r.CipherSuite)
	if r.ALPN != "" {
		fmt.Fprintf(tw, "ALPN\t%s\n", r.ALPN)
	}
	if r.ServerVerified {
		fmt.Fprintf(tw, "server chain\ttrusted (checked against %s)\n", r.VerifiedWith)
	} else {
		fmt.Fprintf(tw, "server chain\tNOT trusted (checked against %s): %s\n", r.VerifiedWith, r.ServerError)
	}
	tw.Flush()
	for i, c := range r.Chain {
		fmt.Fprintf(w, "  [%d] %s\n", i, c.Subject)
		fmt.Fprintf(w, "      issuer  %s\n", c.Issuer)
		if len(c.DNSNames)+len(c.IPs) > 0 {
			fmt.Fprintf(w, "      names   %s\n", strings.Join(append(append([]string{}, c.DNSNames...), c.IPs...), ", "))
		}
		fmt.Fprintf(w, "      expires %s (%s)\n", c.NotAfter.UTC().Format("2006-01-02"), daysText(c.DaysLeft))
		fmt.Fprintf(w, "      sha256  %s\n", c.Fingerprint)
		fmt.Fprintf(w, "      pin     %s\n", c.SPKIPin)
	}
	switch {
	case !r.ClientCertRequested:
		fmt.Fprintln(w, "client certificate: not requested (one-way TLS)")
	default:
		fmt.Fprintln(w, "client certificate: REQUESTED (two-way TLS); acceptable CAs:")
		if len(r.AcceptableCAs) == 0 {
			fmt.Fprintln(w, "  (none named: any CA the server trusts)")
		}
		for _, ca := range r.AcceptableCAs {
			fmt.Fprintf(w, "  %s\n", ca)
		}
		switch {
		case r.ClientCertAccepted != nil && *r.ClientCertAccepted && r.ClientCertSent:
			fmt.Fprintln(w, "your certificate: accepted (the server did not refuse it)")
		case r.ClientCertAccepted != nil && *r.ClientCertAccepted:
			fmt.Fprintln(w, "no certificate sent: the server did not refuse the connection")
		case !r.ClientCertSent:
			fmt.Fprintf(w, "no certificate sent: refused by the server (%s)\n", r.ClientCertError)
		default:
			fmt.Fprintf(w, "your certificate: REFUSED by the server (%s)\n", r.ClientCertError)
		}
	}
}

// daysText renders a probe.Cert's DaysLeft, which is floored: -1 means
// expired within the last day.
func daysText(d int) string {
	if d < 0 {
		return inspect.ExpiredText(d)
	}
	return fmt.Sprintf("%d days left", d)
}
