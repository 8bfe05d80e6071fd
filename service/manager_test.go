package service

import (
	"errors"
	"io/fs"
	"os"
	"os/user"
	"reflect"
	"strings"
	"testing"

	kservice "github.com/kardianos/service"

	"github.com/twoway/twoway/config"
)

// fakeService is kardianos' Service with scripted answers; it records the
// actions asked of it.
type fakeService struct {
	host      *fakeHost
	status    kservice.Status
	statusErr error
	failOn    string // action that fails
}

func (f *fakeService) do(action string) error {
	f.host.actions = append(f.host.actions, action)
	if action == f.failOn {
		return errors.New(action + " failed")
	}
	return nil
}

func (f *fakeService) Run() error     { return f.do("run") }
func (f *fakeService) Start() error   { return f.do("start") }
func (f *fakeService) Stop() error    { return f.do("stop") }
func (f *fakeService) Restart() error { return f.do("restart") }
func (f *fakeService) Install() error {
	// Like kardianos: the definition file appears before enabling can fail.
	if p := definitionPaths(f.host.platform, f.host.name); len(p) > 0 {
		f.host.files[p[0]] = true
	}
	return f.do("install")
}
func (f *fakeService) Uninstall() error                             { return f.do("uninstall") }
func (f *fakeService) Logger(chan<- error) (kservice.Logger, error) { return nil, nil }
func (f *fakeService) SystemLogger(chan<- error) (kservice.Logger, error) {
	return nil, nil
}
func (f *fakeService) String() string   { return f.host.name }
func (f *fakeService) Platform() string { return f.host.platform }
func (f *fakeService) Status() (kservice.Status, error) {
	f.host.actions = append(f.host.actions, "status")
	return f.status, f.statusErr
}

// fakeHost is a system with a file set, a user table and one service.
type fakeHost struct {
	platform string
	name     string // of the service under test
	files    map[string]bool
	users    map[string]*user.User
	svc      fakeService
	cfg      *kservice.Config // the last configuration newService got
	actions  []string
	mkdirs   []string
	readable bool
}

func newFakeHost(platform string) *fakeHost {
	h := &fakeHost{platform: platform, files: map[string]bool{}, readable: true,
		users: map[string]*user.User{"root": {Username: "root", Uid: "0", Gid: "0"}}}
	h.svc.host = h
	return h
}

func (h *fakeHost) system() system {
	return system{
		platform: h.platform,
		newService: func(_ kservice.Interface, c *kservice.Config) (kservice.Service, error) {
			h.cfg = c
			return &h.svc, nil
		},
		exists: func(p string) (bool, error) { return h.files[p], nil },
		remove: func(p string) error { delete(h.files, p); return nil },
		mkdirAll: func(p string, _ fs.FileMode) error {
			h.mkdirs = append(h.mkdirs, p)
			return nil
		},
		lookupUser: func(name string) (*user.User, error) {
			if u, ok := h.users[name]; ok {
				return u, nil
			}
			return nil, user.UnknownUserError(name)
		},
		readable: func(string, *user.User) (bool, error) { return h.readable, nil },
	}
}

func (h *fakeHost) manager(c Config) *Manager {
	m := newManager(c, h.system())
	h.name = m.cfg.Name
	return m
}

