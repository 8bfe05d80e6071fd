//go:build !windows

package service

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twoway/twoway/config"
	"github.com/twoway/twoway/daemon"
)

// fakeRunner is a daemon whose lifecycle the test drives.
type fakeRunner struct {
	started   chan struct{}
	stopCalls chan struct{} // receives on each Stop
	release   chan struct{} // Stop blocks until closed (nil: no blocking)
	exit      chan error    // what Wait returns, once
	reloads   chan error    // Reload reports here and returns reloadErr
	reloadErr error
	once      sync.Once
}

func newFakeRunner() *fakeRunner {
	return &fakeRunner{
		started:   make(chan struct{}),
		stopCalls: make(chan struct{}, 4),
		exit:      make(chan error, 1),
		reloads:   make(chan error, 4),
	}
}

func (r *fakeRunner) Start(context.Context) error { close(r.started); return nil }
func (r *fakeRunner) Stop() {
	r.stopCalls <- struct{}{}
	if r.release != nil {
		<-r.release
	}
	r.once.Do(func() { r.exit <- nil })
}
func (r *fakeRunner) Wait() error { return <-r.exit }
func (r *fakeRunner) Reload() error {
	err := r.reloadErr // read before reporting: the test changes it after
	r.reloads <- err
	return err
}

// program returns a Program running r whose logs go to the returned buffer.
func program(t *testing.T, r daemon.Runner, stopTimeout time.Duration) (*Program, *syncBuffer) {
	t.Helper()
	buf := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(buf, nil))
	p := newProgram(Config{Role: config.RoleServer, Name: "twoway-server"}, stopTimeout, logger)
	p.load = func() (daemon.Runner, *slog.Logger, error) { return r, logger, nil }
	return p, buf
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestServiceProgramStartStop(t *testing.T) {
	r := newFakeRunner()
	p, _ := program(t, r, time.Minute)
	if err := p.Start(nil); err != nil {
		t.Fatal(err)
	}
	<-r.started
	select {
	case <-p.Done():
		t.Fatal("done before Stop")
	default:
	}
	if err := p.Stop(nil); err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	if err := p.Err(); err != nil {
		t.Errorf("Err after a requested stop = %v", err)
	}
	// A second Stop (kardianos may call it after the wait loop) is fine.
	if err := p.Stop(nil); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestServiceProgramStopBound(t *testing.T) {
	r := newFakeRunner()
	r.release = make(chan struct{})
	defer close(r.release)
	p, _ := program(t, r, 20*time.Millisecond)
	if err := p.Start(nil); err != nil {
		t.Fatal(err)
	}
	err := p.Stop(nil)
	if !errors.Is(err, ErrStopTimeout) {
		t.Fatalf("Stop of a daemon that never finishes draining: %v, want ErrStopTimeout", err)
	}
	<-r.stopCalls
}

func TestServiceProgramStartError(t *testing.T) {
	p := newProgram(Config{Role: config.RoleServer}, 0, slog.New(slog.DiscardHandler))
	want := errors.New("server.toml:3: listen: bad")
	p.load = func() (daemon.Runner, *slog.Logger, error) { return nil, nil, want }
	if err := p.Start(nil); err != want {
		t.Fatalf("Start = %v, want the load error", err)
	}
	if err := p.Stop(nil); err != nil {
		t.Errorf("Stop after a failed Start = %v", err)
	}
}

func TestServiceWaitLoopReloadThenStop(t *testing.T) {
	r := newFakeRunner()
	p, logs := program(t, r, time.Minute)
	if err := p.Start(nil); err != nil {
		t.Fatal(err)
	}
	sigs := make(chan os.Signal, 1)
	returned := make(chan struct{})
	go func() { p.waitLoop(sigs); close(returned) }()

	sigs <- syscall.SIGHUP
	if err := <-r.reloads; err != nil {
		t.Fatal(err)
	}
	r.reloadErr = errors.New("tls.key: permission denied")
	sigs <- syscall.SIGHUP
	<-r.reloads
	sigs <- syscall.SIGTERM
	<-returned
	if err := p.Stop(nil); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	for _, want := range []string{"reloaded configuration", "reload failed; still running", "tls.key: permission denied", "stopping: draining streams", "signal=terminated"} {
		if !strings.Contains(out, want) {
			t.Errorf("logs lack %q:\n%s", want, out)
		}
	}
}

func TestServiceWaitLoopDaemonFails(t *testing.T) {
	r := newFakeRunner()
	p, _ := program(t, r, time.Minute)
	exited := make(chan error, 1)
	p.onExit = func(err error) { exited <- err }
	if err := p.Start(nil); err != nil {
		t.Fatal(err)
	}
	returned := make(chan struct{})
	go func() { p.waitLoop(make(chan os.Signal)); close(returned) }()
	fatal := errors.New("accept: too many open files")
	r.exit <- fatal
	<-returned // the wait loop ends by itself, so kardianos' Run returns
	if err := p.Err(); err != fatal {
		t.Errorf("Err = %v, want the daemon's error", err)
	}
	if err := <-exited; err != fatal {
		t.Errorf("onExit got %v", err)
	}
}

func TestServiceProgramUnexpectedCleanExit(t *testing.T) {
	r := newFakeRunner()
	p, _ := program(t, r, time.Minute)
	if err := p.Start(nil); err != nil {
		t.Fatal(err)
	}
	r.exit <- nil
	<-p.Done()
	if !errors.Is(p.Err(), ErrExited) {
		t.Errorf("Err = %v, want ErrExited so the service manager restarts it", p.Err())
	}
}

// TestProgramRealDaemon runs the same gateway the foreground command runs,
// from a configuration file, through the Program.
func TestServiceProgramRealDaemon(t *testing.T) {
	server, client := configs(t)
	var logs syncBuffer
	handler := func(l config.Log) (slog.Handler, error) { return daemon.NewHandler(&logs, l) }

	p := newProgram(Config{Role: config.RoleServer, ConfigPath: server}, time.Minute, slog.New(slog.DiscardHandler))
	var got daemon.Runner
	p.load = func() (daemon.Runner, *slog.Logger, error) {
		r, l, err := loadDaemon(p.cfg, handler)
		got = r
		return r, l, err
	}
	if err := p.Start(nil); err != nil {
		t.Fatal(err)
	}
	srv, ok := got.(*daemon.Server)
	if !ok {
		t.Fatalf("runner is %T, want *daemon.Server", got)
	}
	c, err := net.Dial("tcp", srv.Tunnel().Addr().String())
	if err != nil {
		t.Fatalf("gateway not listening: %v", err)
	}
	c.Close()
	p.Reload()
	if err := p.Stop(nil); err != nil {
		t.Fatal(err)
	}
	<-p.Done()
	if err := p.Err(); err != nil {
		t.Errorf("Err = %v", err)
	}
	if out := logs.String(); !strings.Contains(out, "running as a service") || !strings.Contains(out, "reloaded configuration") {
		t.Errorf("logs:\n%s", out)
	}

	r, _, err := loadDaemon(Config{Role: config.RoleClient, ConfigPath: client}, handler)
	if _, ok := r.(*daemon.Client); err != nil || !ok {
		t.Errorf("client: %T, %v", r, err)
	}
	bad := badConfig(t)
	if _, _, err := loadDaemon(Config{Role: config.RoleServer, ConfigPath: bad}, handler); err == nil || !strings.HasPrefix(err.Error(), bad+":3: listen:") {
		t.Errorf("bad config: %v", err)
	}
}
