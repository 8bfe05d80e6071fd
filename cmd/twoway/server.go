package main

import (
	"github.com/spf13/cobra"

	"github.com/twoway/twoway/daemon"
)

func init() { subcommands = append(subcommands, newServerCmd) }

func newServerCmd() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "server -c server.toml",
		Short: "Run the gateway",
		Long: `server runs the gateway: it accepts mutual-TLS sessions from clients whose
certificates chain to the client-CA bundle, checks revocation and the policy,
and serves their forwards. SIGHUP reloads the configuration, certificates,
keys, CRLs and policy without dropping healthy sessions (sessions whose
certificate was revoked, or that the new policy no longer admits, are
closed); SIGTERM or Ctrl-C drains open streams and stops.

'twoway config example server' prints a complete, commented server.toml.`,
		Example: `  twoway server -c /etc/twoway/server.toml
  twoway server -c server.toml --log-format json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return daemon.RunServer(cmd.Context(), path, logHandler(cmd))
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "", "server configuration file (TOML)")
	return cmd
}
