package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/twoway/twoway/config"
)

func init() { subcommands = append(subcommands, newConfigCmd) }

func newConfigCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Print example configurations and check configuration files",
		// Runnable, so that cobra checks the arguments: a mistyped
		// subcommand is then an error instead of help and exit status 0.
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(&cobra.Command{
		Use:       "example server|client",
		Short:     "Print a complete, commented example configuration",
		Args:      cobra.ExactArgs(1),
		ValidArgs: []string{string(config.RoleServer), string(config.RoleClient)},
		RunE: func(cmd *cobra.Command, args []string) error {
			switch config.Role(args[0]) {
			case config.RoleServer:
				fmt.Fprint(cmd.OutOrStdout(), config.ExampleServer())
			case config.RoleClient:
				fmt.Fprint(cmd.OutOrStdout(), config.ExampleClient())
			default:
				return fmt.Errorf("config example %q: want server or client", args[0])
			}
			return nil
		},
	})
	var path, role string
	check := &cobra.Command{
		Use:   "check -c FILE [--role server|client]",
		Short: "Validate a configuration file without touching the system",
		Long: `check loads and validates a configuration file exactly as the daemon would
(syntax, unknown keys, addresses, CIDRs, durations, that the certificate, key
and CA files exist and parse, key file permissions, the policy) and reports
each problem with file, line and key. It opens no listener and changes
nothing. The role is guessed from the file (a [policy] table or 'listen'
means server) unless --role is given. Settings that work but weaken the
setup (a client_ca of root CAs only, a CRL of no CA in client_ca, a metrics
listener or a -L/-D forward reachable beyond loopback without
authentication) are printed as warnings; they do not fail the check.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if path == "" {
				return fmt.Errorf("give the file to check with -c FILE")
			}
			r := config.Role(role)
			if r == "" {
				var err error
				if r, err = config.GuessRole(path); err != nil {
					return err
				}
			}
			switch r {
			case config.RoleServer:
				cfg, err := config.LoadServer(path)
				if err != nil {
					return err
				}
				printWarnings(cmd, cfg.Warnings())
				fmt.Fprintf(cmd.OutOrStdout(), "%s: OK (server: listen %s, %d policy rules)\n", path, cfg.Listen, len(cfg.Policy.Rules))
			case config.RoleClient:
				cfg, err := config.LoadClient(path)
				if err != nil {
					return err
				}
				printWarnings(cmd, cfg.Warnings())
				fmt.Fprintf(cmd.OutOrStdout(), "%s: OK (client: %d gateways, %d forwards)\n", path, len(cfg.Servers), len(cfg.Forwards))
			default:
				return fmt.Errorf("--role %q: want server or client", r)
			}
			return nil
		},
	}
	check.Flags().StringVarP(&path, "config", "c", "", "configuration file to check")
	check.Flags().StringVar(&role, "role", "", "server or client (default: guessed from the file)")
	cmd.AddCommand(check)
	return cmd
}

// printWarnings prints config warnings to stderr, one a line, as
// "twoway: warning: file:line: key: problem".
func printWarnings(cmd *cobra.Command, warnings []*config.Error) {
	for _, w := range warnings {
		fmt.Fprintln(cmd.ErrOrStderr(), "twoway: warning:", w)
	}
}
