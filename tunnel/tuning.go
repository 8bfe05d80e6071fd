package tunnel

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/hashicorp/yamux"
)

// Tuning holds the multiplexer parameters. The zero value of any field
// means its default (see DefaultTuning, where each choice is explained).
// Both sides should use the same values; the gateway announces its own in
// the hello.
type Tuning struct {
	// StreamWindow is the per-stream receive window (yamux
	// MaxStreamWindowSize). One stream cannot go faster than
	// StreamWindow / RTT, and each stream may buffer up to this much at
	// the receiver when the local end reads slowly.
	StreamWindow uint32
	// MaxStreams bounds the streams a peer may have open on one session,
	// counting half-closed ones (yamux has no limit of its own).
	MaxStreams int
	// KeepAliveInterval is how long a silent session waits before pinging.
	KeepAliveInterval time.Duration
	// DeadPeerTimeout ends a session from which nothing at all has been
	// received for this long, and one whose writes have made no progress
	// for this long.
	DeadPeerTimeout time.Duration
	// StreamOpenTimeout bounds the wait for the peer to acknowledge a new
	// stream; yamux closes the session when it passes.
	StreamOpenTimeout time.Duration
	// StreamWriteTimeout bounds how long one stream Write may wait for its
	// turn on the connection (yamux ConnectionWriteTimeout).
	StreamWriteTimeout time.Duration
	// WriteBuffer bounds the bytes queued for the TLS connection by the
	// write coalescer.
	WriteBuffer int
	// CopyBuffer is the size of the pooled buffers used to copy between a
	// forwarded connection and its stream, one per direction.
	CopyBuffer int
	// NotSentLowat bounds the bytes the kernel holds unsent for the TLS
	// connection (TCP_NOTSENT_LOWAT, Linux and macOS); negative: the
	// kernel's default (its whole send buffer).
	NotSentLowat int

	// noCoalesce switches the write coalescer off (muxConn.direct), so
	// that benchmarks can measure what it buys; nothing else sets it.
	noCoalesce bool
}

// acceptBacklog is yamux's AcceptBacklog. yamux assumes it is the same on
// both sides (an opener never has more unacknowledged SYNs in flight than
// this), so it is a protocol constant rather than a knob.
const acceptBacklog = 256

// DefaultTuning returns the defaults, chosen for long-lived bulk streams
// over WAN links (the yamux defaults are tuned for RPC):
//
//   - StreamWindow 16 MiB. yamux's 256 KiB caps one stream at 256 KiB/RTT
//     (2.6 MB/s at 100 ms); 16 MiB allows ~1.3 Gbit/s at 100 ms. yamux only
//     buffers data actually in flight, so idle streams cost nothing; the
//     worst case, a peer filling every window while our side reads nothing,
//     is MaxStreams x StreamWindow, which is why MaxStreams is bounded.
//   - MaxStreams 1024: enough for a browser behind -D, bounded for the
//     worst case above.
//   - KeepAliveInterval 10 s, DeadPeerTimeout 25 s: a dead peer is noticed
//     within 25 s of the last byte it sent (our own watchdog, not yamux's
//     keepalive, whose ping timeout is tied to ConnectionWriteTimeout).
//   - StreamOpenTimeout 30 s: only a dead peer fails to acknowledge a SYN
//     for that long, and the watchdog has usually caught it first.
//   - StreamWriteTimeout 75 s. yamux's 10 s kills bulk transfers whenever a
//     stream waits behind others on a slow link; a truly stuck connection is
//     caught by DeadPeerTimeout on the socket write instead, so this only
//     bounds starvation of a single stream. When it fires the stream is
//     aborted on both sides (see reset in docs/PROTOCOL.md), never left
//     half-open (hashicorp/yamux#142).
//   - WriteBuffer 256 KiB. CopyBuffer 64 KiB less yamux's 12-byte frame
//     header, so one stream write is a frame of exactly four full 16 KiB
//     TLS records (bench/forward.sh measured ~10% less CPU per byte on one
//     stream than 32 KiB).
//   - NotSentLowat 128 KiB: the send buffer autotunes to megabytes, and
//     every packet of the session waits behind what it holds (on a
//     100 Mbit/s link, 4 MiB is a third of a second); bounding the unsent
//     part keeps the queue in twoway's managed queues instead, and 128 KiB
//     still covers the time the writer needs to refill it at 10 Gbit/s.
func DefaultTuning() Tuning {
	return Tuning{
		StreamWindow:       16 << 20,
		MaxStreams:         1024,
		KeepAliveInterval:  10 * time.Second,
		DeadPeerTimeout:    25 * time.Second,
		StreamOpenTimeout:  30 * time.Second,
		StreamWriteTimeout: 75 * time.Second,
		WriteBuffer:        256 << 10,
		CopyBuffer:         64<<10 - 12,
		NotSentLowat:       128 << 10,
	}
}

