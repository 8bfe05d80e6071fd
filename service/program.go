package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	kservice "github.com/kardianos/service"

	"github.com/twoway/twoway/config"
	"github.com/twoway/twoway/daemon"
)

// Runner is the daemon lifecycle the foreground commands and the service
// share; *daemon.Server and *daemon.Client implement it.
type Runner interface {
	// Start starts the daemon without blocking.
	Start(ctx context.Context) error
	// Stop drains and stops it; it may block while draining and is
	// idempotent.
	Stop()
	// Wait blocks until the daemon has stopped and returns the first
	// fatal error.
	Wait() error
	// Reload re-reads configuration and credentials; on error the
	// daemon keeps running as before.
	Reload() error
}

// DefaultStopTimeout bounds Program.Stop: the gateway drains open streams
// for up to 30 s, plus time to close sessions. The systemd unit's
// TimeoutStopSec and the plist's ExitTimeOut are longer.
const DefaultStopTimeout = 35 * time.Second

// HandlerFunc builds the daemon's log handler writing to w from the
// configuration's [log] table (the command line may override it).
type HandlerFunc func(w io.Writer, l config.Log) (slog.Handler, error)

// RunOptions configures Run.
type RunOptions struct {
	// Handler builds log handlers; default a text or JSON handler as
	// [log] says.
	Handler HandlerFunc
	// Stderr receives the logs where the service manager collects
	// standard error (journald, launchd's StandardErrorPath); default
	// os.Stderr. Windows services log to the event log instead.
	Stderr io.Writer
	// StopTimeout bounds the drain on stop; default DefaultStopTimeout.
	StopTimeout time.Duration
}

// Program adapts a Runner to kardianos/service's Interface. Start loads
// the configuration and starts the daemon without blocking; Stop drains it
// within a bound. Run builds one; NewProgram is for embedding it in
// another kardianos service.
type Program struct {
	cfg         Config
	stopTimeout time.Duration
	// load builds the runner and its logger; loadDaemon outside tests.
	load func() (Runner, *slog.Logger, error)
	// onExit, when set, is called if the daemon stops on its own (not via
	// Stop). Windows needs it: its service loop only ends when the
	// service control manager says so.
	onExit func(error)

	mu      sync.Mutex // guards r, log and cancel
	r       Runner
	log     *slog.Logger
	cancel  context.CancelFunc
	done    chan struct{} // closed when r.Wait has returned
	err     error         // r.Wait's result; read after done is closed
	stopped atomic.Bool   // Stop was called: the end is expected
}

// NewProgram returns the Program that runs c: its Start loads
// c.ConfigPath and starts the same daemon `twoway server` or `twoway
// client` would, logging through opts.Handler to opts.Stderr.
func NewProgram(c Config, opts RunOptions) (*Program, error) {
	opts = opts.withDefaults()
	fallback, err := opts.Handler(opts.Stderr, config.Log{Level: "info", Format: "text"})
	if err != nil {
		return nil, err
	}
	p := newProgram(c, opts.StopTimeout, slog.New(fallback))
	p.load = func() (Runner, *slog.Logger, error) {
		return loadDaemon(c, func(l config.Log) (slog.Handler, error) { return opts.Handler(opts.Stderr, l) })
	}
	return p, nil
}

func (o RunOptions) withDefaults() RunOptions {
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	if o.Handler == nil {
		o.Handler = DefaultHandler
	}
	return o
}

// newProgram returns a Program for c whose logs before the configuration
// is loaded (and of a configuration that fails to load) go to fallback.
func newProgram(c Config, stopTimeout time.Duration, fallback *slog.Logger) *Program {
	if stopTimeout <= 0 {
		stopTimeout = DefaultStopTimeout
	}
	return &Program{cfg: c, stopTimeout: stopTimeout, log: fallback, done: make(chan struct{})}
}

// loadDaemon loads the configuration file and builds the same daemon the
// foreground commands run. newHandler turns the [log] table into a handler.
func loadDaemon(c Config, newHandler func(config.Log) (slog.Handler, error)) (Runner, *slog.Logger, error) {
	switch c.Role {
	case config.RoleServer:
		cfg, err := config.LoadServer(c.ConfigPath)
		if err != nil {
			return nil, nil, err
		}
		h, err := newHandler(cfg.Log)
		if err != nil {
			return nil, nil, err
		}
		logger := slog.New(h)
		srv, err := daemon.NewServer(c.ConfigPath, cfg, logger)
		if err != nil {
			return nil, nil, err
		}
		return srv, logger, nil
	case config.RoleClient:
		cfg, err := config.LoadClient(c.ConfigPath)
		if err != nil {
			return nil, nil, err
		}
		h, err := newHandler(cfg.Log)
		if err != nil {
			return nil, nil, err
		}
		logger := slog.New(h)
		cl, err := daemon.NewClient(cfg, daemon.ClientHooks{}, logger)
		if err != nil {
			return nil, nil, err
		}
		return cl, logger, nil
	}
	_, err := config.ParseRole(string(c.Role))
	return nil, nil, err
}

func (p *Program) logger() *slog.Logger {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log
}

// Start loads the configuration, builds the daemon and starts it. It does
// not block: the daemon's listeners and connections run on their own.
func (p *Program) Start(kservice.Service) error {
	r, logger, err := p.load()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := r.Start(ctx); err != nil {
		cancel()
		return err
	}
	// Started as root (launchd; a systemd unit without User=), the daemon
	// goes on as the configured user once its listeners are open.
	if d, ok := r.(interface{ DropPrivileges() error }); ok {
		if err := d.DropPrivileges(); err != nil {
			r.Stop()
			cancel()
			return err
		}
	}
	p.mu.Lock()
	p.r, p.log, p.cancel = r, logger, cancel
	p.mu.Unlock()
	logger.Info("running as a service", "name", p.cfg.Name, "role", string(p.cfg.Role), "config", p.cfg.ConfigPath)
	// Owned by Stop, which waits for done.
	go func() {
		err := r.Wait()
		if err == nil && !p.stopped.Load() {
			err = ErrExited
		}
		if p.stopped.Load() && errors.Is(err, context.Canceled) {
			err = nil
		}
		p.err = err
		close(p.done)
		if !p.stopped.Load() && p.onExit != nil {
			p.onExit(err)
		}
	}()
	return nil
}

