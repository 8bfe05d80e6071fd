package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/twoway/twoway/config"
	"github.com/twoway/twoway/daemon"
	"github.com/twoway/twoway/service"
)

func init() { subcommands = append(subcommands, newServiceCmd) }

// serviceManager is what the service commands need from service.Manager;
// tests substitute a fake so that nothing is installed on the test host.
type serviceManager interface {
	Install() (service.InstallReport, error)
	Uninstall() error
	Start() error
	Stop() error
	Restart() error
	Status() (service.State, error)
}

var newServiceManager = func(c service.Config) (serviceManager, error) { return service.NewManager(c) }

// Exit statuses of `service status`, as LSB init scripts and systemctl
// use them, so scripts can branch on them.
const (
	statusExitStopped      = 3
	statusExitNotInstalled = 4
)

// serviceFlags identify the service a command acts on.
type serviceFlags struct {
	path string
	role string
	name string
	user string
}

func (f *serviceFlags) add(cmd *cobra.Command, withUser bool) {
	cmd.Flags().StringVarP(&f.path, "config", "c", "", "configuration file (server.toml or client.toml)")
	cmd.Flags().StringVar(&f.role, "role", "", "server or client (default: guessed from -c, else both for status)")
	cmd.Flags().StringVar(&f.name, "name", "", "service name (default twoway-server or twoway-client)")
	if withUser {
		cmd.Flags().StringVar(&f.user, "user", service.DefaultUser, "account the systemd unit runs as (Linux; falls back to root when it does not exist)")
	}
}

// config resolves the flags into a service.Config. needPath: the command
// needs a configuration file (install, run).
func (f *serviceFlags) config(needPath bool) (service.Config, error) {
	c := service.Config{Name: f.name, User: f.user}
	if f.path != "" {
		abs, err := filepath.Abs(f.path)
		if err != nil {
			return c, err
		}
		c.ConfigPath = abs
	} else if needPath {
		return c, fmt.Errorf("give the configuration file with -c FILE")
	}
	switch {
	case f.role != "":
		r, err := config.ParseRole(f.role)
		if err != nil {
			return c, fmt.Errorf("--role: %w", err)
		}
		c.Role = r
	case c.ConfigPath != "":
		r, err := config.GuessRole(c.ConfigPath)
		if err != nil {
			return c, err
		}
		c.Role = r
	case f.name == "":
		return c, fmt.Errorf("say which service: --role server|client, --name NAME or -c FILE")
	}
	c = c.WithDefaults()
	return c, c.Validate()
}

func newServiceCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "service",
		Short: "Install and control the gateway or client as a system service",
		Long: `service installs twoway as a system service (a systemd unit on Linux, a
launchd daemon on macOS, a Windows service) that runs the same daemon as
'twoway server' or 'twoway client' with the given configuration file, and
starts, stops and reports on it.

On Linux the unit runs as the 'twoway' user (created by the packages; --user
to change, root when it does not exist) with only CAP_NET_ADMIN and
CAP_NET_BIND_SERVICE, a read-only system and a private /tmp; the key files
must be readable by that user. 'systemctl reload NAME' reloads certificates,
CRLs and policy (SIGHUP). Logs go to the journal (journalctl -u NAME), to
/var/log/twoway on macOS and to the event log on Windows.

Windows: VPN mode needs wintun.dll next to twoway.exe; port forwarding does
not.`,
		Example: `  sudo twoway service install -c /etc/twoway/server.toml
  sudo twoway service start --role server
  twoway service status`,
		// Runnable, so that cobra checks the arguments: a mistyped
		// subcommand is then an error instead of help and exit status 0.
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newServiceInstallCmd(), newServiceUninstallCmd(), newServiceStatusCmd(), newServiceRunCmd())
	for _, a := range []struct {
		verb, short string
		do          func(serviceManager) error
	}{
		{"start", "Start the installed service", serviceManager.Start},
		{"stop", "Stop the service (open streams drain first)", serviceManager.Stop},
		{"restart", "Stop and start the service", serviceManager.Restart},
	} {
		cmd.AddCommand(newServiceActionCmd(a.verb, a.short, a.do))
	}
	return cmd
}

