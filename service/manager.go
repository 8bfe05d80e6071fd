package service

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strings"

	kservice "github.com/kardianos/service"
)

// The kardianos/service platforms twoway installs into.
const (
	PlatformSystemd = "linux-systemd"
	PlatformLaunchd = "darwin-launchd"
	PlatformWindows = "windows-service"
)

// State is what Status reports.
type State int

// Service states.
const (
	StateUnknown State = iota
	StateNotInstalled
	StateStopped
	StateRunning
	// StateFailed: systemd gave up on it (it exited with an error and
	// is not being restarted).
	StateFailed
)

// String is the word `twoway service status` prints.
func (s State) String() string {
	switch s {
	case StateNotInstalled:
		return "not installed"
	case StateStopped:
		return "stopped"
	case StateRunning:
		return "running"
	case StateFailed:
		return "failed"
	}
	return "unknown"
}

// InstallReport says what Install did.
type InstallReport struct {
	// Path is the service definition written (unit file, plist); empty
	// on Windows, where the definition lives in the registry.
	Path string
	// User is the account the service runs as.
	User string
	// Warnings are problems that do not stop the installation but will
	// probably stop the service (unreadable key, user missing).
	Warnings []string
}

// Manager installs and controls one service through this host's service
// manager.
type Manager struct {
	cfg Config
	sys system
}

// system is what a Manager needs from the host; tests substitute fakes.
type system struct {
	platform   string // kardianos' name for the service manager
	newService func(kservice.Interface, *kservice.Config) (kservice.Service, error)
	exists     func(path string) (bool, error)
	remove     func(path string) error
	mkdirAll   func(path string, perm fs.FileMode) error
	lookupUser func(name string) (*user.User, error)
	// readable reports whether u can read path (Unix permissions).
	readable func(path string, u *user.User) (bool, error)
}

func hostSystem() system {
	return system{
		platform:   kservice.Platform(),
		newService: kservice.New,
		exists: func(path string) (bool, error) {
			_, err := os.Stat(path)
			if errors.Is(err, fs.ErrNotExist) {
				return false, nil
			}
			return err == nil, err
		},
		remove:     os.Remove,
		mkdirAll:   os.MkdirAll,
		lookupUser: user.Lookup,
		readable:   readableBy,
	}
}

// NewManager returns a Manager for c on this host. Executable defaults to
// the running binary. Only Install needs ConfigPath.
func NewManager(c Config) (*Manager, error) {
	if c.Executable == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("find the twoway executable: %w", err)
		}
		c.Executable = exe
	}
	if err := c.WithDefaults().Validate(); err != nil {
		return nil, err
	}
	return newManager(c, hostSystem()), nil
}

func newManager(c Config, sys system) *Manager {
	return &Manager{cfg: c.WithDefaults(), sys: sys}
}

// Platform names the host's service manager as kardianos/service does.
func (m *Manager) Platform() string { return m.sys.platform }

func (m *Manager) supported() error {
	switch m.sys.platform {
	case PlatformSystemd, PlatformLaunchd, PlatformWindows:
		return nil
	}
	return fmt.Errorf("%w: this host's service manager is %q; twoway installs into systemd, launchd and Windows services (elsewhere run 'twoway %s -c FILE' under your init system)",
		ErrUnsupported, m.sys.platform, m.cfg.Role)
}

// definitionPaths are where the service's definition may live, ours (the
// one Install writes) first. Windows keeps services in the registry, and
// kardianos reports a missing one reliably there.
func definitionPaths(platform, name string) []string {
	switch platform {
	case PlatformSystemd:
		// /etc is where Install writes; the others are the packages'.
		return []string{
			"/etc/systemd/system/" + name + ".service",
			"/usr/lib/systemd/system/" + name + ".service",
			"/lib/systemd/system/" + name + ".service",
		}
	case PlatformLaunchd:
		return []string{LaunchdPlistPath(name)}
	}
	return nil
}

// findDefinition returns the path of the first definition found, or "".
func (m *Manager) findDefinition() (string, error) {
	for _, p := range definitionPaths(m.sys.platform, m.cfg.Name) {
		ok, err := m.sys.exists(p)
		if err != nil {
			return "", fmt.Errorf("check %s: %w", p, err)
		}
		if ok {
			return p, nil
		}
	}
	return "", nil
}

// ours reports whether path is a definition Install writes (rather than
// one a package installed).
func (m *Manager) ours(path string) bool {
	paths := definitionPaths(m.sys.platform, m.cfg.Name)
	return len(paths) > 0 && path == paths[0]
}

