//go:build !linux

package lan

import "log/slog"

func apply(Config, *slog.Logger) (func() error, error) { return nil, ErrUnsupported }

func cleanup() error { return nil }
