package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/twoway/twoway/pki"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// pkiSubcommands registers the subcommands of `twoway pki`; each file adds
// its own in init so that commands stay next to their flags.
var pkiSubcommands []func() *cobra.Command

func init() {
	subcommands = append(subcommands, newPKICmd)
}

func newPKICmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "pki",
		Short: "Run the certificate authorities: init, issue, sign, revoke, CRLs, enrollment tokens, inspect",
		Long: `pki manages twoway's certificate hierarchy: an offline root CA with a
"server CA" that issues gateway certificates and a "client CA" that issues
user and device certificates. A CA is named on the command line by its
directory (--ca DIR/client-ca); each CA directory holds ca.crt, ca.key
(encrypted unless made with --no-password), db.json (what it issued and
revoked, and the hashes of its enrollment tokens), db.lock (locked while
db.json changes) and, below the root, bundle.crt (the CA and its ancestors:
what a peer trusts).`,
		Example: `  twoway pki init --dir ./pki --org "Example Corp"
  twoway pki issue server --ca ./pki/server-ca --name gw.example.com
  twoway pki issue client --ca ./pki/client-ca --name alice --group eng
  twoway pki revoke --ca ./pki/client-ca --cert alice.crt --reason keyCompromise
  twoway pki crl --ca ./pki/client-ca
  twoway pki token create --ca ./pki/client-ca --name bob --group eng`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	for _, f := range pkiSubcommands {
		cmd.AddCommand(f())
	}
	return cmd
}

// errNoPasswordSource is returned (wrapped, naming the flag to use) when a
// password is needed but there is neither a password file nor a terminal
// to ask on.
var errNoPasswordSource = errors.New("password required")

// readPassword returns a password: the first line of passwordFile if it is
// set, else one typed without echo on the terminal (twice, and they must
// match, when confirm is set, because a mistyped new password would lock a
// key away for good). Without either it fails rather than hang on a pipe,
// naming fileFlag, the flag that gives passwordFile: commands that take
// several passwords have several such flags, and naming the wrong one
// would send the user to give, say, the CA's password for a new key.
func readPassword(cmd *cobra.Command, passwordFile, fileFlag, prompt string, confirm bool) ([]byte, error) {
	if passwordFile != "" {
		// The daemons refuse such a file (key_password_file); the CLI
		// only warns, but the warning names the fix.
		if fi, err := os.Stat(passwordFile); err == nil && runtime.GOOS != "windows" && fi.Mode().Perm()&0o077 != 0 {
			fmt.Fprintf(cmd.ErrOrStderr(), "twoway: warning: %s is readable by others (mode %04o); chmod 600 it\n", passwordFile, fi.Mode().Perm())
		}
		return pki.ReadPasswordFile(passwordFile)
	}
	in, ok := cmd.InOrStdin().(*os.File)
	if !ok || !term.IsTerminal(int(in.Fd())) {
		return nil, fmt.Errorf("%w: use %s or run on a terminal", errNoPasswordSource, fileFlag)
	}
	out := cmd.ErrOrStderr()
	pw, err := promptPassword(in, out, prompt)
	if err != nil {
		return nil, err
	}
	if len(pw) == 0 {
		return nil, errors.New("empty password")
	}
	if confirm {
		again, err := promptPassword(in, out, "Repeat: ")
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(pw, again) {
			return nil, errors.New("passwords do not match")
		}
	}
	return pw, nil
}

func promptPassword(in *os.File, out io.Writer, prompt string) ([]byte, error) {
	fmt.Fprint(out, prompt)
	pw, err := term.ReadPassword(int(in.Fd()))
	// ReadPassword swallows the newline the user typed; restore it so the
	// next output starts on its own line.
	fmt.Fprintln(out)
	if err != nil {
		return nil, fmt.Errorf("read password: %w", err)
	}
	return pw, nil
}
