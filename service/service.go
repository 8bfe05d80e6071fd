// Package service runs the twoway gateway or client under the operating
// system's service manager (systemd, launchd, the Windows service control
// manager) and installs it there. It is glue over github.com/kardianos/service
// around exactly what the foreground commands run: daemon.Load builds the
// daemon from a configuration file, daemon.Start starts it (and drops root),
// daemon.HandleSignal reloads on SIGHUP where the platform has it or begins
// the drain. What is the service's own is the kardianos Interface
// (Program), the bound on stopping, the signals a service listens to and
// the Windows event log.
//
// The service definitions (the systemd unit, the launchd plist) are produced
// by pure functions, SystemdUnit and LaunchdPlist, so that the files the
// packages ship and the files `twoway service install` writes are the same
// and can be tested without a service manager.
package service

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/twoway/twoway/config"
)

// DefaultName is the service name used when none is given: twoway-server or
// twoway-client.
func DefaultName(r config.Role) string { return "twoway-" + string(r) }

// DefaultUser is the account the systemd unit runs as unless told otherwise;
// the packages create it.
const DefaultUser = "twoway"

// StateDir is the daemon's state directory on Linux (systemd's
// StateDirectory=twoway).
const StateDir = "/var/lib/twoway"

// Errors callers branch on.
var (
	// ErrNotInstalled: the service is not known to the service manager.
	ErrNotInstalled = errors.New("not installed")
	// ErrAlreadyInstalled: install found an existing definition.
	ErrAlreadyInstalled = errors.New("already installed")
	// ErrUnsupported: this host's service manager is not one twoway
	// installs into (Linux without systemd, BSDs).
	ErrUnsupported = errors.New("unsupported service manager")
	// ErrStopTimeout: the daemon did not finish draining within the bound.
	ErrStopTimeout = errors.New("daemon did not stop in time")
	// ErrExited: the daemon stopped although nobody asked it to.
	ErrExited = errors.New("daemon stopped unexpectedly")
)

// Config describes one service: which daemon, under what name, with which
// configuration file and binary.
type Config struct {
	// Role is the daemon to run (required).
	Role config.Role
	// Name is the service name (unit, launchd label, Windows service);
	// default DefaultName(Role).
	Name string
	// Description is the one-line description; default per role.
	Description string
	// ConfigPath is the absolute path of server.toml or client.toml.
	ConfigPath string
	// Executable is the absolute path of the twoway binary the service
	// manager starts.
	Executable string
	// User is the account the systemd unit runs as; "" or "root" means
	// root. Ignored on macOS and Windows, where the daemon runs as root /
	// LocalSystem because it creates TUN devices and routes.
	User string
	// NoNetAdmin leaves CAP_NET_ADMIN and /dev/net/tun out of the systemd
	// unit: the configuration has no [vpn], so the daemon never makes a
	// TUN device or a route. Install sets it from the configuration; the
	// packaged units keep CAP_NET_ADMIN (the daemon drops it at start
	// when it has no [vpn]).
	NoNetAdmin bool
}

// nameRE keeps names valid as a systemd unit name, a launchd label, a
// Windows service name and a file name at once.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$`)

// userRE is the portable POSIX account name (useradd's default rule).
var userRE = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)

// WithDefaults fills in Name and Description.
func (c Config) WithDefaults() Config {
	if c.Name == "" && c.Role != "" {
		c.Name = DefaultName(c.Role)
	}
	if c.Description == "" {
		switch c.Role {
		case config.RoleServer:
			c.Description = "twoway gateway (mutual-TLS tunnel server)"
		case config.RoleClient:
			c.Description = "twoway client (mutual-TLS tunnel)"
		}
	}
	return c
}

