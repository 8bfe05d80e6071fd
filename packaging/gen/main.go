// Command gen writes the files under packaging/ that are derived from code:
// the systemd units and launchd plists (service.SystemdUnit, LaunchdPlist)
// and the example configurations (config.ExampleServer, ExampleClient), so
// that the packages ship exactly what `twoway service install` and
// `twoway config example` produce. Run it from the repository root after
// changing any of those:
//
//	go run ./packaging/gen
//
// With -check it writes nothing and fails if a file is out of date.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/twoway/twoway/config"
	"github.com/twoway/twoway/service"
)

// Where the packages put things.
const (
	linuxBinary  = "/usr/bin/twoway"
	linuxConfDir = "/etc/twoway"
	macBinary    = "/usr/local/bin/twoway"
	macConfDir   = "/usr/local/etc/twoway"
)

// files returns every generated file, by path relative to packaging/.
func files() (map[string]string, error) {
	out := map[string]string{
		"etc/server.toml.example": config.ExampleServer(),
		"etc/client.toml.example": config.ExampleClient(),
	}
	for _, role := range []config.Role{config.RoleServer, config.RoleClient} {
		unit, err := service.SystemdUnit(service.Config{
			Role:       role,
			ConfigPath: linuxConfDir + "/" + string(role) + ".toml",
			Executable: linuxBinary,
			User:       service.DefaultUser, // the postinstall script creates it
		}.WithDefaults())
		if err != nil {
			return nil, err
		}
		out["systemd/"+service.DefaultName(role)+".service"] = unit
		plist, err := service.LaunchdPlist(service.Config{
			Role:       role,
			ConfigPath: macConfDir + "/" + string(role) + ".toml",
			Executable: macBinary,
		}.WithDefaults())
		if err != nil {
			return nil, err
		}
		out["macos/"+service.DefaultName(role)+".plist"] = plist
	}
	return out, nil
}

func main() {
	dir := flag.String("dir", "packaging", "the packaging directory")
	check := flag.Bool("check", false, "only check that the files are up to date")
	flag.Parse()
	if err := run(*dir, *check); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(dir string, check bool) error {
	fs, err := files()
	if err != nil {
		return err
	}
	names := make([]string, 0, len(fs))
	for name := range fs {
		names = append(names, name)
	}
	sort.Strings(names)
	var stale []string
	for _, name := range names {
		path := filepath.Join(dir, filepath.FromSlash(name))
		have, err := os.ReadFile(path)
		if err == nil && bytes.Equal(have, []byte(fs[name])) {
			continue
		}
		if check {
			stale = append(stale, path)
			continue
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, []byte(fs[name]), 0o644); err != nil {
			return err
		}
		fmt.Println("wrote", path)
	}
	if len(stale) > 0 {
		return fmt.Errorf("out of date (run 'go run ./packaging/gen'): %v", stale)
	}
	return nil
}
