package main

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/twoway/twoway/config"
	"github.com/twoway/twoway/fleet"
	"github.com/twoway/twoway/pki"
)

func init() { subcommands = append(subcommands, newFleetCmd) }

func newFleetCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "fleet",
		Short: "Work with a fleet of gateways that share their state through etcd",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newFleetPublishCRLCmd(), newFleetPublishPolicyCmd())
	return cmd
}

func newFleetPublishCRLCmd() *cobra.Command {
	var cfgPath string
	cmd := &cobra.Command{
		Use:   "publish-crl CRL",
		Short: "Publish a CRL to every gateway of the fleet",
		Long: `publish-crl puts a CA's CRL (PEM or DER, e.g. the one 'twoway pki crl' wrote)
into the fleet's etcd, named by the [fleet] table of the gateway
configuration given. Every gateway of the fleet applies it within moments
and ends the live sessions of the certificates it revokes. Each gateway
checks the CRL's signature against its own client-CA bundle; a CRL no newer
than the one the fleet holds is refused (CRL numbers only go up).`,
		Example: `  twoway pki revoke --ca pki/client-ca --cert alice.crt
  twoway pki crl --ca pki/client-ca --out pki/client-ca/crl.pem
  twoway fleet publish-crl -c /etc/twoway/server.toml pki/client-ca/crl.pem`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := config.LoadServer(cfgPath)
			if err != nil {
				return err
			}
			if !cfg.Fleet.Enabled() {
				return fmt.Errorf("%s: no [fleet] table with endpoints: this gateway is not part of a fleet", cfgPath)
			}
			crl, err := pki.LoadCRL(args[0])
			if err != nil {
				return err
			}
			if err := fleet.Publish(cmd.Context(), cfg.Fleet.Config(), crl); err != nil {
				return fmt.Errorf("publish %s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "published CRL #%s of %q to the fleet\n", crl.Number, crl.Issuer.CommonName)
			return nil
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "/etc/twoway/server.toml", "gateway configuration with the [fleet] table")
	return cmd
}

func newFleetPublishPolicyCmd() *cobra.Command {
	var (
		cfgPath string
		remove  bool
	)
	cmd := &cobra.Command{
		Use:   "publish-policy",
		Short: "Publish this configuration's [policy] to every gateway of the fleet",
		Long: `publish-policy puts the [policy] of the gateway configuration given (checked
first, as 'twoway config check' does) into the fleet's etcd. Every gateway
of the fleet then uses it instead of its own file's, and re-checks its live
sessions, so one change reaches the whole fleet. --remove takes it away:
every gateway goes back to its own file's policy.`,
		Example: `  twoway fleet publish-policy -c /etc/twoway/server.toml
  twoway fleet publish-policy -c /etc/twoway/server.toml --remove`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.LoadServer(cfgPath)
			if err != nil {
				return err
			}
			if !cfg.Fleet.Enabled() {
				return fmt.Errorf("%s: no [fleet] table with endpoints: this gateway is not part of a fleet", cfgPath)
			}
			var doc []byte
			if !remove {
				if doc, err = json.Marshal(cfg.Policy); err != nil {
					return err
				}
			}
			if err := fleet.PublishPolicyWith(cmd.Context(), cfg.Fleet.Config(), doc); err != nil {
				return err
			}
			if remove {
				fmt.Fprintln(cmd.OutOrStdout(), "removed the fleet's policy: every gateway uses its own file's again")
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "published the policy of %s (%d rules) to the fleet\n", cfgPath, len(cfg.Policy.Rules))
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&cfgPath, "config", "c", "/etc/twoway/server.toml", "gateway configuration with the [fleet] and [policy] tables")
	cmd.Flags().BoolVar(&remove, "remove", false, "remove the fleet's policy instead")
	return cmd
}
