package service

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/twoway/twoway/config"
)

// parseUnit reads a unit file into section -> key -> values (a key may
// repeat), failing on anything that is not a comment, a section header, a
// key=value line or blank.
func parseUnit(t *testing.T, unit string) map[string]map[string][]string {
	t.Helper()
	out := map[string]map[string][]string{}
	section := ""
	for i, line := range strings.Split(strings.TrimSuffix(unit, "\n"), "\n") {
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
			out[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("unit line %d: %q is not key=value in a section", i+1, line)
			}
			out[section][k] = append(out[section][k], v)
		}
	}
	return out
}

// splitExec splits a command line as systemd.service(5) does for the forms
// SystemdUnit writes: words separated by spaces, double-quoted words with
// \\ and \" escapes, %% and $$ for literal % and $.
func splitExec(t *testing.T, line string) []string {
	t.Helper()
	var words []string
	for i := 0; i < len(line); {
		if line[i] == ' ' {
			i++
			continue
		}
		var w strings.Builder
		if line[i] == '"' {
			i++
			for ; i < len(line) && line[i] != '"'; i++ {
				if line[i] == '\\' {
					i++
				}
				w.WriteByte(line[i])
			}
			if i == len(line) {
				t.Fatalf("unterminated quote in %q", line)
			}
			i++
		} else {
			for ; i < len(line) && line[i] != ' '; i++ {
				w.WriteByte(line[i])
			}
		}
		words = append(words, strings.NewReplacer("%%", "%", "$$", "$").Replace(w.String()))
	}
	return words
}

func serverConfig() Config {
	return Config{Role: config.RoleServer, ConfigPath: "/etc/twoway/server.toml", Executable: "/usr/bin/twoway", User: "twoway"}.WithDefaults()
}

func TestServiceSystemdUnitContent(t *testing.T) {
	c := serverConfig()
	unit, err := SystemdUnit(c)
	if err != nil {
		t.Fatal(err)
	}
	u := parseUnit(t, unit)
	want := map[string]map[string]string{
		"Unit": {
			"Description": "twoway gateway (mutual-TLS tunnel server)",
			"Wants":       "network-online.target",
			"After":       "network-online.target",
		},
		"Service": {
			"ExecStart":                "/usr/bin/twoway service run --role server --name twoway-server -c /etc/twoway/server.toml",
			"ExecReload":               "/bin/kill -HUP $MAINPID",
			"Restart":                  "on-failure",
			"RestartSec":               "2s",
			"User":                     "twoway",
			"StateDirectory":           "twoway",
			"ConfigurationDirectory":   "twoway",
			"RuntimeDirectory":         "twoway",
			"RuntimeDirectoryMode":     "0750",
			"RuntimeDirectoryPreserve": "yes",
			"ReadWritePaths":           "/var/lib/twoway",
			"AmbientCapabilities":      "CAP_NET_ADMIN CAP_NET_BIND_SERVICE",
			"CapabilityBoundingSet":    "CAP_NET_ADMIN CAP_NET_BIND_SERVICE",
			"NoNewPrivileges":          "yes",
			"ProtectSystem":            "strict",
			"ProtectHome":              "yes",
			"PrivateTmp":               "yes",
			"DeviceAllow":              "/dev/net/tun rw",
			"DevicePolicy":             "closed",
			"ProtectKernelTunables":    "yes",
			"RestrictAddressFamilies":  "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
		},
		"Install": {"WantedBy": "multi-user.target"},
	}
	for section, keys := range want {
		for k, v := range keys {
			if got := u[section][k]; len(got) != 1 || got[0] != v {
				t.Errorf("[%s] %s = %q, want %q", section, k, got, v)
			}
		}
	}
	// The argument vector systemd will run is exactly Arguments().
	argv := splitExec(t, u["Service"]["ExecStart"][0])
	if wantArgv := append([]string{c.Executable}, c.Arguments()...); !reflect.DeepEqual(argv, wantArgv) {
		t.Errorf("ExecStart runs %q, want %q", argv, wantArgv)
	}
	for _, bad := range []string{"PrivateDevices", "PrivateNetwork", "PrivateUsers"} {
		if _, ok := u["Service"][bad]; ok {
			t.Errorf("%s would take the TUN device or the host network away", bad)
		}
	}
	if strings.Contains(unit, "RestartSec=120") || strings.Contains(unit, "{{") {
		t.Errorf("unit looks like kardianos' template:\n%s", unit)
	}
}