// Stop drains and stops the daemon, giving up after the stop timeout with
// ErrStopTimeout (the process then exits and the kernel closes what is
// left). It returns nil when Start never succeeded.
func (p *Program) Stop(kservice.Service) error {
	p.mu.Lock()
	r, cancel := p.r, p.cancel
	p.mu.Unlock()
	if r == nil {
		return nil
	}
	p.stopped.Store(true)
	timer := time.NewTimer(p.stopTimeout)
	defer timer.Stop()
	// r.Stop blocks while draining; run it aside so the bound holds. It
	// returns once the daemon is down, which done reports.
	go r.Stop()
	select {
	case <-p.done:
		cancel()
		return nil
	case <-timer.C:
		cancel()
		return fmt.Errorf("%w: still draining after %v", ErrStopTimeout, p.stopTimeout)
	}
}

// Reload asks the daemon to re-read its configuration and credentials and
// logs the outcome; a failed reload leaves the daemon as it was.
func (p *Program) Reload() {
	p.mu.Lock()
	r, logger := p.r, p.log
	p.mu.Unlock()
	if r == nil {
		return
	}
	if err := r.Reload(); err != nil {
		logger.Error("reload failed; still running with the previous configuration", "err", err)
		return
	}
	logger.Info("reloaded configuration, certificates and CRLs")
}

// Done is closed when the daemon has stopped, on request or not.
func (p *Program) Done() <-chan struct{} { return p.done }

// Err is why the daemon stopped: nil after a requested stop, else its
// fatal error or ErrExited. Valid once Done is closed.
func (p *Program) Err() error {
	select {
	case <-p.done:
		return p.err
	default:
		return nil
	}
}

// waitLoop is what kardianos' Run waits on between Start and Stop (its
// RunWait option): it returns on a stop signal or when the daemon stops by
// itself, and reloads on the reload signal in between.
func (p *Program) waitLoop(sigs <-chan os.Signal) {
	for {
		select {
		case <-p.done:
			return
		case sig := <-sigs:
			if isReloadSignal(sig) {
				p.Reload()
				continue
			}
			p.logger().Info("stopping: draining streams", "signal", sig.String())
			return
		}
	}
}

// runConfig is kardianosConfig for the running side, which renders no
// files: on Windows the paths are Windows paths, which the Unix renderers
// rightly refuse.
func runConfig(c Config) *kservice.Config {
	return &kservice.Config{Name: c.Name, DisplayName: c.Name, Description: c.Description}
}

// Run runs the daemon described by c under the service manager until the
// manager stops it (SIGTERM, or the Windows service control manager), or
// in the foreground until SIGINT/SIGTERM when started from a terminal.
// SIGHUP reloads where the platform has it. It returns the reason the
// daemon stopped: nil for a requested stop, so that the service manager
// restarts only real failures.
func Run(c Config, opts RunOptions) error {
	c = c.WithDefaults()
	if _, err := config.ParseRole(string(c.Role)); err != nil {
		return err
	}
	if c.ConfigPath == "" {
		return daemon.ErrNoConfig
	}
	opts = opts.withDefaults()
	p, err := NewProgram(c, opts)
	if err != nil {
		return err
	}
	kc := runConfig(c)
	sigs, stopSignals := notifySignals()
	defer stopSignals()
	kc.Option = kservice.KeyValue{"RunWait": func() { p.waitLoop(sigs) }}
	svc, err := kservice.New(p, kc)
	if err != nil {
		return fmt.Errorf("service %s: %w", c.Name, err)
	}
	// report is for the error Run returns; on Unix the caller prints it
	// to stderr, which the service manager collects.
	report := func(error) {}
	if sys := systemLogger(svc); sys != nil {
		// A Windows service has no stderr anyone reads: log to the event
		// log, formatted as [log] says.
		newHandler := func(l config.Log) (slog.Handler, error) {
			return newSysHandler(sys, func(w io.Writer) (slog.Handler, error) { return opts.Handler(w, l) })
		}
		h, err := newHandler(config.Log{Level: "info", Format: "text"})
		if err != nil {
			return err
		}
		p.log = slog.New(h)
		p.load = func() (Runner, *slog.Logger, error) { return loadDaemon(c, newHandler) }
		report = func(err error) { sys.Error(err.Error()) }
	}
	if !runWaitHonoured {
		// Nothing returns from kardianos' Run when the daemon dies on
		// Windows: only the service control manager (or Ctrl-C) ends
		// it. Exit instead; the manager applies its recovery actions
		// (restart after 2 s) only to a service process that ends
		// without reporting itself stopped.
		p.onExit = func(err error) {
			p.logger().Error("daemon stopped by itself; exiting", "err", err)
			os.Exit(1)
		}
	}
	err = svc.Run()
	if err == nil {
		err = p.Err()
	}
	if err != nil {
		report(err)
	}
	return err
}

// DefaultHandler is a text (logfmt) or JSON handler as [log] says.
func DefaultHandler(w io.Writer, l config.Log) (slog.Handler, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(l.Level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", l.Level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch l.Format {
	case "", "text":
		return slog.NewTextHandler(w, opts), nil
	case "json":
		return slog.NewJSONHandler(w, opts), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", l.Format)
}