// kardianosConfig is the kardianos/service configuration that installs c
// on platform: our own systemd unit or launchd plist instead of the
// library's templates, or Windows recovery that restarts after 2 s.
func kardianosConfig(c Config, platform string) (*kservice.Config, error) {
	kc := &kservice.Config{
		Name:        c.Name,
		DisplayName: c.Name,
		Description: c.Description,
		Executable:  c.Executable,
		Arguments:   c.Arguments(),
		Option:      kservice.KeyValue{},
	}
	switch platform {
	case PlatformSystemd:
		unit, err := SystemdUnit(c)
		if err != nil {
			return nil, err
		}
		kc.Option["SystemdScript"] = unit
	case PlatformLaunchd:
		plist, err := LaunchdPlist(c)
		if err != nil {
			return nil, err
		}
		kc.Option["LaunchdConfig"] = plist
	case PlatformWindows:
		if err := c.complete(); err != nil {
			return nil, err
		}
		kc.DisplayName = "twoway " + string(c.Role) + " (" + c.Name + ")"
		kc.Option["StartType"] = "automatic"
		kc.Option["OnFailure"] = "restart"
		kc.Option["OnFailureDelayDuration"] = "2s"
		kc.Option["OnFailureResetPeriod"] = 60
	default:
		return nil, fmt.Errorf("%w: %q", ErrUnsupported, platform)
	}
	return kc, nil
}

// control returns a kardianos Service good for start, stop, status and
// uninstall, which need only the name.
func (m *Manager) control() (kservice.Service, error) {
	if err := m.supported(); err != nil {
		return nil, err
	}
	svc, err := m.sys.newService(noProgram{}, &kservice.Config{Name: m.cfg.Name, DisplayName: m.cfg.Name})
	if err != nil {
		return nil, fmt.Errorf("service %s: %w", m.cfg.Name, err)
	}
	return svc, nil
}

// noProgram satisfies kardianos' Interface for a Service that is only
// controlled, never run, in this process.
type noProgram struct{}

func (noProgram) Start(kservice.Service) error { return nil }
func (noProgram) Stop(kservice.Service) error  { return nil }

// Install validates the configuration file, then registers the service
// with the service manager, enabled at boot but not started. On Linux the
// unit runs as Config.User, falling back to root with a warning when that
// account does not exist.
func (m *Manager) Install() (InstallReport, error) {
	c := m.cfg
	var rep InstallReport
	if err := c.complete(); err != nil {
		return rep, err
	}
	// Validate everything before touching the system.
	files, err := CheckConfig(c.Role, c.ConfigPath)
	if err != nil {
		return rep, err
	}
	if err := m.supported(); err != nil {
		return rep, err
	}
	if existing, err := m.findDefinition(); err != nil {
		return rep, err
	} else if existing != "" {
		if m.ours(existing) {
			return rep, fmt.Errorf("%s: %w (%s); run 'twoway service uninstall --name %s' first", c.Name, ErrAlreadyInstalled, existing, c.Name)
		}
		return rep, fmt.Errorf("%s: %w by a package (%s), which reads /etc/twoway/%s.toml; use it with 'systemctl enable --now %s', or install under another --name",
			c.Name, ErrAlreadyInstalled, existing, c.Role, c.Name)
	}

	switch m.sys.platform {
	case PlatformSystemd:
		// Without [vpn] the daemon needs no CAP_NET_ADMIN: leave it out.
		c.NoNetAdmin = !files.VPN
		if !c.runsAsRoot() {
			_, err := m.sys.lookupUser(c.User)
			var unknown user.UnknownUserError
			if errors.As(err, &unknown) {
				rep.Warnings = append(rep.Warnings, fmt.Sprintf(
					"user %s does not exist, so the service runs as root; create it with 'useradd --system --no-create-home --shell /usr/sbin/nologin %s' and install again",
					c.User, c.User))
				c.User = ""
			} else if err != nil {
				return rep, fmt.Errorf("look up user %s: %w", c.User, err)
			}
		}
		rep.User = c.User
		if c.runsAsRoot() {
			rep.User = "root"
		}
		if u, err := m.sys.lookupUser(rep.User); err == nil {
			for _, s := range files.Secrets {
				if ok, err := m.sys.readable(s, u); err == nil && !ok {
					rep.Warnings = append(rep.Warnings, fmt.Sprintf(
						"%s is not readable by %s, whom the service runs as (without CAP_DAC_OVERRIDE); fix with 'chown %s %s'",
						s, rep.User, rep.User, s))
				}
			}
		}
		// ProtectHome= and PrivateTmp= hide these from the service.
		var hiddenPaths []string
		for _, p := range append(append([]string{c.Executable, c.ConfigPath}, files.Secrets...), files.Public...) {
			if hiddenFromUnit(p) {
				hiddenPaths = append(hiddenPaths, p)
			}
		}
		if len(hiddenPaths) > 0 {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf(
				"the unit hides /home, /root, /run/user, /tmp and /var/tmp from the service (ProtectHome/PrivateTmp), and it needs %s; move them, e.g. to /usr/local/bin and /etc/twoway",
				strings.Join(hiddenPaths, ", ")))
		}
		// ProtectSystem=strict: only StateDir is writable.
		if d := files.StateDir; d != "" && filepath.Clean(d) != StateDir {
			rep.Warnings = append(rep.Warnings, fmt.Sprintf(
				"state_dir %s is read-only for the service (ProtectSystem=strict; only %s is writable): leave state_dir unset, or allow it with 'systemctl edit %s' and ReadWritePaths=%s",
				d, StateDir, c.Name, d))
		}
	case PlatformLaunchd:
		rep.User = "root"
		if err := m.sys.mkdirAll(LaunchdLogDir, 0o755); err != nil {
			return rep, fmt.Errorf("create %s: %w", LaunchdLogDir, err)
		}
	case PlatformWindows:
		rep.User = "LocalSystem"
	}

	kc, err := kardianosConfig(c, m.sys.platform)
	if err != nil {
		return rep, err
	}
	svc, err := m.sys.newService(noProgram{}, kc)
	if err != nil {
		return rep, fmt.Errorf("service %s: %w", c.Name, err)
	}
	if paths := definitionPaths(m.sys.platform, c.Name); len(paths) > 0 {
		rep.Path = paths[0]
	}
	if err := svc.Install(); err != nil {
		// kardianos writes the file before enabling the unit; do not
		// leave a half-installed service behind.
		if rep.Path != "" {
			if ok, _ := m.sys.exists(rep.Path); ok {
				m.sys.remove(rep.Path)
			}
		}
		return rep, fmt.Errorf("install %s: %w", c.Name, err)
	}
	return rep, nil
}