func TestServiceSystemdUnitRoot(t *testing.T) {
	for _, user := range []string{"", "root"} {
		c := serverConfig()
		c.User = user
		unit, err := SystemdUnit(c)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := parseUnit(t, unit)["Service"]["User"]; ok {
			t.Errorf("User %q: unit has a User= line", user)
		}
	}
}

func TestServiceSystemdUnitQuoting(t *testing.T) {
	c := Config{Role: config.RoleClient, Name: "corp-vpn", ConfigPath: `/etc/two way/100% "$HOME"\x.toml`, Executable: "/opt/twoway/bin/twoway",
		Description: "VPN at 100%"}.WithDefaults()
	unit, err := SystemdUnit(c)
	if err != nil {
		t.Fatal(err)
	}
	u := parseUnit(t, unit)
	argv := splitExec(t, u["Service"]["ExecStart"][0])
	if want := append([]string{c.Executable}, c.Arguments()...); !reflect.DeepEqual(argv, want) {
		t.Errorf("ExecStart %q splits into %q, want %q", u["Service"]["ExecStart"][0], argv, want)
	}
	if d := u["Unit"]["Description"][0]; d != "VPN at 100%%" {
		t.Errorf("Description = %q: %% must be escaped", d)
	}
	if got := u["Service"]["ExecStart"][0]; !strings.Contains(got, "--name corp-vpn") || !strings.Contains(got, "--role client") {
		t.Errorf("ExecStart = %q", got)
	}
}

func TestServiceSystemdUnitRejects(t *testing.T) {
	for name, mut := range map[string]func(*Config){
		"relative config":  func(c *Config) { c.ConfigPath = "server.toml" },
		"relative exe":     func(c *Config) { c.Executable = "twoway" },
		"newline":          func(c *Config) { c.Description = "a\nExecStartPre=/bin/sh" },
		"template action":  func(c *Config) { c.ConfigPath = "/etc/{{Path}}.toml" },
		"bad name":         func(c *Config) { c.Name = "two way" },
		"bad user":         func(c *Config) { c.User = "Bad User" },
		"bad role":         func(c *Config) { c.Role = "relay" },
		"no config":        func(c *Config) { c.ConfigPath = "" },
		"name with slash":  func(c *Config) { c.Name = "../evil" },
		"name too long":    func(c *Config) { c.Name = strings.Repeat("a", 65) },
		"user with colons": func(c *Config) { c.User = "a:b" },
	} {
		c := serverConfig()
		mut(&c)
		if _, err := SystemdUnit(c); err == nil {
			t.Errorf("%s: SystemdUnit accepted %+v", name, c)
		}
	}
}

// TestSystemdUnitVerify asks systemd itself about the unit where
// systemd-analyze exists (it works without systemd running).
func TestServiceSystemdUnitVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := serverConfig()
	c.Executable = exe // verify checks that ExecStart exists
	c.Name = "twoway-verify-test"
	unit, err := SystemdUnit(c)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), c.Name+".service")
	if err := os.WriteFile(path, []byte(unit), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(analyze, "verify", "--man=no", path).CombinedOutput()
	// Other units on the host may draw complaints; only lines about this
	// one count.
	var ours []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, c.Name) {
			ours = append(ours, l)
		}
	}
	if len(ours) > 0 {
		t.Errorf("systemd-analyze verify (%v):\n%s\nunit:\n%s", err, strings.Join(ours, "\n"), unit)
	}
}
