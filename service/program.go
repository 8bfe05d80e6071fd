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

// DefaultStopTimeout bounds Program.Stop: the gateway drains open streams
// for up to 30 s, plus time to close sessions. The systemd unit's
// TimeoutStopSec and the plist's ExitTimeOut are longer.
const DefaultStopTimeout = 35 * time.Second

// HandlerFunc builds the daemon's log handler writing to w from the
// configuration's [log] table (the command line may override it); the
// writer is a parameter because on Windows the records go to the event log
// through a buffer.
type HandlerFunc func(w io.Writer, l config.Log) (slog.Handler, error)

// RunOptions configures Run.
type RunOptions struct {
	// Handler builds log handlers; default daemon.NewHandler, a text or
	// JSON handler as [log] says.
	Handler HandlerFunc
	// Stderr receives the logs where the service manager collects
	// standard error (journald, launchd's StandardErrorPath); default
	// os.Stderr. Windows services log to the event log instead.
	Stderr io.Writer
	// StopTimeout bounds the drain on stop; default DefaultStopTimeout.
	StopTimeout time.Duration
}

// Program adapts a daemon.Runner to kardianos/service's Interface. Start
// loads the configuration and starts the daemon without blocking; Stop
// drains it within a bound. Run builds one; NewProgram is for embedding it
// in another kardianos service.
type Program struct {
	cfg         Config
	stopTimeout time.Duration
	// load builds the runner and its logger; loadDaemon outside tests.
	load func() (daemon.Runner, *slog.Logger, error)
	// onExit, when set, is called if the daemon stops on its own (not via
	// Stop). Windows needs it: its service loop only ends when the
	// service control manager says so.
	onExit func(error)

	mu      sync.Mutex // guards r, log and cancel
	r       daemon.Runner
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
	p.load = func() (daemon.Runner, *slog.Logger, error) {
		return loadDaemon(c, func(l config.Log) (slog.Handler, error) { return opts.Handler(opts.Stderr, l) })
	}
	return p, nil
}

func (o RunOptions) withDefaults() RunOptions {
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	if o.Handler == nil {
		o.Handler = daemon.NewHandler
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
func loadDaemon(c Config, newHandler func(config.Log) (slog.Handler, error)) (daemon.Runner, *slog.Logger, error) {
	return daemon.Load(c.Role, c.ConfigPath, newHandler)
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
	// Started as root (launchd; a systemd unit without User=), the daemon
	// goes on as the configured user once its listeners are open.
	if err := daemon.Start(ctx, r); err != nil {
		cancel()
		return err
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
	daemon.Reload(r, logger)
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
			// kardianos waits only after a successful Start: r is set.
			p.mu.Lock()
			r, logger := p.r, p.log
			p.mu.Unlock()
			if daemon.HandleSignal(r, sig, logger) {
				return
			}
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
		p.load = func() (daemon.Runner, *slog.Logger, error) { return loadDaemon(c, newHandler) }
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
