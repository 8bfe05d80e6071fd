package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twoway/twoway/authority"
	"github.com/twoway/twoway/config"
	"github.com/twoway/twoway/service"
)

// fakeServiceManager stands in for the host's service manager.
type fakeServiceManager struct {
	host *fakeServiceHost
	cfg  service.Config
}

type fakeServiceHost struct {
	configs []service.Config
	calls   []string
	states  map[string]service.State // by service name
	report  service.InstallReport
}

func (f *fakeServiceManager) call(verb string) error {
	f.host.calls = append(f.host.calls, verb+" "+f.cfg.Name)
	return nil
}
func (f *fakeServiceManager) Install() (service.InstallReport, error) {
	return f.host.report, f.call("install")
}
func (f *fakeServiceManager) Uninstall() error { return f.call("uninstall") }
func (f *fakeServiceManager) Start() error     { return f.call("start") }
func (f *fakeServiceManager) Stop() error      { return f.call("stop") }
func (f *fakeServiceManager) Restart() error   { return f.call("restart") }
func (f *fakeServiceManager) Status() (service.State, error) {
	return f.host.states[f.cfg.Name], f.call("status")
}

// fakeServices replaces the service manager for the test.
func fakeServices(t *testing.T) *fakeServiceHost {
	h := &fakeServiceHost{states: map[string]service.State{}}
	old := newServiceManager
	newServiceManager = func(c service.Config) (serviceManager, error) {
		h.configs = append(h.configs, c)
		return &fakeServiceManager{host: h, cfg: c}, nil
	}
	t.Cleanup(func() { newServiceManager = old })
	return h
}

