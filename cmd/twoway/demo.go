package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/twoway/twoway/config"
	"github.com/twoway/twoway/daemon"
	"github.com/twoway/twoway/demo"
)

func init() { subcommands = append(subcommands, newDemoCmd) }

func newDemoCmd() *cobra.Command {
	var (
		opts    demo.Options
		verbose bool
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a gateway and a client on loopback and show the two-way TLS handshake as it happens",
		Long: `demo makes a throwaway PKI in a temporary directory, starts a gateway, a
client and a small HTTP service on loopback (random ports, real mutual TLS,
a policy admitting group "demo" to that service only), forwards a local port
to the service and sends a request through it. It narrates, from the live
connection, what the client offered, which certificates each side presented
and which CA it was checked against, the identity and groups the gateway saw,
the TLS version and cipher suite, and what the policy granted. Then it shows
the gateway refusing a client with no certificate, one with a certificate
from an unrelated CA, and one with a certificate from the server CA.

Unless --once is given it keeps running and prints commands to try by hand;
Ctrl-C stops it and removes the directory (--keep keeps it).`,
		Example: `  twoway demo
  twoway demo --once
  twoway demo --keep --verbose`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if verbose {
				h, err := daemon.NewHandler(cmd.ErrOrStderr(), config.Log{Level: logOpts.level, Format: logOpts.format})
				if err != nil {
					return err
				}
				opts.Logger = slog.New(h)
			}
			opts.Program = programName()
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
			defer stop()
			_, err := demo.Run(ctx, cmd.OutOrStdout(), opts)
			if errors.Is(err, context.Canceled) {
				return nil // Ctrl-C during setup: everything is cleaned up
			}
			return err
		},
	}
	f := cmd.Flags()
	f.BoolVar(&opts.Once, "once", false, "run the walkthrough once and exit")
	f.BoolVar(&opts.Keep, "keep", false, "keep the temporary directory (PKI, certificates, keys) and print where it is")
	f.BoolVar(&verbose, "verbose", false, "also show the gateway's and the client's own logs (on stderr; see --log-level)")
	return cmd
}

// programName is how the printed commands should invoke twoway: a binary
// built by "go run" lives in a temporary go-build directory and is gone
// afterwards, so the newcomer's own "go run" line is the one to repeat.
func programName() string {
	if exe, err := os.Executable(); err == nil && strings.Contains(exe, "go-build") {
		return "go run ./cmd/twoway"
	}
	return "twoway"
}
