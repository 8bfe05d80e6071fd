package main

import (
	"log/slog"

	"github.com/spf13/cobra"

	"github.com/twoway/twoway/config"
	"github.com/twoway/twoway/daemon"
)

// logFlags are the root's persistent logging flags.
type logFlags struct {
	level  string
	format string
}

var logOpts logFlags

func addLogFlags(root *cobra.Command) {
	root.PersistentFlags().StringVar(&logOpts.level, "log-level", "info", "log level: debug, info, warn, error")
	root.PersistentFlags().StringVar(&logOpts.format, "log-format", "text", "log format: text or json")
}

// logSettings is the configuration's [log] table with --log-level and
// --log-format winning when given explicitly, and filling in what the file
// leaves out.
func logSettings(cmd *cobra.Command, l config.Log) config.Log {
	if f := cmd.Flags().Lookup("log-level"); f != nil && f.Changed || l.Level == "" {
		l.Level = logOpts.level
	}
	if f := cmd.Flags().Lookup("log-format"); f != nil && f.Changed || l.Format == "" {
		l.Format = logOpts.format
	}
	return l
}

// logHandler builds a daemon's log handler, writing to the command's
// stderr, from [log] and the flags.
func logHandler(cmd *cobra.Command) func(config.Log) (slog.Handler, error) {
	return func(l config.Log) (slog.Handler, error) {
		return daemon.NewHandler(cmd.ErrOrStderr(), logSettings(cmd, l))
	}
}
