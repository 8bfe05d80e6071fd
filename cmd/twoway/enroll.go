package main

import (
	"bufio"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/twoway/twoway/authority"
	"github.com/twoway/twoway/enroll"
	"github.com/twoway/twoway/internal/atomicfile"
	"github.com/twoway/twoway/pki"
)

func init() {
	subcommands = append(subcommands, newEnrollCmd)
}

// Files `twoway enroll` writes in --out-dir.
const (
	enrollKeyFile    = "client.key"
	enrollCertFile   = "client.crt"
	enrollCAFile     = "server-ca.crt"
	enrollConfigFile = "client.toml"
)

// enrollOptions are the flags of `twoway enroll`.
type enrollOptions struct {
	server, serverName, ca, token, outDir string
	tokenFile                             string // the token's first line; "-": standard input
	keyType                               string
	key                                   string // a key reference: make the key in a token
	existingKey                           bool   // use the key already at key
	timeout                               time.Duration
}

func newEnrollCmd() *cobra.Command {
	var o enrollOptions
	cmd := &cobra.Command{
		Use:   "enroll --server HOST:PORT --ca SERVER-CA --token TOKEN [--out-dir DIR] [--key pkcs11:...]",
		Short: "Obtain a client certificate from a gateway with a one-time token",
		Long: `enroll makes a private key here (it never leaves this machine), sends a
certificate request with the enrollment token to the gateway over TLS (the
gateway proves itself with its certificate, checked against --ca; this side
has no certificate yet, the token stands in for it), and writes, in --out-dir:

  client.key     the key (mode 0600)
  client.crt     the certificate the gateway issued, then its chain
  server-ca.crt  a copy of --ca
  client.toml    a client configuration using them, to add forwards or [vpn] to

With --key pkcs11:token=...;object=...?module-path=...&pin-source=file:...
the key is made inside that PKCS#11 token (a YubiKey, smart card or HSM;
ECDSA P-256, not extractable), no client.key is written, and client.toml
names the token's key instead. If the enrollment fails, the key is removed
from the token again. With --existing-key, the key already in the token
under that name is used (and kept whatever happens): for tokens whose keys
are made with their own tool, such as a YubiKey's PIV slots with ykman.

The certificate is for the identity and groups the token was made for
('twoway pki token create'). The token is spent by the attempt, whatever
its outcome. Existing files are never replaced; nothing is written unless
the gateway issued the certificate.`,
		Example: `  twoway enroll --server gw.corp.example:8443 --ca server-ca.crt --token tw1-... --out-dir ~/.config/twoway`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			written, err := runEnroll(cmd.Context(), o)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "enrolled; wrote %s\n", strings.Join(written, ", "))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.server, "server", "", "gateway address, host:port")
	f.StringVar(&o.serverName, "server-name", "", "name in the gateway certificate (default: the host of --server)")
	f.StringVar(&o.ca, "ca", "", "bundle of the CA that issued the gateway certificate (server-ca/bundle.crt)")
	f.StringVar(&o.token, "token", "", "one-time enrollment token (tw1-...); on a shared machine prefer --token-file, as arguments show in ps")
	f.StringVar(&o.tokenFile, "token-file", "", `read the token from this file's first line ("-": standard input)`)
	f.StringVar(&o.outDir, "out-dir", ".", "directory for the key, certificates and client.toml")
	f.StringVar(&o.key, "key", "", "make the key inside this PKCS#11 token instead of a file: pkcs11:token=...;object=...?module-path=...&pin-source=file:...")
	f.BoolVar(&o.existingKey, "existing-key", false, "with --key: use the key already in the token (made with the token's own tool) instead of making one")
	f.StringVar(&o.keyType, "key-type", string(authority.KeyECDSAP256), "key type: ecdsa-p256, ed25519 or rsa-3072")
	f.DurationVar(&o.timeout, "timeout", 30*time.Second, "give up after this long")
	return cmd
}

