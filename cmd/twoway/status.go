package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/twoway/twoway/config"
	"github.com/twoway/twoway/control"
)

func init() { subcommands = append(subcommands, newStatusCmd, newKickCmd) }

func newStatusCmd() *cobra.Command {
	var (
		socket, role  string
		asJSON, fleet bool
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show what a running gateway or client is doing: sessions, traffic, certificate expiry",
		Long: `status asks a running twoway gateway or client over its local control socket
for its sessions (identity, groups, addresses, bytes and packets each way,
round-trip time, reconnects, last error), and how many days its own
certificate, its peers' certificates and their CAs have left.

Without --socket it looks for a gateway, then a client, at the default
places (/run/twoway/ROLE.sock, then $XDG_RUNTIME_DIR/twoway/ROLE.sock; on
Windows \\.\pipe\twoway-ROLE).`,
		Example: `  twoway status
  twoway status --role client
  twoway status --socket /run/twoway/server.sock --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, what, err := findSocket(socket, config.Role(role))
			if err != nil {
				return err
			}
			resp, err := query(cmd, path, what, control.Request{Op: control.OpStatus, Fleet: fleet})
			if err != nil {
				return err
			}
			if resp.Status == nil {
				return fmt.Errorf("%s: the daemon sent no status", path)
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(resp.Status)
			}
			printStatus(cmd.OutOrStdout(), *resp.Status)
			return nil
		},
	}
	cmd.Flags().StringVar(&socket, "socket", "", "control socket (or pipe) of the daemon")
	cmd.Flags().StringVar(&role, "role", "", "which daemon to ask when --socket is not given: server or client")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the full status as JSON")
	cmd.Flags().BoolVar(&fleet, "fleet", false, "list the sessions of every gateway of the gateway's fleet, with the gateway holding each")
	return cmd
}

func newKickCmd() *cobra.Command {
	var (
		socket string
		fleet  bool
	)
	cmd := &cobra.Command{
		Use:   "kick IDENTITY",
		Short: "End every session of an identity on the running gateway",
		Long: `kick tells the running gateway to close every session of the named identity
(the certificate's common name, as shown by twoway status). The client may
reconnect: to keep it out, revoke its certificate or change the policy and
reload.`,
		Example: `  twoway kick alice`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path, what, err := findSocket(socket, config.RoleServer)
			if err != nil {
				return err
			}
			resp, err := query(cmd, path, what, control.Request{Op: control.OpKick, Identity: args[0], Fleet: fleet})
			if err != nil {
				return err
			}
			if resp.Kicked == 0 {
				where := "the gateway"
				if fleet {
					where = "any gateway of the fleet"
				}
				return fmt.Errorf("no session of %q on %s", args[0], where)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "kicked %s of %s\n", plural(resp.Kicked, "session"), args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&socket, "socket", "", "control socket (or pipe) of the gateway")
	cmd.Flags().BoolVar(&fleet, "fleet", false, "end the identity's sessions on every gateway of the fleet")
	return cmd
}

// socketCandidates are the default control socket paths of a role,
// control.Candidates. Tests point them at temporary directories: a daemon
// running on the machine (a `twoway forward` started as root answers at
// /run/twoway/client.sock) must not answer them.
var socketCandidates = control.Candidates

// findSocket picks the control socket to talk to and names the daemon
// for messages: the given path, else the first default path of role that
// exists, else (no role) a gateway's, then a client's.
func findSocket(socket string, role config.Role) (path, what string, err error) {
	what = "daemon"
	switch role {
	case config.RoleServer, config.RoleClient:
		what = string(role)
	case "":
	default:
		return "", "", fmt.Errorf("--role %q: want server or client", role)
	}
	if socket != "" {
		return socket, what, nil
	}
	roles := []config.Role{config.RoleServer, config.RoleClient}
	if role != "" {
		roles = []config.Role{role}
	} else {
		what = "server or client"
	}
	var tried []string
	for _, r := range roles {
		cands := socketCandidates(r)
		if p := control.Find(cands); p != "" {
			return p, string(r), nil
		}
		tried = append(tried, cands...)
	}
	return "", "", fmt.Errorf("no twoway %s is running (no socket at %s)", what, strings.Join(tried, " or "))
}

// query sends req and turns "nobody there" into a message that says so.
func query(cmd *cobra.Command, path, what string, req control.Request) (control.Response, error) {
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	resp, err := control.Query(ctx, path, req)
	if errors.Is(err, control.ErrNotRunning) {
		if _, serr := os.Lstat(path); serr != nil {
			return resp, fmt.Errorf("no twoway %s is running (no socket at %s)", what, path)
		}
		return resp, fmt.Errorf("no twoway %s is running (nothing answers at %s; a stale socket?)", what, path)
	}
	return resp, err
}

// byReason formats counts by reason as "total (a 1, b 2)", reasons sorted.
func byReason(counts map[string]uint64) string {
	var total uint64
	parts := make([]string, 0, len(counts))
	for _, reason := range slices.Sorted(maps.Keys(counts)) {
		total += counts[reason]
		parts = append(parts, fmt.Sprintf("%s %d", reason, counts[reason]))
	}
	return fmt.Sprintf("%d (%s)", total, strings.Join(parts, ", "))
}

func printStatus(w io.Writer, st control.Status) {
	head := fmt.Sprintf("twoway %s %s", st.Role, st.Version)
	if !st.Started.IsZero() {
		head += fmt.Sprintf(", up %s (since %s)", st.Uptime().Round(time.Second), st.Started.Local().Format("2006-01-02 15:04:05 MST"))
	}
	if st.PID != 0 {
		head += fmt.Sprintf(", pid %d", st.PID)
	}
	fmt.Fprintln(w, head)
	if len(st.Listen) > 0 {
		fmt.Fprintf(w, "listening on %s\n", strings.Join(st.Listen, ", "))
	}
	if st.Endpoint != "" {
		fmt.Fprintf(w, "gateway %s\n", st.Endpoint)
	}
	if f := st.Fleet; f != nil {
		state := "etcd UNREACHABLE: live sessions go on, new VPN sessions follow store_unreachable"
		if f.Reachable {
			state = "etcd reachable"
		}
		last := "never"
		if !f.LastContact.IsZero() {
			last = st.Now.Sub(f.LastContact).Round(time.Second).String() + " ago"
		}
		fmt.Fprintf(w, "fleet: gateway %q, %s (last contact %s; %s)", f.Name, state, last, strings.Join(f.Endpoints, ", "))
		if f.Refused+f.ServedCached > 0 || f.Pending > 0 || f.PendingReleases > 0 {
			fmt.Fprintf(w, "; while etcd was away: refused %d, served from cache %d, %d not yet written back", f.Refused, f.ServedCached, f.Pending)
			if f.PendingReleases > 0 {
				fmt.Fprintf(w, ", %d releases not yet written", f.PendingReleases)
			}
		}
		fmt.Fprintln(w)
	}
	if r := st.Renewal; r != nil {
		fmt.Fprintln(w, renewalLine(r, st.Now))
	}
	if k := st.KeptVPN; k != nil {
		fmt.Fprintf(w, "VPN configuration kept while reconnecting (persist): addresses %s, routes %s; packets for the tunnel are dropped\n",
			strings.Join(k.Addresses, " "), strings.Join(k.Routes, " "))
	}
	t := st.Totals
	line := fmt.Sprintf("traffic: in %s, out %s, streams opened %d", traffic(t.BytesIn, t.PacketsIn), traffic(t.BytesOut, t.PacketsOut), t.StreamsOpened)
	if len(t.Dropped) > 0 {
		line += ", packets dropped " + byReason(t.Dropped)
	}
	if t.ECNMarked > 0 {
		line += fmt.Sprintf(", ECN marked %d", t.ECNMarked)
	}
	fmt.Fprintln(w, line)
	if t.UDPIn > 0 || t.UDPOut > 0 || len(t.UDPDropped) > 0 {
		line = fmt.Sprintf("udp: datagrams in %d, out %d", t.UDPIn, t.UDPOut)
		if len(t.UDPDropped) > 0 {
			line += ", refused " + byReason(t.UDPDropped)
		}
		if t.UDPRoamed > 0 {
			line += fmt.Sprintf(", address changes %d", t.UDPRoamed)
		}
		fmt.Fprintln(w, line)
	}

	if len(st.Certificates) > 0 {
		fmt.Fprintln(w, "\ncertificates:")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  WHICH\tSUBJECT\tSERIAL\tEXPIRES\tLEFT")
		for _, c := range st.Certificates {
			left := days(c.DaysLeft, c.NotAfter)
			if c.Which == control.CertOwn && st.Renewal != nil && st.Renewal.Failures == 0 && c.DaysLeft >= 0 {
				// A short-lived certificate that renews itself is
				// not news; a failing renewal keeps the mark.
				left = fmt.Sprintf("%dd (renews %s)", c.DaysLeft, st.Renewal.Next.UTC().Format("2006-01-02"))
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", c.Which, c.Subject, c.Serial, c.NotAfter.UTC().Format("2006-01-02"), left)
		}
		tw.Flush()
	}

	if len(st.CRLs) > 0 {
		fmt.Fprintln(w, "\nrevocation lists:")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  ISSUER\tNUMBER\tREVOKED\tNEXT UPDATE\tLEFT")
		for _, c := range st.CRLs {
			next, left := "-", "-"
			if !c.NextUpdate.IsZero() {
				next = c.NextUpdate.UTC().Format("2006-01-02 15:04")
				left = crlLeft(c.NextUpdate.Sub(st.Now))
			}
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\n", c.Issuer, cmp.Or(c.Number, "-"), c.Revoked, next, left)
		}
		tw.Flush()
	}

	client := st.Role == config.RoleClient
	fmt.Fprintf(w, "\n%s:\n", plural(len(st.Sessions), "session"))
	if len(st.Sessions) > 0 {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fleet := slices.ContainsFunc(st.Sessions, func(s control.Session) bool { return s.Gateway != "" })
		hdr := "  IDENTITY\tGROUPS\tREMOTE\tADDRESSES\tIN\tOUT\tSTREAMS\tRTT\tUP\tCERT\tCA"
		if client {
			hdr += "\tRECONNECTS"
		}
		hdr += "\tLAST ERROR"
		if fleet {
			hdr = "  GATEWAY\tIDENTITY\tGROUPS\tREMOTE\tADDRESSES\tIN\tOUT\tUP"
		}
		fmt.Fprintln(tw, hdr)
		for _, s := range st.Sessions {
			if fleet {
				// The registry carries no traffic detail, RTT or
				// certificate days: ask a gateway itself for those.
				fmt.Fprintln(tw, strings.Join([]string{"  " + dash(s.Gateway), dash(s.Identity), dash(strings.Join(s.Groups, ",")),
					dash(s.Remote), addresses(s), traffic(s.BytesIn, s.PacketsIn), traffic(s.BytesOut, s.PacketsOut), since(s.Since, st.Now)}, "\t"))
				continue
			}
			row := []string{
				"  " + dash(s.Identity), dash(strings.Join(s.Groups, ",")), dash(s.Remote),
				addresses(s), traffic(s.BytesIn, s.PacketsIn), traffic(s.BytesOut, s.PacketsOut),
				fmt.Sprint(s.Streams), rtt(s.RTTMillis), up(s, st.Now),
				days(s.CertDaysLeft, s.CertNotAfter), days(s.CADaysLeft, s.CANotAfter),
			}
			if client {
				row = append(row, fmt.Sprint(s.Reconnects))
			}
			row = append(row, dash(s.LastError))
			fmt.Fprintln(tw, strings.Join(row, "\t"))
		}
		tw.Flush()
	}

	if len(st.Forwards) > 0 {
		fmt.Fprintln(w, "\nforwards:")
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  KIND\tLISTEN\tTARGET\tBOUND\tSTATE")
		for _, f := range st.Forwards {
			state := f.State
			if f.Error != "" {
				state += ": " + f.Error
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", f.Kind, f.Listen, dash(f.Target), dash(f.Bound), state)
		}
		tw.Flush()
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// traffic renders bytes (binary units) and, when there are any, packets.
func traffic(bytes, packets uint64) string {
	s := humanBytes(bytes)
	if packets > 0 {
		s += fmt.Sprintf(" (%d pkt)", packets)
	}
	return s
}

func humanBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func rtt(ms float64) string {
	if ms <= 0 {
		return "-"
	}
	return (time.Duration(ms * float64(time.Millisecond))).Round(100 * time.Microsecond).String()
}

func since(t, now time.Time) string {
	if t.IsZero() || now.IsZero() {
		return "-"
	}
	return now.Sub(t).Round(time.Second).String()
}

// days renders days left, flagging what is about to run out.
func days(n int, notAfter time.Time) string {
	switch {
	case notAfter.IsZero():
		return "-"
	case n < 0:
		return "EXPIRED"
	case n < 7:
		return fmt.Sprintf("%dd (!)", n)
	}
	return fmt.Sprintf("%dd", n)
}

// crlLeft is how long a CRL has until its next update: STALE once past,
// hours in its last day (marked), days before.
func crlLeft(d time.Duration) string {
	switch {
	case d <= 0:
		return "STALE"
	case d < 24*time.Hour:
		return fmt.Sprintf("%dh (!)", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}

// up is how long a session has been up, marked "(resumed)" when its TLS
// session was resumed from a ticket.
func up(s control.Session, now time.Time) string {
	if s.Resumed {
		return since(s.Since, now) + " (resumed)"
	}
	return since(s.Since, now)
}

// addresses is a session's VPN addresses, marked "(gso)" when superpackets
// pass through whole.
func addresses(s control.Session) string {
	a := dash(strings.Join(s.Addresses, ","))
	if s.GSO {
		a += " (gso)"
	}
	if s.Path != "" {
		a += " via " + s.Path
	}
	if s.PathQueueMillis > 0 {
		a += fmt.Sprintf(" (path queue %.1f ms)", s.PathQueueMillis)
	}
	return a
}

// renewalLine describes a client's certificate renewal.
func renewalLine(r *control.Renewal, now time.Time) string {
	when := func(t time.Time) string {
		s := t.Local().Format("2006-01-02 15:04:05 MST")
		if d := t.Sub(now).Round(time.Second); d > 0 {
			return s + " (in " + d.String() + ")"
		}
		return s + " (due)"
	}
	line := "certificate renewal: next " + when(r.Next)
	switch r.LastOutcome {
	case "":
		line += "; not tried yet"
	case "renewed":
		line += "; last renewed " + r.LastAttempt.Local().Format("2006-01-02 15:04:05 MST")
	default:
		line += fmt.Sprintf("; FAILING (%d attempts, last %s: %s)", r.Failures, r.LastAttempt.Local().Format("2006-01-02 15:04:05 MST"), r.LastError)
	}
	return line
}
