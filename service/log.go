package service

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"

	kservice "github.com/kardianos/service"
)

// sysHandler sends each record, formatted by an ordinary text or JSON
// handler, to a service manager's logger (the Windows event log) at the
// record's severity. The event log has no structured fields, so the
// formatted line is the message.
type sysHandler struct {
	inner slog.Handler // writes into sink.buf
	sink  *sysSink
}

// sysSink is shared by a handler and everything derived from it.
type sysSink struct {
	log kservice.Logger
	mu  sync.Mutex // guards buf across Handle calls of all derived handlers
	buf bytes.Buffer
}

// newSysHandler returns a handler that formats with build's handler and
// writes to l.
func newSysHandler(l kservice.Logger, build func(w io.Writer) (slog.Handler, error)) (slog.Handler, error) {
	sink := &sysSink{log: l}
	inner, err := build(&sink.buf)
	if err != nil {
		return nil, err
	}
	return &sysHandler{inner: inner, sink: sink}, nil
}

func (h *sysHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.inner.Enabled(ctx, l) }

func (h *sysHandler) Handle(ctx context.Context, r slog.Record) error {
	h.sink.mu.Lock()
	defer h.sink.mu.Unlock()
	h.sink.buf.Reset()
	if err := h.inner.Handle(ctx, r); err != nil {
		return err
	}
	line := strings.TrimRight(h.sink.buf.String(), "\n")
	switch {
	case r.Level >= slog.LevelError:
		return h.sink.log.Error(line)
	case r.Level >= slog.LevelWarn:
		return h.sink.log.Warning(line)
	}
	return h.sink.log.Info(line)
}

func (h *sysHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &sysHandler{inner: h.inner.WithAttrs(attrs), sink: h.sink}
}

func (h *sysHandler) WithGroup(name string) slog.Handler {
	return &sysHandler{inner: h.inner.WithGroup(name), sink: h.sink}
}
