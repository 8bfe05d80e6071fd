//go:build !windows

package control

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/twoway/twoway/config"
)

// TestCandidates: `twoway status` looks at the system directory first,
// then the caller's runtime directory.
func TestCandidates(t *testing.T) {
	xdg := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", xdg)
	got := Candidates(config.RoleClient)
	want := []string{filepath.Join(systemDir(), "client.sock"), filepath.Join(xdg, "twoway", "client.sock")}
	if !slices.Equal(got, want) {
		t.Fatalf("Candidates = %v, want %v", got, want)
	}
	t.Setenv("XDG_RUNTIME_DIR", "")
	if got := Candidates(config.RoleServer); !slices.Equal(got, []string{filepath.Join(systemDir(), "server.sock")}) {
		t.Fatalf("Candidates without XDG_RUNTIME_DIR = %v", got)
	}
}