// runEnroll enrolls as o says and returns the files it wrote.
func runEnroll(ctx context.Context, o enrollOptions) ([]string, error) {
	switch {
	case o.token != "" && o.tokenFile != "":
		return nil, errors.New("give --token or --token-file, not both")
	case o.tokenFile == "-":
		tok, err := firstLine(os.Stdin)
		if err != nil {
			return nil, fmt.Errorf("--token-file -: %w", err)
		}
		o.token = tok
	case o.tokenFile != "":
		f, err := os.Open(o.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("--token-file: %w", err)
		}
		tok, err := firstLine(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("--token-file %s: %w", o.tokenFile, err)
		}
		o.token = tok
	}
	for _, r := range []struct{ flag, v string }{{"--server", o.server}, {"--ca", o.ca}, {"--token or --token-file", o.token}} {
		if r.v == "" {
			return nil, fmt.Errorf("%s is required", r.flag)
		}
	}
	host, _, err := net.SplitHostPort(o.server)
	if err != nil {
		return nil, fmt.Errorf("--server %q: want host:port", o.server)
	}
	if o.serverName == "" {
		o.serverName = host
	}
	caPEM, err := os.ReadFile(o.ca)
	if err != nil {
		return nil, fmt.Errorf("--ca: %w", err)
	}
	bundle, err := pki.ParseCertificatesPEM(caPEM)
	if err != nil {
		return nil, fmt.Errorf("--ca %s: %w", o.ca, err)
	}
	ver, err := pki.NewVerifier(bundle, nil)
	if err != nil {
		return nil, fmt.Errorf("--ca %s: %w", o.ca, err)
	}
	if err := checkEnrollKey(o); err != nil {
		return nil, err
	}
	names := []string{enrollKeyFile, enrollCertFile, enrollCAFile, enrollConfigFile}
	if o.key != "" {
		names = names[1:] // the key stays in the token
	}
	paths := map[string]string{}
	for _, name := range names {
		paths[name] = filepath.Join(o.outDir, name)
		if _, err := os.Lstat(paths[name]); err == nil {
			return nil, fmt.Errorf("%s exists; choose another --out-dir or move it away", paths[name])
		}
	}
	key, err := newEnrollKey(o)
	if err != nil {
		return nil, err
	}
	certs, err := requestCertificate(ctx, o, ver, key.signer)
	if err != nil {
		if derr := key.discard(); derr != nil {
			err = errors.Join(err, fmt.Errorf("and removing the key made for it: %w", derr))
		}
		return nil, err
	}
	if c, ok := key.signer.(io.Closer); ok {
		defer c.Close()
	}
	if err := os.MkdirAll(o.outDir, 0o755); err != nil {
		return nil, err
	}
	files := []struct {
		name string
		data []byte
		perm os.FileMode
	}{
		{enrollKeyFile, key.keyPEM, 0o600},
		{enrollCertFile, authority.EncodeCertificatesPEM(certs...), 0o644},
		{enrollCAFile, caPEM, 0o644},
		{enrollConfigFile, []byte(enrolledClientTOML(o.server, o.serverName, key.ref, certs[0])), 0o644},
	}
	if key.keyPEM == nil {
		files = files[1:]
	}
	var written []string
	for _, f := range files {
		if err := atomicfile.Create(paths[f.name], f.data, f.perm); err != nil {
			return written, errors.Join(err, fmt.Errorf("the certificate was issued; wrote %d of %d files", len(written), len(files)))
		}
		written = append(written, paths[f.name])
	}
	return written, nil
}

// requestCertificate sends a certificate request signed by key, with
// o's token, and returns the certificate and chain the gateway issued.
func requestCertificate(ctx context.Context, o enrollOptions, ver *pki.Verifier, key crypto.Signer) ([]*x509.Certificate, error) {
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	conn, err := enroll.Dial(ctx, o.server, o.serverName, ver)
	if err != nil {
		return nil, err
	}
	certs, err := enroll.Enroll(ctx, conn, o.token, csr)
	_ = conn.Close()
	return certs, err
}

// enrolledClientTOML is a client configuration for the enrolled
// certificate, whose key is key (client.key or a key reference); the user
// adds forwards or [vpn].
func enrolledClientTOML(server, serverName, key string, leaf *x509.Certificate) string {
	id := pki.IdentityFromCert(leaf)
	return fmt.Sprintf(`# twoway client configuration written by 'twoway enroll' for %q
# (groups: %s), valid until %s.
# Add [[forward]] entries or a [vpn] table; see 'twoway config example client'.

servers = [%q]
server_name = %q

[tls]
cert = %q
key = %q
server_ca = %q
`, id.CommonName, strings.Join(id.Groups, ", "), leaf.NotAfter.UTC().Format(time.RFC3339),
		server, serverName, enrollCertFile, key, enrollCAFile)
}

// firstLine returns r's first line, trimmed; empty is an error.
func firstLine(r io.Reader) (string, error) {
	line, err := bufio.NewReader(io.LimitReader(r, 4096)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	if line = strings.TrimSpace(line); line == "" {
		return "", errors.New("no token in its first line")
	}
	return line, nil
}