// minStreamWindow is yamux's initial (and minimum) window.
const minStreamWindow = 256 << 10

func (t Tuning) withDefaults() Tuning {
	d := DefaultTuning()
	if t.StreamWindow == 0 {
		t.StreamWindow = d.StreamWindow
	}
	if t.MaxStreams == 0 {
		t.MaxStreams = d.MaxStreams
	}
	if t.KeepAliveInterval == 0 {
		t.KeepAliveInterval = d.KeepAliveInterval
	}
	if t.DeadPeerTimeout == 0 {
		t.DeadPeerTimeout = d.DeadPeerTimeout
	}
	if t.StreamOpenTimeout == 0 {
		t.StreamOpenTimeout = d.StreamOpenTimeout
	}
	if t.StreamWriteTimeout == 0 {
		t.StreamWriteTimeout = d.StreamWriteTimeout
	}
	if t.WriteBuffer == 0 {
		t.WriteBuffer = d.WriteBuffer
	}
	if t.CopyBuffer == 0 {
		t.CopyBuffer = d.CopyBuffer
	}
	if t.NotSentLowat == 0 {
		t.NotSentLowat = d.NotSentLowat
	}
	return t
}

// Validate reports the first out-of-range value.
func (t Tuning) Validate() error {
	t = t.withDefaults()
	switch {
	case t.StreamWindow < minStreamWindow:
		return fmt.Errorf("stream window %d is below yamux's minimum %d", t.StreamWindow, minStreamWindow)
	case t.MaxStreams < 1:
		return errors.New("max streams must be at least 1")
	case t.KeepAliveInterval < 0 || t.DeadPeerTimeout < 0 || t.StreamOpenTimeout < 0 || t.StreamWriteTimeout < 0:
		return errors.New("timeouts must be positive")
	case t.DeadPeerTimeout <= t.KeepAliveInterval:
		return fmt.Errorf("dead-peer timeout %s must exceed the keepalive interval %s", t.DeadPeerTimeout, t.KeepAliveInterval)
	case t.WriteBuffer < 4<<10:
		return errors.New("write buffer must be at least 4 KiB")
	case t.CopyBuffer < 1<<10:
		return errors.New("copy buffer must be at least 1 KiB")
	}
	return nil
}

func (t Tuning) yamuxConfig(logger *slog.Logger) *yamux.Config {
	return &yamux.Config{
		AcceptBacklog: acceptBacklog,
		// Our watchdog does liveness (see session.watchdog); yamux still
		// wants a non-zero interval in its config.
		EnableKeepAlive:        false,
		KeepAliveInterval:      t.KeepAliveInterval,
		ConnectionWriteTimeout: t.StreamWriteTimeout,
		MaxStreamWindowSize:    t.StreamWindow,
		StreamOpenTimeout:      t.StreamOpenTimeout,
		// Zero disables yamux's close timer, which would reset a
		// half-closed stream after this long even while data still flows
		// the other way (a client that sent its request and closed, then
		// downloads for an hour). Streams are bounded by MaxStreams, which
		// counts half-closed ones, instead.
		StreamCloseTimeout: 0,
		Logger:             yamuxLogger{logger},
		LogOutput:          nil,
	}
}

// yamuxLogger sends yamux's own messages to slog at debug level: they are
// about individual frames ("discarding data for stream"), and the session
// logs the errors that matter itself.
type yamuxLogger struct{ l *slog.Logger }

func (y yamuxLogger) Print(v ...any) {
	y.l.Debug(strings.TrimSpace(fmt.Sprint(v...)), "component", "yamux")
}
func (y yamuxLogger) Printf(format string, v ...any) {
	y.l.Debug(strings.TrimSpace(fmt.Sprintf(format, v...)), "component", "yamux")
}
func (y yamuxLogger) Println(v ...any) {
	y.l.Debug(strings.TrimSpace(fmt.Sprintln(v...)), "component", "yamux")
}

var _ io.Writer = (*muxConn)(nil)