func newServiceInstallCmd() *cobra.Command {
	var f serviceFlags
	cmd := &cobra.Command{
		Use:   "install -c FILE [--role server|client] [--name NAME] [--user USER]",
		Short: "Validate the configuration and install the service (enabled at boot, not started)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.config(true)
			if err != nil {
				return err
			}
			// Validate before anything talks to the service manager.
			if _, err := service.CheckConfig(c.Role, c.ConfigPath); err != nil {
				return err
			}
			m, err := newServiceManager(c)
			if err != nil {
				return err
			}
			rep, err := m.Install()
			if err != nil {
				return err
			}
			for _, w := range rep.Warnings {
				fmt.Fprintln(cmd.ErrOrStderr(), "twoway: warning:", w)
			}
			out := cmd.OutOrStdout()
			where := ""
			if rep.Path != "" {
				where = " (" + rep.Path + ")"
			}
			fmt.Fprintf(out, "installed %s%s: runs %q as %s\n", c.Name, where, c.ConfigPath, rep.User)
			fmt.Fprintf(out, "start it with: twoway service start --name %s\n", c.Name)
			return nil
		},
	}
	f.add(cmd, true)
	return cmd
}

func newServiceUninstallCmd() *cobra.Command {
	var f serviceFlags
	cmd := &cobra.Command{
		Use:   "uninstall [--role server|client] [--name NAME]",
		Short: "Stop the service and remove it from the service manager",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.config(false)
			if err != nil {
				return err
			}
			m, err := newServiceManager(c)
			if err != nil {
				return err
			}
			if err := m.Uninstall(); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "uninstalled %s\n", c.Name)
			return nil
		},
	}
	f.add(cmd, false)
	return cmd
}

func newServiceActionCmd(verb, short string, do func(serviceManager) error) *cobra.Command {
	var f serviceFlags
	cmd := &cobra.Command{
		Use:   verb + " [--role server|client] [--name NAME]",
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := f.config(false)
			if err != nil {
				return err
			}
			m, err := newServiceManager(c)
			if err != nil {
				return err
			}
			return do(m)
		},
	}
	f.add(cmd, false)
	return cmd
}

func newServiceStatusCmd() *cobra.Command {
	var f serviceFlags
	cmd := &cobra.Command{
		Use:   "status [--role server|client] [--name NAME]",
		Short: "Say whether the service is installed and running",
		Long: `status prints NAME: running, stopped, failed or not installed. Without
--role, --name or -c it reports both twoway-server and twoway-client.
For one service the exit status is 0 when it runs, 3 when it is stopped or
failed and 4 when it is not installed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var cfgs []service.Config
			if f.role == "" && f.name == "" && f.path == "" {
				for _, r := range []config.Role{config.RoleServer, config.RoleClient} {
					cfgs = append(cfgs, service.Config{Role: r}.WithDefaults())
				}
			} else {
				c, err := f.config(false)
				if err != nil {
					return err
				}
				cfgs = append(cfgs, c)
			}
			var st service.State
			for _, c := range cfgs {
				m, err := newServiceManager(c)
				if err != nil {
					return err
				}
				if st, err = m.Status(); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", c.Name, st)
			}
			if len(cfgs) > 1 {
				return nil
			}
			switch st {
			case service.StateRunning:
				return nil
			case service.StateNotInstalled:
				return exitError{code: statusExitNotInstalled}
			}
			return exitError{code: statusExitStopped}
		},
	}
	f.add(cmd, false)
	return cmd
}

// newServiceRunCmd is what the service manager runs (the unit's ExecStart,
// the plist's ProgramArguments, the Windows service's command line).
func newServiceRunCmd() *cobra.Command {
	var f serviceFlags
	cmd := &cobra.Command{
		Use:    "run --role server|client -c FILE [--name NAME]",
		Short:  "Run the daemon under the service manager (used by installed services)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.role == "" {
				return errors.New("--role is required")
			}
			c, err := f.config(true)
			if err != nil {
				return err
			}
			return service.Run(c, service.RunOptions{
				Handler: func(w io.Writer, l config.Log) (slog.Handler, error) {
					return daemon.NewHandler(w, logSettings(cmd, l))
				},
				Stderr: cmd.ErrOrStderr(),
			})
		},
	}
	f.add(cmd, false)
	return cmd
}
