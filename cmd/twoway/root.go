package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/twoway/twoway/internal/buildinfo"
)

// subcommands registers top-level commands; each file adds its own in init
// so that commands stay next to their flags.
var subcommands []func() *cobra.Command

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "twoway",
		Short: "Mutual-TLS tunnel: gateway, client, port forwarding and PKI",
		Long: `twoway connects remote users to a private network through a gateway.
Both sides prove who they are with X.509 certificates (two-way TLS), and one
TLS 1.3 connection per client carries many multiplexed streams: forwarded TCP
ports or IP packets from a TUN device.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	addLogFlags(root)
	root.AddCommand(newVersionCmd())
	for _, f := range subcommands {
		root.AddCommand(f())
	}
	// cobra's own completion command is not runnable, so cobra never checks
	// its arguments: "twoway completion fsh > twoway.fish" would write the
	// help text into the file and exit 0. Create it now and make it
	// runnable, as pki, config and service are.
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() == "completion" {
			c.RunE = func(cmd *cobra.Command, _ []string) error { return cmd.Help() }
		}
	}
	return root
}

func newVersionCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version, commit and Go version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info := buildinfo.Get()
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(info)
			}
			fmt.Fprintln(cmd.OutOrStdout(), info.String())
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	return cmd
}