// Uninstall stops the service if it runs and removes it from the service
// manager. A unit that a package installed is left to the package manager.
func (m *Manager) Uninstall() error {
	st, err := m.Status()
	if err != nil {
		return err
	}
	if st == StateNotInstalled {
		return fmt.Errorf("%s: %w", m.cfg.Name, ErrNotInstalled)
	}
	if def, err := m.findDefinition(); err != nil {
		return err
	} else if def != "" && !m.ours(def) {
		return fmt.Errorf("%s was installed by a package (%s); disable it with 'systemctl disable --now %s' or remove the package",
			m.cfg.Name, def, m.cfg.Name)
	}
	svc, err := m.control()
	if err != nil {
		return err
	}
	if st == StateRunning {
		if err := svc.Stop(); err != nil {
			return fmt.Errorf("stop %s: %w", m.cfg.Name, err)
		}
	}
	if err := svc.Uninstall(); err != nil {
		return fmt.Errorf("uninstall %s: %w", m.cfg.Name, err)
	}
	return nil
}

// Start asks the service manager to start the service.
func (m *Manager) Start() error { return m.act("start", kservice.Service.Start) }

// Stop asks the service manager to stop the service (it drains first).
func (m *Manager) Stop() error { return m.act("stop", kservice.Service.Stop) }

// Restart asks the service manager to stop and start the service.
func (m *Manager) Restart() error { return m.act("restart", kservice.Service.Restart) }

func (m *Manager) act(verb string, f func(kservice.Service) error) error {
	st, err := m.Status()
	if err != nil {
		return err
	}
	if st == StateNotInstalled {
		return fmt.Errorf("%s %s: %w", verb, m.cfg.Name, ErrNotInstalled)
	}
	svc, err := m.control()
	if err != nil {
		return err
	}
	if err := f(svc); err != nil {
		return fmt.Errorf("%s %s: %w", verb, m.cfg.Name, err)
	}
	return nil
}

// Status reports whether the service is installed and running. kardianos
// alone cannot tell "not installed" from "stopped" everywhere (systemd's
// is-active says "inactive" for both, kardianos/service#201), so where the
// definition is a file its presence decides first.
func (m *Manager) Status() (State, error) {
	if err := m.supported(); err != nil {
		return StateUnknown, err
	}
	haveDef := false
	if len(definitionPaths(m.sys.platform, m.cfg.Name)) > 0 {
		def, err := m.findDefinition()
		if err != nil {
			return StateUnknown, err
		}
		if def == "" {
			return StateNotInstalled, nil
		}
		haveDef = true
	}
	svc, err := m.control()
	if err != nil {
		return StateUnknown, err
	}
	st, err := mapStatus(svc.Status())
	if err != nil {
		return st, fmt.Errorf("status of %s: %w", m.cfg.Name, err)
	}
	if st == StateNotInstalled && haveDef {
		// The definition is there, so it is installed: kardianos' systemd
		// backend says "not installed" for every is-active answer it does
		// not know, among them "deactivating" (the gateway draining for
		// up to 35 s on stop) and "reloading".
		return StateUnknown, nil
	}
	return st, nil
}

// mapStatus turns kardianos' answer into a State.
func mapStatus(st kservice.Status, err error) (State, error) {
	switch {
	case errors.Is(err, kservice.ErrNotInstalled):
		return StateNotInstalled, nil
	// kardianos' systemd backend reports the failed state only as this
	// unexported error text (service_systemd_linux.go, Status).
	case err != nil && err.Error() == "service in failed state":
		return StateFailed, nil
	case err != nil:
		return StateUnknown, err
	case st == kservice.StatusRunning:
		return StateRunning, nil
	case st == kservice.StatusStopped:
		return StateStopped, nil
	}
	return StateUnknown, nil
}

// hiddenFromUnit reports whether the systemd unit hides path from the
// service (ProtectHome=, PrivateTmp=).
func hiddenFromUnit(path string) bool {
	for _, dir := range []string{"/home/", "/root/", "/run/user/", "/tmp/", "/var/tmp/"} {
		if strings.HasPrefix(path, dir) {
			return true
		}
	}
	return false
}
