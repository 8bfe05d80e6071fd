package daemon

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/twoway/twoway/config"
)

// Runner is the lifecycle the foreground commands and the system service
// drive; *Server and *Client implement it.
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

// privilegeDropper is a Runner that, started as root, can go on as an
// unprivileged user once its listeners are open (*Server, *Client).
type privilegeDropper interface{ DropPrivileges() error }

// Load loads the configuration file of role at path, builds the daemon's
// logger with newHandler from its [log] table, and builds the daemon
// without starting it. The system service runs what it returns; so, through
// RunServer, does `twoway server`.
func Load(role config.Role, path string, newHandler func(config.Log) (slog.Handler, error)) (Runner, *slog.Logger, error) {
	switch role {
	case config.RoleServer:
		cfg, err := config.LoadServer(path)
		if err != nil {
			return nil, nil, err
		}
		return newServerRunner(path, cfg, newHandler)
	case config.RoleClient:
		cfg, err := config.LoadClient(path)
		if err != nil {
			return nil, nil, err
		}
		return newClientRunner(cfg, newHandler)
	}
	_, err := config.ParseRole(string(role))
	return nil, nil, err
}

func newServerRunner(path string, cfg *config.Server, newHandler func(config.Log) (slog.Handler, error)) (Runner, *slog.Logger, error) {
	h, err := newHandler(cfg.Log)
	if err != nil {
		return nil, nil, err
	}
	logger := slog.New(h)
	srv, err := NewServer(path, cfg, logger)
	if err != nil {
		return nil, nil, err
	}
	return srv, logger, nil
}

func newClientRunner(cfg *config.Client, newHandler func(config.Log) (slog.Handler, error)) (Runner, *slog.Logger, error) {
	h, err := newHandler(cfg.Log)
	if err != nil {
		return nil, nil, err
	}
	logger := slog.New(h)
	c, err := NewClient(cfg, ClientHooks{}, logger)
	if err != nil {
		return nil, nil, err
	}
	return c, logger, nil
}

// RunServer loads the gateway configuration at path and runs the gateway
// in the foreground (see Run): `twoway server`.
func RunServer(ctx context.Context, path string, newHandler func(config.Log) (slog.Handler, error)) error {
	if path == "" {
		return ErrNoConfig
	}
	r, logger, err := Load(config.RoleServer, path, newHandler)
	if err != nil {
		return err
	}
	return Run(ctx, r, logger)
}

// RunClient runs the client daemon of cfg in the foreground (see Run):
// `twoway client`, whose cfg is a file plus the forwards given on the
// command line, and `twoway forward`, whose cfg is all command line. cfg
// must be valid.
func RunClient(ctx context.Context, cfg *config.Client, newHandler func(config.Log) (slog.Handler, error)) error {
	r, logger, err := newClientRunner(cfg, newHandler)
	if err != nil {
		return err
	}
	return Run(ctx, r, logger)
}

// Run starts r and runs it in the foreground until SIGINT or SIGTERM
// (drain and stop), ctx is done (stop) or a fatal error; SIGHUP reloads.
// A stop by signal is a clean exit: it returns nil rather than the
// cancellation it causes.
func Run(ctx context.Context, r Runner, logger *slog.Logger) error {
	// Subscribed before Start, so that a signal during start is acted on
	// once the daemon runs instead of killing it half-started.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if err := Start(ctx, r); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- r.Wait() }()
	// Every return below waits for done, which r.Stop brings about.
	defer context.AfterFunc(ctx, r.Stop)()
	for {
		select {
		case err := <-done:
			return err
		case sig := <-sigs:
			if !HandleSignal(r, sig, logger) {
				continue
			}
			r.Stop()
			err := <-done
			if errors.Is(err, context.Canceled) {
				err = nil
			}
			return err
		}
	}
}

// Start starts r and, when r was started as root and can go on as the
// configured user (*Server, *Client), drops its privileges once its
// listeners are open. On error r is stopped again.
func Start(ctx context.Context, r Runner) error {
	if err := r.Start(ctx); err != nil {
		return err
	}
	if d, ok := r.(privilegeDropper); ok {
		if err := d.DropPrivileges(); err != nil {
			r.Stop()
			return err
		}
	}
	return nil
}

// HandleSignal acts on a signal a running daemon was sent. SIGHUP reloads
// r, and HandleSignal reports false: r runs on. Any other signal (SIGTERM,
// SIGINT) is logged as the start of the drain and HandleSignal reports
// true: the caller stops r.
func HandleSignal(r Runner, sig os.Signal, logger *slog.Logger) (stop bool) {
	if sig == syscall.SIGHUP {
		Reload(r, logger)
		return false
	}
	logger.Info("stopping: draining streams", "signal", sig.String())
	return true
}

// Reload asks r to re-read its configuration and credentials and logs the
// outcome; a failed reload leaves r running as it was.
func Reload(r Runner, logger *slog.Logger) {
	if err := r.Reload(); err != nil {
		logger.Error("reload failed; still running with the previous configuration", "err", err)
		return
	}
	logger.Info("reloaded configuration, certificates and CRLs")
}
