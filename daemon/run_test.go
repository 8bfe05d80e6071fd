package daemon

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/twoway/twoway/config"
)

// fakeRunner is a daemon whose Stop makes Wait return.
type fakeRunner struct {
	stopped  chan struct{}
	once     sync.Once
	waitErr  error
	dropErr  error // nil: DropPrivileges succeeds
	reloaded int
}

func newFakeRunner() *fakeRunner { return &fakeRunner{stopped: make(chan struct{})} }

func (r *fakeRunner) Start(context.Context) error { return nil }
func (r *fakeRunner) Stop()                       { r.once.Do(func() { close(r.stopped) }) }
func (r *fakeRunner) Wait() error                 { <-r.stopped; return r.waitErr }
func (r *fakeRunner) Reload() error               { r.reloaded++; return nil }
func (r *fakeRunner) DropPrivileges() error       { return r.dropErr }

func TestRunStopsWhenContextDone(t *testing.T) {
	r := newFakeRunner()
	r.waitErr = context.Canceled
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- Run(ctx, r, slog.New(slog.DiscardHandler)) }()
	cancel()
	// A cancelled context is the caller's doing: Run passes on what Wait
	// says rather than calling it a clean stop.
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run = %v, want Wait's error", err)
	}
}

func TestRunReturnsFatalError(t *testing.T) {
	r := newFakeRunner()
	r.waitErr = errors.New("accept: too many open files")
	r.Stop() // the daemon dies by itself
	if err := Run(context.Background(), r, slog.New(slog.DiscardHandler)); err != r.waitErr {
		t.Fatalf("Run = %v, want the daemon's error", err)
	}
}

func TestStartStopsWhenPrivilegeDropFails(t *testing.T) {
	r := newFakeRunner()
	r.dropErr = ErrPrivilegeDrop
	if err := Start(context.Background(), r); !errors.Is(err, ErrPrivilegeDrop) {
		t.Fatalf("Start = %v", err)
	}
	select {
	case <-r.stopped:
	default:
		t.Fatal("the daemon still runs after a failed privilege drop")
	}
}

func TestHandleSignal(t *testing.T) {
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	r := newFakeRunner()
	if HandleSignal(r, syscall.SIGHUP, logger) || r.reloaded != 1 {
		t.Fatalf("SIGHUP: stop or no reload (reloads %d)", r.reloaded)
	}
	if !HandleSignal(r, syscall.SIGTERM, logger) {
		t.Fatal("SIGTERM does not stop")
	}
	for _, want := range []string{"reloaded configuration, certificates and CRLs", "stopping: draining streams", "signal=terminated"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %q:\n%s", want, logs.String())
		}
	}
}

func TestNewHandler(t *testing.T) {
	var buf bytes.Buffer
	h, err := NewHandler(&buf, config.Log{Level: "DEBUG", Format: "JSON"})
	if err != nil {
		t.Fatal(err)
	}
	slog.New(h).Debug("hello")
	if !strings.HasPrefix(buf.String(), "{") {
		t.Errorf("not JSON at debug: %q", buf.String())
	}
	if _, err := NewHandler(&buf, config.Log{Level: "loud"}); err == nil || err.Error() != `log level "loud": want debug, info, warn or error` {
		t.Errorf("bad level: %v", err)
	}
	if _, err := NewHandler(&buf, config.Log{Level: "info", Format: "xml"}); err == nil || err.Error() != `log format "xml": want text or json` {
		t.Errorf("bad format: %v", err)
	}
}

func TestLoadUnknownRole(t *testing.T) {
	_, _, err := Load("gateway", "server.toml", func(config.Log) (slog.Handler, error) { return slog.DiscardHandler, nil })
	if err == nil || err.Error() != `role "gateway": want server or client` {
		t.Fatalf("Load = %v", err)
	}
}