func TestServiceMapStatus(t *testing.T) {
	for _, tc := range []struct {
		st      kservice.Status
		err     error
		want    State
		wantErr bool
	}{
		{kservice.StatusRunning, nil, StateRunning, false},
		{kservice.StatusStopped, nil, StateStopped, false},
		{kservice.StatusUnknown, kservice.ErrNotInstalled, StateNotInstalled, false},
		{kservice.StatusUnknown, errors.New("service in failed state"), StateFailed, false},
		{kservice.StatusUnknown, errors.New("systemctl: permission denied"), StateUnknown, true},
		{kservice.StatusUnknown, nil, StateUnknown, false},
	} {
		got, err := mapStatus(tc.st, tc.err)
		if got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("mapStatus(%v, %v) = %v, %v; want %v (error %v)", tc.st, tc.err, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestServiceStatus(t *testing.T) {
	const unit = "/etc/systemd/system/twoway-server.service"
	for _, tc := range []struct {
		name      string
		platform  string
		files     []string
		status    kservice.Status
		statusErr error
		want      State
		asked     bool // whether kardianos was asked at all
	}{
		// systemd says "inactive" for a unit that does not exist, and
		// kardianos maps that to stopped: the missing file decides.
		{"no unit", PlatformSystemd, nil, kservice.StatusStopped, nil, StateNotInstalled, false},
		{"stopped", PlatformSystemd, []string{unit}, kservice.StatusStopped, nil, StateStopped, true},
		{"running", PlatformSystemd, []string{unit}, kservice.StatusRunning, nil, StateRunning, true},
		{"failed", PlatformSystemd, []string{unit}, kservice.StatusUnknown, errors.New("service in failed state"), StateFailed, true},
		// kardianos answers "not installed" for is-active states it does
		// not know, such as "deactivating" while the daemon drains: the
		// unit file says otherwise.
		{"deactivating", PlatformSystemd, []string{unit}, kservice.StatusUnknown, kservice.ErrNotInstalled, StateUnknown, true},
		{"packaged unit", PlatformSystemd, []string{"/usr/lib/systemd/system/twoway-server.service"}, kservice.StatusRunning, nil, StateRunning, true},
		{"no plist", PlatformLaunchd, nil, kservice.StatusStopped, nil, StateNotInstalled, false},
		{"plist, stopped", PlatformLaunchd, []string{"/Library/LaunchDaemons/twoway-server.plist"}, kservice.StatusStopped, nil, StateStopped, true},
		// Windows: the service control manager knows; kardianos says so.
		{"windows missing", PlatformWindows, nil, kservice.StatusUnknown, kservice.ErrNotInstalled, StateNotInstalled, true},
		{"windows running", PlatformWindows, nil, kservice.StatusRunning, nil, StateRunning, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newFakeHost(tc.platform)
			for _, f := range tc.files {
				h.files[f] = true
			}
			h.svc.status, h.svc.statusErr = tc.status, tc.statusErr
			got, err := h.manager(Config{Role: config.RoleServer}).Status()
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("Status = %v, want %v", got, tc.want)
			}
			if asked := reflect.DeepEqual(h.actions, []string{"status"}); asked != tc.asked {
				t.Errorf("kardianos actions %v; asked = %v, want %v", h.actions, asked, tc.asked)
			}
		})
	}
}

func TestServiceStatusError(t *testing.T) {
	h := newFakeHost(PlatformSystemd)
	h.files["/etc/systemd/system/twoway-client.service"] = true
	h.svc.statusErr = errors.New("Failed to connect to bus")
	st, err := h.manager(Config{Role: config.RoleClient}).Status()
	if st != StateUnknown || err == nil || !strings.Contains(err.Error(), "twoway-client") {
		t.Fatalf("Status = %v, %v; want unknown with an error naming the service", st, err)
	}
}

func TestServiceUnsupportedPlatform(t *testing.T) {
	h := newFakeHost("unix-systemv")
	m := h.manager(Config{Role: config.RoleServer})
	if _, err := m.Status(); !errors.Is(err, ErrUnsupported) {
		t.Errorf("Status: %v, want ErrUnsupported", err)
	}
	if err := m.Start(); !errors.Is(err, ErrUnsupported) {
		t.Errorf("Start: %v, want ErrUnsupported", err)
	}
	if len(h.actions) > 0 {
		t.Errorf("kardianos was asked to %v", h.actions)
	}
}

func installConfig(t *testing.T, role config.Role) Config {
	server, client := configs(t)
	c := Config{Role: role, ConfigPath: server, Executable: "/usr/bin/twoway", User: "twoway"}
	if role == config.RoleClient {
		c.ConfigPath = client
	}
	return c
}

func TestServiceInstallSystemd(t *testing.T) {
	h := newFakeHost(PlatformSystemd)
	h.users["twoway"] = &user.User{Username: "twoway", Uid: "998", Gid: "998"}
	c := installConfig(t, config.RoleServer)
	rep, err := h.manager(c).Install()
	if err != nil {
		t.Fatal(err)
	}
	want := c.WithDefaults()
	want.NoNetAdmin = true // the configuration has no [vpn]
	unit, err := SystemdUnit(want)
	if err != nil {
		t.Fatal(err)
	}
	if h.cfg.Option["SystemdScript"] != unit {
		t.Errorf("kardianos got unit:\n%v\nwant:\n%s", h.cfg.Option["SystemdScript"], unit)
	}
	if h.cfg.Executable != "/usr/bin/twoway" || !reflect.DeepEqual(h.cfg.Arguments, want.Arguments()) || h.cfg.Name != "twoway-server" {
		t.Errorf("kardianos config %+v", h.cfg)
	}
	if !reflect.DeepEqual(h.actions, []string{"install"}) {
		t.Errorf("actions %v, want install only (not started)", h.actions)
	}
	if rep.Path != "/etc/systemd/system/twoway-server.service" || rep.User != "twoway" || len(rep.Warnings) != 1 {
		t.Errorf("report %+v", rep)
	}
	// The configuration and every file it names live in t.TempDir(),
	// which PrivateTmp hides: one warning naming them all.
	if len(rep.Warnings) == 1 {
		for _, want := range []string{"PrivateTmp", "server.toml", "gateway.key", "gateway.crt", "client-ca.crt"} {
			if !strings.Contains(rep.Warnings[0], want) {
				t.Errorf("warning %q lacks %q", rep.Warnings[0], want)
			}
		}
	}

	// Again: it exists now.
	if _, err := h.manager(c).Install(); !errors.Is(err, ErrAlreadyInstalled) {
		t.Errorf("second Install: %v, want ErrAlreadyInstalled", err)
	}
}

func TestServiceInstallUserMissing(t *testing.T) {
	h := newFakeHost(PlatformSystemd)
	rep, err := h.manager(installConfig(t, config.RoleClient)).Install()
	if err != nil {
		t.Fatal(err)
	}
	if rep.User != "root" || len(rep.Warnings) == 0 || !strings.Contains(rep.Warnings[0], "user twoway does not exist") {
		t.Errorf("report %+v, want root with a warning", rep)
	}
	if unit := h.cfg.Option["SystemdScript"].(string); strings.Contains(unit, "User=") {
		t.Errorf("unit still names a user:\n%s", unit)
	}
}

func TestServiceInstallUnreadableKey(t *testing.T) {
	h := newFakeHost(PlatformSystemd)
	h.users["twoway"] = &user.User{Username: "twoway", Uid: "998", Gid: "998"}
	h.readable = false
	c := installConfig(t, config.RoleServer)
	rep, err := h.manager(c).Install()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, w := range rep.Warnings {
		found = found || strings.Contains(w, "gateway.key is not readable by twoway") && strings.Contains(w, "chown twoway")
	}
	if !found {
		t.Errorf("warnings %q lack the key", rep.Warnings)
	}
}

func TestServiceInstallInvalidConfig(t *testing.T) {
	h := newFakeHost(PlatformSystemd)
	path := badConfig(t)
	_, err := h.manager(Config{Role: config.RoleServer, ConfigPath: path, Executable: "/usr/bin/twoway"}).Install()
	var ce *config.Error
	if !errors.As(err, &ce) || ce.Line != 3 || ce.Key != "listen" || !strings.HasPrefix(err.Error(), path+":3: listen: ") {
		t.Fatalf("Install error %v, want %s:3: listen: ...", err, path)
	}
	if h.cfg != nil || len(h.actions) > 0 || len(h.files) > 0 {
		t.Errorf("the system was touched: actions %v, files %v", h.actions, h.files)
	}
}

func TestServiceInstallPackagedUnit(t *testing.T) {
	h := newFakeHost(PlatformSystemd)
	h.files["/usr/lib/systemd/system/twoway-server.service"] = true
	h.svc.status = kservice.StatusStopped
	m := h.manager(installConfig(t, config.RoleServer))
	if _, err := m.Install(); !errors.Is(err, ErrAlreadyInstalled) || !strings.Contains(err.Error(), "package") {
		t.Errorf("Install: %v, want already installed by a package", err)
	}
	if err := m.Uninstall(); err == nil || !strings.Contains(err.Error(), "package") {
		t.Errorf("Uninstall: %v, want a refusal naming the package", err)
	}
	for _, a := range h.actions {
		if a == "install" || a == "uninstall" {
			t.Errorf("kardianos was asked to %s", a)
		}
	}
}

func TestServiceInstallFailureLeavesNothing(t *testing.T) {
	h := newFakeHost(PlatformSystemd)
	h.svc.failOn = "install"
	_, err := h.manager(installConfig(t, config.RoleServer)).Install()
	if err == nil || !strings.Contains(err.Error(), "install twoway-server") {
		t.Fatalf("Install: %v", err)
	}
	if len(h.files) > 0 {
		t.Errorf("left behind %v", h.files)
	}
}

func TestServiceInstallLaunchd(t *testing.T) {
	h := newFakeHost(PlatformLaunchd)
	c := installConfig(t, config.RoleClient)
	rep, err := h.manager(c).Install()
	if err != nil {
		t.Fatal(err)
	}
	plist, _ := LaunchdPlist(c.WithDefaults())
	if h.cfg.Option["LaunchdConfig"] != plist || h.cfg.Option["SystemdScript"] != nil {
		t.Errorf("kardianos options %v", h.cfg.Option)
	}
	if !reflect.DeepEqual(h.mkdirs, []string{"/var/log/twoway"}) || rep.Path != "/Library/LaunchDaemons/twoway-client.plist" || rep.User != "root" {
		t.Errorf("mkdirs %v, report %+v", h.mkdirs, rep)
	}
}

func TestServiceInstallWindows(t *testing.T) {
	h := newFakeHost(PlatformWindows)
	c := installConfig(t, config.RoleServer)
	rep, err := h.manager(c).Install()
	if err != nil {
		t.Fatal(err)
	}
	o := h.cfg.Option
	if o["StartType"] != "automatic" || o["OnFailure"] != "restart" || o["OnFailureDelayDuration"] != "2s" {
		t.Errorf("Windows options %v", o)
	}
	if !reflect.DeepEqual(h.cfg.Arguments, c.WithDefaults().Arguments()) || rep.Path != "" || rep.User != "LocalSystem" {
		t.Errorf("config %+v, report %+v", h.cfg, rep)
	}
}

func TestServiceUninstallStopsFirst(t *testing.T) {
	h := newFakeHost(PlatformSystemd)
	h.files["/etc/systemd/system/twoway-server.service"] = true
	h.svc.status = kservice.StatusRunning
	if err := h.manager(Config{Role: config.RoleServer}).Uninstall(); err != nil {
		t.Fatal(err)
	}
	if want := []string{"status", "stop", "uninstall"}; !reflect.DeepEqual(h.actions, want) {
		t.Errorf("actions %v, want %v", h.actions, want)
	}
}

func TestServiceControlNotInstalled(t *testing.T) {
	h := newFakeHost(PlatformSystemd)
	m := h.manager(Config{Role: config.RoleClient})
	for name, f := range map[string]func() error{"start": m.Start, "stop": m.Stop, "restart": m.Restart, "uninstall": m.Uninstall} {
		if err := f(); !errors.Is(err, ErrNotInstalled) {
			t.Errorf("%s: %v, want ErrNotInstalled", name, err)
		}
	}
	if len(h.actions) > 0 {
		t.Errorf("kardianos was asked to %v", h.actions)
	}
}

func TestServiceControl(t *testing.T) {
	h := newFakeHost(PlatformSystemd)
	h.files["/etc/systemd/system/edge.service"] = true
	m := h.manager(Config{Role: config.RoleServer, Name: "edge"})
	for _, f := range []func() error{m.Start, m.Restart, m.Stop} {
		if err := f(); err != nil {
			t.Fatal(err)
		}
	}
	if want := []string{"status", "start", "status", "restart", "status", "stop"}; !reflect.DeepEqual(h.actions, want) {
		t.Errorf("actions %v, want %v", h.actions, want)
	}
	h.svc.failOn = "start"
	if err := m.Start(); err == nil || !strings.Contains(err.Error(), "start edge: start failed") {
		t.Errorf("Start: %v", err)
	}
}

// TestServiceInstallStateDirOutsideUnit: ProtectSystem=strict leaves only
// /var/lib/twoway writable, so a VPN daemon with another state_dir could
// not record its leases or its TUN changes.
func TestServiceInstallStateDirOutsideUnit(t *testing.T) {
	h := newFakeHost(PlatformSystemd)
	h.users["twoway"] = &user.User{Username: "twoway", Uid: "998", Gid: "998"}
	c := installConfig(t, config.RoleServer)
	data, err := os.ReadFile(c.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	vpn := "[vpn]\nenable = true\nipv4 = \"198.18.100.0/24\"\nstate_dir = \"/srv/twoway\"\n"
	if err := os.WriteFile(c.ConfigPath, append(data, vpn...), 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err := h.manager(c).Install()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, w := range rep.Warnings {
		found = found || strings.Contains(w, "state_dir /srv/twoway is read-only") && strings.Contains(w, "ReadWritePaths=/srv/twoway")
	}
	if !found {
		t.Errorf("warnings %q lack the state directory", rep.Warnings)
	}
}

// TestServiceInstallNetAdminOnlyForVPN: the unit Install writes grants
// CAP_NET_ADMIN and /dev/net/tun only when the configuration enables
// [vpn].
func TestServiceInstallNetAdminOnlyForVPN(t *testing.T) {
	for _, vpn := range []bool{false, true} {
		h := newFakeHost(PlatformSystemd)
		h.users["twoway"] = &user.User{Username: "twoway", Uid: "998", Gid: "998"}
		c := installConfig(t, config.RoleServer)
		if vpn {
			data, err := os.ReadFile(c.ConfigPath)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(c.ConfigPath, append(data, "[vpn]\nenable = true\nipv4 = \"198.18.100.0/24\"\n"...), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := h.manager(c).Install(); err != nil {
			t.Fatal(err)
		}
		u := parseUnit(t, h.cfg.Option["SystemdScript"].(string))
		wantCaps := "CAP_NET_BIND_SERVICE"
		if vpn {
			wantCaps = "CAP_NET_ADMIN CAP_NET_BIND_SERVICE"
		}
		for _, k := range []string{"AmbientCapabilities", "CapabilityBoundingSet"} {
			if got := u["Service"][k]; len(got) != 1 || got[0] != wantCaps {
				t.Errorf("vpn=%v: %s = %q, want %q", vpn, k, got, wantCaps)
			}
		}
		if _, tun := u["Service"]["DeviceAllow"]; tun != vpn {
			t.Errorf("vpn=%v: DeviceAllow present = %v", vpn, tun)
		}
	}
}
