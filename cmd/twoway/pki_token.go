package main

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/twoway/twoway/authority"
)

func init() {
	pkiSubcommands = append(pkiSubcommands, newPKITokenCmd)
}

func newPKITokenCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Make, list and revoke one-time enrollment tokens",
		Long: `token manages enrollment tokens: single-use secrets, each bound to a client ID
and groups, that let a laptop obtain a client certificate for that identity
only, without an administrator handling its key. A token expires after --ttl
(default 24h, at most 720h). The CA keeps only its SHA-256 hash (in db.json),
so it is shown once, when made; list, logs and revoke name it by its ID.

Make tokens at the CA that the enrolling gateway signs with.`,
		Example: `  twoway pki token create --ca ./pki/client-ca --name alice --group eng --ttl 48h --days 30
  twoway pki token list --ca ./pki/client-ca
  twoway pki token revoke --ca ./pki/client-ca 3fa2c1d4e5f6`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newPKITokenCreateCmd(), newPKITokenListCmd(), newPKITokenRevokeCmd(), newPKITokenPruneCmd())
	return cmd
}

// tokenFlagError names the flag whose value authority refused.
func tokenFlagError(err error) error {
	switch {
	case errors.Is(err, authority.ErrInvalidName):
		return fmt.Errorf("--name: %w", err)
	case errors.Is(err, authority.ErrInvalidGroup):
		return fmt.Errorf("--group: %w", err)
	}
	return err
}

func newPKITokenCreateCmd() *cobra.Command {
	var (
		ca, name string
		groups   []string
		ttl      time.Duration
		days     int
	)
	cmd := &cobra.Command{
		Use:   "create --ca CA --name ID [--group GROUP]...",
		Short: "Make a one-time enrollment token for a client ID and groups",
		Long: `create makes an enrollment token bound to --name and each --group (checked as
"issue client" checks them), and to --days, the lifetime of the certificate
issued on enrollment (default: the enrolling side's). It prints the token
alone on standard output, once: store or send it now. Anyone holding it can
enroll as that identity until it is used, expires or is revoked.

The CA must be able to issue the certificate now (an intermediate, valid,
outliving --days). No CA password is needed: nothing is signed yet.`,
		Example: `  twoway pki token create --ca ./pki/client-ca --name alice --group eng --group vpn
  TOKEN=$(twoway pki token create --ca ./pki/client-ca --name laptop-42 --ttl 2h --days 7)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if ttl == 0 {
				// authority reads 0 as the default; typed, it is a mistake.
				return errors.New("--ttl must be positive, not 0")
			}
			opts := authority.TokenOptions{Name: name, Groups: groups, TTL: ttl, Days: days}
			if err := opts.Validate(); err != nil {
				return tokenFlagError(err)
			}
			c, err := authority.OpenCA(ca, nil) // a token signs nothing
			if err != nil {
				return err
			}
			token, rec, err := c.CreateToken(opts)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), token)
			printToken(cmd.ErrOrStderr(), c, rec)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&ca, "ca", "", "directory of the CA that will issue the certificate")
	f.StringVar(&name, "name", "", "client ID the certificate will carry (its common name)")
	f.StringSliceVar(&groups, "group", nil, "group (Subject OU) the certificate will carry; repeatable")
	f.DurationVar(&ttl, "ttl", authority.DefaultTokenTTL, "how long the token can be used, e.g. 2h or 168h (at most 720h)")
	f.IntVar(&days, "days", 0, "validity of the certificate issued on enrollment, in days (default: the enrolling side's)")
	_ = cmd.MarkFlagRequired("ca")
	_ = cmd.MarkFlagRequired("name")
	return cmd
}

// printToken says what a new token is bound to and how it is used, on w
// (standard error), so that standard output holds the token alone.
func printToken(w io.Writer, ca *authority.CA, r authority.TokenRecord) {
	groups := "no groups"
	if len(r.Groups) > 0 {
		groups = "groups " + strings.Join(r.Groups, ", ")
	}
	days := "the enrolling side's default lifetime"
	if r.Days > 0 {
		days = fmt.Sprintf("%d days", r.Days)
	}
	fmt.Fprintf(w, "Enrollment token %s for %q (%s; certificate for %s) from CA %q: single use, valid until %s (%v).\n",
		r.ID, r.Name, groups, days, ca.Name(), r.ExpiresAt.Format(time.RFC3339), r.ExpiresAt.Sub(r.CreatedAt))
	fmt.Fprintf(w, "It is shown only now: the CA keeps its hash. Revoke it with: twoway pki token revoke --ca %s %s\n", ca.Dir, r.ID)
	fmt.Fprintln(w, "Use it on the laptop: twoway enroll --server GW --ca server-ca-bundle.crt --token TOKEN")
}

// tokenEntry is a token as `token list --json` prints it: the record with
// its state, and without its hash, which is no use to a reader and could
// be taken for the token. The outer SHA256, always nil, hides the
// record's: encoding/json takes the shallower of two fields of one name.
type tokenEntry struct {
	authority.TokenRecord
	SHA256 *struct{}            `json:"sha256,omitempty"`
	State  authority.TokenState `json:"state"`
}

func newPKITokenListCmd() *cobra.Command {
	var ca string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list --ca CA",
		Short: "List a CA's enrollment tokens and their state, never the tokens",
		Long: `list prints each enrollment token the CA made (until pruned): its ID, the
identity and groups it enrolls, the certificate's days ("-": the enrolling
side's default), its state (unused, used, expired or revoked, with when) and
when it was made and expires. The tokens themselves are not kept.`,
		Example: `  twoway pki token list --ca ./pki/client-ca
  twoway pki token list --ca ./pki/client-ca --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := authority.OpenCA(ca, nil)
			if err != nil {
				return err
			}
			records, err := c.ListTokens()
			if err != nil {
				return err
			}
			now := time.Now()
			entries := make([]tokenEntry, 0, len(records))
			rows := [][]string{{"ID", "NAME", "GROUPS", "DAYS", "STATE", "CREATED", "EXPIRES"}}
			for _, r := range records {
				entries = append(entries, tokenEntry{TokenRecord: r, State: r.State(now)})
				state := string(r.State(now))
				switch {
				case r.RevokedAt != nil:
					state += " " + r.RevokedAt.Format(time.RFC3339)
				case r.UsedAt != nil:
					state += " " + r.UsedAt.Format(time.RFC3339)
				}
				groups, days := strings.Join(r.Groups, ","), "-"
				if groups == "" {
					groups = "-"
				}
				if r.Days > 0 {
					days = fmt.Sprint(r.Days)
				}
				rows = append(rows, []string{r.ID, r.Name, groups, days, state, r.CreatedAt.Format(time.RFC3339), r.ExpiresAt.Format(time.RFC3339)})
			}
			return printListing(cmd, asJSON, entries, rows, c.Dir+" has no enrollment tokens")
		},
	}
	cmd.Flags().StringVar(&ca, "ca", "", "directory of the CA")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print as JSON")
	_ = cmd.MarkFlagRequired("ca")
	return cmd
}

