package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/twoway/twoway/config"
)

// runner is what the server and client daemons share.
type runner interface {
	Start(ctx context.Context) error
	Stop()
	Wait() error
	Reload() error
}

// privilegeDropper is a runner that, started as root, can go on as an
// unprivileged user once its listeners are open (daemon.Server, Client).
type privilegeDropper interface{ DropPrivileges() error }

// runForeground starts r and runs it until SIGINT or SIGTERM (drain and
// stop) or a fatal error; SIGHUP reloads.
func runForeground(ctx context.Context, r runner, logger *slog.Logger) error {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if err := r.Start(ctx); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- r.Wait() }()
	if d, ok := r.(privilegeDropper); ok {
		if err := d.DropPrivileges(); err != nil {
			r.Stop()
			<-done
			return err
		}
	}
	for {
		select {
		case err := <-done:
			return err
		case <-ctx.Done():
			r.Stop()
			return <-done
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				if err := r.Reload(); err != nil {
					logger.Error("reload failed; still running with the previous configuration", "err", err)
				} else {
					logger.Info("reloaded configuration, certificates and CRLs")
				}
				continue
			}
			logger.Info("stopping: draining streams", "signal", sig.String())
			r.Stop()
			err := <-done
			if errors.Is(err, context.Canceled) {
				err = nil
			}
			return err
		}
	}
}

// loggerFor builds the logger from the config's [log] table, with
// --log-level/--log-format winning when given explicitly.
func loggerFor(cmd *cobra.Command, l config.Log) (*slog.Logger, error) {
	level, format := l.Level, l.Format
	if f := cmd.Flags().Lookup("log-level"); f != nil && f.Changed || level == "" {
		level = logOpts.level
	}
	if f := cmd.Flags().Lookup("log-format"); f != nil && f.Changed || format == "" {
		format = logOpts.format
	}
	return newLogger(cmd.ErrOrStderr(), level, format)
}
