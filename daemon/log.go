package daemon

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/twoway/twoway/config"
)

// NewHandler is the daemon's log handler writing to w: text (logfmt) or
// JSON at the level the [log] table says. Commands let their
// --log-level/--log-format flags win by changing l first; the service sends
// the records to the Windows event log by handing it a buffer.
func NewHandler(w io.Writer, l config.Log) (slog.Handler, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(strings.ToLower(l.Level))); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", l.Level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	// Lower case for the flags' sake: --log-format JSON works; files are
	// validated to the lower-case spellings already.
	switch strings.ToLower(l.Format) {
	case "", "text":
		return slog.NewTextHandler(w, opts), nil
	case "json":
		return slog.NewJSONHandler(w, opts), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", l.Format)
}