// serviceFixture writes a PKI, a gateway certificate and a server.toml on
// loopback, and returns the configuration's path.
func serviceFixture(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	res, err := authority.Init(filepath.Join(dir, "pki"), authority.InitOptions{Org: "service test"})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := res.ServerCA.Issue(authority.IssueRequest{Kind: authority.KindServer, Name: "127.0.0.1", OutDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`listen = "127.0.0.1:0"
[tls]
cert = %q
key = %q
client_ca = "pki/client-ca/bundle.crt"
[control]
socket = "off"
[policy.admit]
groups = ["eng"]
`, filepath.Base(gw.CertFile), filepath.Base(gw.KeyFile))
	path := filepath.Join(dir, "server.toml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestServiceInstallInvalidConfig(t *testing.T) {
	h := fakeServices(t)
	path := filepath.Join(t.TempDir(), "server.toml")
	os.WriteFile(path, []byte("# gateway\n\nlisten = \"127.0.0.1:99999\"\n"), 0o600)
	_, _, err := twowayRun(t, "service", "install", "-c", path, "--role", "server")
	wantFailure(t, err, path+":3: listen: ", "99999")
	if len(h.configs) > 0 {
		t.Errorf("a service manager was created for an invalid configuration: %v", h.calls)
	}
}

func TestServiceInstall(t *testing.T) {
	h := fakeServices(t)
	h.report = service.InstallReport{Path: "/etc/systemd/system/twoway-server.service", User: "twoway",
		Warnings: []string{"gateway.key is not readable by twoway"}}
	path := serviceFixture(t)
	t.Chdir(filepath.Dir(path))
	// A relative path and no --role: the unit gets the absolute path and
	// the role is read from the file.
	out, errOut, err := twowayRun(t, "service", "install", "-c", "server.toml")
	if err != nil {
		t.Fatal(err)
	}
	if len(h.configs) != 1 {
		t.Fatalf("configs %v", h.configs)
	}
	c := h.configs[0]
	if c.ConfigPath != path || c.Role != config.RoleServer || c.Name != "twoway-server" || c.User != "twoway" {
		t.Errorf("service config %+v", c)
	}
	wantLines(t, out, `installed twoway-server \(/etc/systemd/system/twoway-server.service\): runs ".*server.toml" as twoway`,
		`start it with: twoway service start --name twoway-server`)
	wantLines(t, errOut, `twoway: warning: gateway.key is not readable by twoway`)
	if !reflect.DeepEqual(h.calls, []string{"install twoway-server"}) {
		t.Errorf("calls %v", h.calls)
	}
}

func TestServiceInstallFlags(t *testing.T) {
	h := fakeServices(t)
	path := serviceFixture(t)
	if _, _, err := twowayRun(t, "service", "install", "-c", path, "--role", "server", "--name", "gw-eu", "--user", "vpn"); err != nil {
		t.Fatal(err)
	}
	if c := h.configs[0]; c.Name != "gw-eu" || c.User != "vpn" {
		t.Errorf("service config %+v", c)
	}
	for _, args := range [][]string{
		{"service", "install", "--role", "server"},             // no -c
		{"service", "install", "-c", path, "--role", "relay"},  // bad role
		{"service", "install", "-c", path, "--name", "a b"},    // bad name
		{"service", "install", "-c", path, "--user", "No One"}, // bad user
	} {
		if _, _, err := twowayRun(t, args...); err == nil {
			t.Errorf("%q succeeded", args)
		}
	}
}

func TestServiceStatus(t *testing.T) {
	h := fakeServices(t)
	h.states["twoway-server"] = service.StateRunning
	h.states["twoway-client"] = service.StateStopped
	h.states["edge"] = service.StateNotInstalled
	for _, tc := range []struct {
		args []string
		out  string
		code int
	}{
		{[]string{"--role", "server"}, "twoway-server: running\n", 0},
		{[]string{"--role", "client"}, "twoway-client: stopped\n", statusExitStopped},
		{[]string{"--name", "edge"}, "edge: not installed\n", statusExitNotInstalled},
		{nil, "twoway-server: running\ntwoway-client: stopped\n", 0},
	} {
		out, _, err := twowayRun(t, append([]string{"service", "status"}, tc.args...)...)
		code := 0
		var ee exitError
		if errors.As(err, &ee) {
			code = ee.code
		} else if err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		if out != tc.out || code != tc.code {
			t.Errorf("status %q: %q exit %d, want %q exit %d", tc.args, out, code, tc.out, tc.code)
		}
	}
}

func TestServiceControl(t *testing.T) {
	h := fakeServices(t)
	for _, verb := range []string{"start", "stop", "restart", "uninstall"} {
		if _, _, err := twowayRun(t, "service", verb, "--role", "client"); err != nil {
			t.Fatalf("%s: %v", verb, err)
		}
	}
	want := []string{"start twoway-client", "stop twoway-client", "restart twoway-client", "uninstall twoway-client"}
	if !reflect.DeepEqual(h.calls, want) {
		t.Errorf("calls %v, want %v", h.calls, want)
	}
	_, _, err := twowayRun(t, "service", "start")
	wantFailure(t, err, "--role server|client")
}

// TestServiceArguments: the command line an installed service runs is
// the hidden run command with the same role, name and configuration.
func TestServiceArguments(t *testing.T) {
	c := service.Config{Role: config.RoleClient, Name: "corp", ConfigPath: "/etc/twoway/client.toml", Executable: "/usr/bin/twoway"}
	root := newRootCmd()
	cmd, rest, err := root.Find(c.Arguments())
	if err != nil {
		t.Fatal(err)
	}
	if cmd.CommandPath() != "twoway service run" || !cmd.Hidden {
		t.Fatalf("arguments resolve to %q (hidden %v)", cmd.CommandPath(), cmd.Hidden)
	}
	if err := cmd.ParseFlags(rest); err != nil {
		t.Fatal(err)
	}
	for flag, want := range map[string]string{"role": "client", "name": "corp", "config": "/etc/twoway/client.toml"} {
		if got := cmd.Flags().Lookup(flag).Value.String(); got != want {
			t.Errorf("--%s = %q, want %q", flag, got, want)
		}
	}
	if len(cmd.Flags().Args()) > 0 {
		t.Errorf("left over arguments %q", cmd.Flags().Args())
	}
}

// TestProcessServiceRun runs the binary as a service manager would: it
// serves, reloads on SIGHUP and drains and exits 0 on SIGTERM.
func TestProcessServiceRun(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	path := serviceFixture(t)
	p := startProc(t, "service", "run", "--role", "server", "-c", path)
	p.waitLog("running as a service", 10*time.Second, func(l map[string]any) bool { return l["config"] == path })
	p.waitLog("gateway listening", 10*time.Second, nil)
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog("reloaded configuration, certificates and CRLs", 10*time.Second, nil)
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.wait(40 * time.Second); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
	if !strings.Contains(fmt.Sprint(p.lines), "stopping: draining streams") {
		t.Error("no drain log line")
	}
}

func TestProcessServiceRunBadConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	path := filepath.Join(t.TempDir(), "server.toml")
	os.WriteFile(path, []byte("listen = \"127.0.0.1:99999\"\n"), 0o600)
	p := startProc(t, "service", "run", "--role", "server", "-c", path)
	err := p.wait(20 * time.Second)
	var ee interface{ ExitCode() int }
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("exit %v, want status 1 so that systemd restarts it", err)
	}
	if !strings.Contains(fmt.Sprint(p.lines), path+":1: listen:") {
		t.Errorf("output lacks the file:line:key error: %v", p.lines)
	}
}