// Validate checks the fields that are set (after WithDefaults): the role,
// name and user, and that nothing holds a control character. Installing and
// rendering also need the role, ConfigPath and Executable (see complete);
// controlling an installed service needs only the name.
func (c Config) Validate() error {
	if c.Role != "" {
		if _, err := config.ParseRole(string(c.Role)); err != nil {
			return err
		}
	}
	if !nameRE.MatchString(c.Name) {
		return fmt.Errorf("service name %q: use letters, digits, '-', '_', '.' or '@' (at most 64)", c.Name)
	}
	if c.User != "" && !userRE.MatchString(c.User) {
		return fmt.Errorf("user %q: not a valid account name", c.User)
	}
	for _, f := range []struct{ what, v string }{
		{"description", c.Description}, {"configuration path", c.ConfigPath}, {"executable path", c.Executable},
	} {
		// Control characters would break the unit's line structure; "{{"
		// would be read as an action by kardianos' template engine, which
		// renders the definitions we hand it.
		if strings.ContainsAny(f.v, "\x00\r\n") || strings.Contains(f.v, "{{") {
			return fmt.Errorf("%s %q: contains a control character or \"{{\"", f.what, f.v)
		}
	}
	return nil
}

// complete is Validate plus what a service definition needs.
func (c Config) complete() error {
	if err := c.Validate(); err != nil {
		return err
	}
	switch {
	case c.Role == "":
		return fmt.Errorf("service %s: no role (server or client)", c.Name)
	case c.ConfigPath == "":
		return fmt.Errorf("service %s: no configuration file", c.Name)
	case c.Executable == "":
		return fmt.Errorf("service %s: no executable", c.Name)
	}
	return nil
}

// runsAsRoot reports whether the unit runs as root.
func (c Config) runsAsRoot() bool { return c.User == "" || c.User == "root" }

// Arguments is the argument vector after the executable that the service
// manager runs: the hidden `twoway service run` command with everything it
// needs, so the service does not depend on the working directory or the
// environment.
func (c Config) Arguments() []string {
	return []string{"service", "run", "--role", string(c.Role), "--name", c.Name, "-c", c.ConfigPath}
}

// ConfigFiles are the files and directories a configuration makes the
// daemon use.
type ConfigFiles struct {
	// Secrets are keys and password files: the service account must be
	// able to read them, and nobody else.
	Secrets []string
	// Public are certificates, CA bundles and CRLs.
	Public []string
	// StateDir is where a VPN daemon writes its state ("" without VPN).
	StateDir string
	// VPN: the configuration enables VPN mode, which needs CAP_NET_ADMIN.
	VPN bool
}

// CheckConfig loads and validates the configuration file for role exactly
// as the daemon will, without touching the system, and returns the files it
// names, so that installers can check the service account can reach them.
// Errors name file, line and key.
func CheckConfig(role config.Role, path string) (ConfigFiles, error) {
	switch role {
	case config.RoleServer:
		cfg, err := config.LoadServer(path)
		if err != nil {
			return ConfigFiles{}, err
		}
		f := ConfigFiles{
			Secrets: nonEmpty(cfg.TLS.Key, cfg.TLS.KeyPasswordFile),
			Public:  nonEmpty(append([]string{cfg.TLS.Cert, cfg.TLS.ClientCA}, cfg.TLS.CRLs...)...),
		}
		if cfg.VPN.Enable {
			f.StateDir, f.VPN = cfg.VPN.StateDir, true
		}
		return f, nil
	case config.RoleClient:
		cfg, err := config.LoadClient(path)
		if err != nil {
			return ConfigFiles{}, err
		}
		f := ConfigFiles{
			Secrets: nonEmpty(cfg.TLS.Key, cfg.TLS.KeyPasswordFile, cfg.SOCKS.PasswordFile),
			Public:  nonEmpty(cfg.TLS.Cert, cfg.TLS.ServerCA),
		}
		if cfg.VPN.Enable {
			f.StateDir, f.VPN = cfg.VPN.StateDir, true
		}
		return f, nil
	}
	_, err := config.ParseRole(string(role))
	return ConfigFiles{}, err
}

func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}
