package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestGeneratedFilesUpToDate fails when a committed unit, plist or example
// differs from what the code produces today.
func TestGeneratedFilesUpToDate(t *testing.T) {
	fs, err := files()
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range fs {
		have, err := os.ReadFile(filepath.Join("..", filepath.FromSlash(name)))
		if err != nil {
			t.Errorf("%s: %v (run 'go run ./packaging/gen')", name, err)
			continue
		}
		if string(have) != want {
			t.Errorf("packaging/%s is out of date: run 'go run ./packaging/gen'", name)
		}
	}
}

func TestCheckFindsStaleFiles(t *testing.T) {
	dir := t.TempDir()
	if err := run(dir, true); err == nil {
		t.Fatal("check passed on an empty directory")
	}
	if err := run(dir, false); err != nil {
		t.Fatal(err)
	}
	if err := run(dir, true); err != nil {
		t.Fatalf("check after writing: %v", err)
	}
	unit := filepath.Join(dir, "systemd", "twoway-server.service")
	if err := os.WriteFile(unit, []byte("[Service]\nRestartSec=120\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(dir, true); err == nil {
		t.Fatal("check passed with an edited unit")
	}
}
