package daemon

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twoway/twoway/config"
	"github.com/twoway/twoway/pki/pkitest"
)

// serverConfig writes a gateway configuration (control socket off) with
// the given listen and metrics addresses, and the files it names.
func serverConfig(t *testing.T, listen, metrics string) (string, *config.Server) {
	t.Helper()
	dir := t.TempDir()
	h := pkitest.NewHierarchy(t)
	gw := h.ServerCA.Server(t, "127.0.0.1")
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("gateway.crt", pkitest.PEM(gw.Certs()...))
	write("gateway.key", pkitest.KeyPEM(t, gw.Key))
	write("client-ca.crt", pkitest.PEM(h.ClientBundle()...))
	text := fmt.Sprintf(`listen = %q
[tls]
cert = "gateway.crt"
key = "gateway.key"
client_ca = "client-ca.crt"
[control]
socket = "off"
[policy.admit]
groups = ["eng"]
`, listen)
	if metrics != "" {
		text += fmt.Sprintf("[metrics]\nlisten = %q\n", metrics)
	}
	path := filepath.Join(dir, "server.toml")
	write("server.toml", []byte(text))
	cfg, err := config.LoadServer(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, cfg
}

// A Start that fails must undo what NewServer set up: the callers (the
// foreground command, the service) return its error without calling Stop,
// so VPN mode's forwarding sysctls and NAT table would otherwise outlive
// the process.
func TestServerStartFailureUndoesSetup(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	for _, tc := range []struct{ name, listen, metrics string }{
		{"listen address taken", taken.Addr().String(), ""},
		{"metrics address taken", "127.0.0.1:0", taken.Addr().String()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, cfg := serverConfig(t, tc.listen, tc.metrics)
			s, err := NewServer(path, cfg, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			// Stand-in for the VPN setup of NewServer, which needs root.
			undone := make(chan struct{}, 2)
			s.vpn = &gatewayVPN{log: s.log, undoLAN: func() error { undone <- struct{}{}; return nil }}
			if err := s.Start(context.Background()); err == nil {
				s.Stop()
				t.Fatal("Start succeeded on a taken address")
			}
			select {
			case <-undone:
			default:
				t.Fatal("the VPN setup was left in place after a failed Start")
			}
			waited := make(chan error, 1)
			go func() { waited <- s.Wait() }()
			select {
			case <-waited:
			case <-time.After(10 * time.Second):
				t.Fatal("Wait blocks after a failed Start: the tunnel was left running")
			}
			s.Stop() // still idempotent
			if len(undone) != 0 {
				t.Fatal("the VPN setup was undone twice")
			}
		})
	}
}

// TestServerStoppedByContextUndoesSetup: a gateway whose context ends stops
// by itself; whoever waits for it (the foreground command, the service) must
// not have to call Stop for the VPN setup to be undone.
func TestServerStoppedByContextUndoesSetup(t *testing.T) {
	path, cfg := serverConfig(t, "127.0.0.1:0", "")
	s, err := NewServer(path, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	undone := make(chan struct{}, 2)
	s.vpn = &gatewayVPN{log: s.log, undoLAN: func() error { undone <- struct{}{}; return nil }}
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	waited := make(chan error, 1)
	go func() { waited <- s.Wait() }()
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return after the context ended")
	}
	select {
	case <-undone:
	default:
		t.Fatal("the VPN setup outlived a gateway that stopped on its own")
	}
	s.Stop()
	if len(undone) != 0 {
		t.Fatal("the VPN setup was undone twice")
	}
}

// TestReloadKeepsSayingRestartNeeded: a changed listen address waits for a
// restart; a second reload of the same file must still say so, because the
// gateway still listens on the old one.
func TestReloadKeepsSayingRestartNeeded(t *testing.T) {
	path, cfg := serverConfig(t, "127.0.0.1:0", "")
	var buf bytes.Buffer
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, nil))
	s, err := NewServer(path, cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, bytes.Replace(data, []byte(`listen = "127.0.0.1:0"`), []byte(`listen = "127.0.0.1:1"`), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 2; i++ {
		if err := s.Reload(); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		n := strings.Count(buf.String(), "take effect only after a restart")
		mu.Unlock()
		if n != i {
			t.Fatalf("after reload %d: %d restart warnings, want %d", i, n, i)
		}
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// TestReloadSaysLogChangeWaits: [log] (like [control] and [metrics]) is
// read at start only; a reload that changes it says so rather than seem
// to have applied it.
func TestReloadSaysLogChangeWaits(t *testing.T) {
	path, cfg := serverConfig(t, "127.0.0.1:0", "")
	var buf bytes.Buffer
	var mu sync.Mutex
	s, err := NewServer(path, cfg, slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("[log]\nlevel = \"debug\"\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !strings.Contains(buf.String(), "take effect only after a restart") {
		t.Fatalf("no restart note after changing [log]:\n%s", buf.String())
	}
}