func newPKITokenRevokeCmd() *cobra.Command {
	var ca string
	cmd := &cobra.Command{
		Use:   "revoke --ca CA ID",
		Short: "Make an enrollment token unusable",
		Long: `revoke makes the token with the given ID (as list prints it) unusable at
once. A token already used cannot be revoked: revoke the certificate it
enrolled (twoway pki revoke) instead.`,
		Example: `  twoway pki token revoke --ca ./pki/client-ca 3fa2c1d4e5f6`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return errors.New("want one token ID, as twoway pki token list prints it")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := authority.OpenCA(ca, nil)
			if err != nil {
				return err
			}
			r, err := c.RevokeToken(args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Revoked enrollment token %s for %q; it can no longer be used.\n", r.ID, r.Name)
			return nil
		},
	}
	cmd.Flags().StringVar(&ca, "ca", "", "directory of the CA that made the token")
	_ = cmd.MarkFlagRequired("ca")
	return cmd
}

func newPKITokenPruneCmd() *cobra.Command {
	var ca string
	var olderThan time.Duration
	cmd := &cobra.Command{
		Use:   "prune --ca CA",
		Short: "Forget tokens that were used, revoked or expired long ago",
		Long: `prune removes from the CA's database the records of tokens that stopped being
usable (used, revoked or expired) more than --older-than ago. Until then they
are kept, for audit. Tokens that can still be used are never pruned.`,
		Example: `  twoway pki token prune --ca ./pki/client-ca --older-than 2160h`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := authority.OpenCA(ca, nil)
			if err != nil {
				return err
			}
			pruned, err := c.PruneTokens(olderThan, time.Now())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Pruned %d token record(s) that ended more than %v ago.\n", len(pruned), olderThan)
			return nil
		},
	}
	cmd.Flags().StringVar(&ca, "ca", "", "directory of the CA")
	cmd.Flags().DurationVar(&olderThan, "older-than", 30*24*time.Hour, "how long to keep the record of a token after it ended")
	_ = cmd.MarkFlagRequired("ca")
	return cmd
}
