package daemon

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twoway/twoway/authority"
	"github.com/twoway/twoway/config"
)

// The enrolling CA's key is decrypted when the gateway is built, so a
// wrong password stops it at start, not at the first laptop.
func TestServerEnrollUnlocksCAAtStart(t *testing.T) {
	_, cfg := serverConfig(t, "127.0.0.1:0", "")
	dir := t.TempDir()
	old := authority.KDFIterations
	authority.KDFIterations = 1000
	t.Cleanup(func() { authority.KDFIterations = old })
	if _, err := authority.Init(filepath.Join(dir, "pki"), authority.InitOptions{Org: "Example Corp", Password: []byte("right")}); err != nil {
		t.Fatal(err)
	}
	pw := filepath.Join(dir, "ca.pw")
	for _, tc := range []struct{ password, want string }{{"wrong", "enroll: CA "}, {"right", ""}} {
		if err := os.WriteFile(pw, []byte(tc.password+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg.Enroll = config.ServerEnroll{CA: filepath.Join(dir, "pki", authority.ClientCADir), PasswordFile: pw}
		s, err := NewServer("", cfg, slog.New(slog.DiscardHandler))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("password %q: %v", tc.password, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("password %q: %v, want an error containing %q", tc.password, err, tc.want)
		}
		if err == nil && s.tunnel == nil {
			t.Error("no tunnel")
		}
	}
}
