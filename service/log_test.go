package service

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/twoway/twoway/config"
	"github.com/twoway/twoway/daemon"
)

// fakeEventLog is kardianos' Logger recording severity and message.
type fakeEventLog struct {
	mu      sync.Mutex
	entries []string
}

func (f *fakeEventLog) add(sev string, v ...any) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.entries = append(f.entries, sev+": "+fmt.Sprint(v...))
	return nil
}
func (f *fakeEventLog) Error(v ...any) error   { return f.add("E", v...) }
func (f *fakeEventLog) Warning(v ...any) error { return f.add("W", v...) }
func (f *fakeEventLog) Info(v ...any) error    { return f.add("I", v...) }
func (f *fakeEventLog) Errorf(format string, a ...any) error {
	return f.add("E", fmt.Sprintf(format, a...))
}
func (f *fakeEventLog) Warningf(format string, a ...any) error {
	return f.add("W", fmt.Sprintf(format, a...))
}
func (f *fakeEventLog) Infof(format string, a ...any) error {
	return f.add("I", fmt.Sprintf(format, a...))
}

func TestServiceSysHandler(t *testing.T) {
	ev := &fakeEventLog{}
	h, err := newSysHandler(ev, func(w io.Writer) (slog.Handler, error) {
		return daemon.NewHandler(w, config.Log{Level: "info", Format: "json"})
	})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(h).With("peer", "alice")
	log.Debug("not shown")
	log.Info("session up", "streams", 3)
	log.WithGroup("tls").Warn("certificate expires soon", "days", 7)
	log.Error("accept failed", "err", "EMFILE")
	if len(ev.entries) != 3 {
		t.Fatalf("entries %q, want 3 (debug filtered)", ev.entries)
	}
	for i, want := range [][]string{
		{"I: {", `"msg":"session up"`, `"peer":"alice"`, `"streams":3`},
		{"W: {", `"msg":"certificate expires soon"`, `"tls":{"days":7}`},
		{"E: {", `"msg":"accept failed"`, `"err":"EMFILE"`},
	} {
		for _, part := range want {
			if !strings.Contains(ev.entries[i], part) {
				t.Errorf("entry %d %q lacks %q", i, ev.entries[i], part)
			}
		}
		if strings.HasSuffix(ev.entries[i], "\n") {
			t.Errorf("entry %d ends in a newline", i)
		}
	}
}

// TestSysHandlerConcurrent: derived handlers share one buffer; every
// message must arrive whole and alone (run with -race).
func TestServiceSysHandlerConcurrent(t *testing.T) {
	ev := &fakeEventLog{}
	h, err := newSysHandler(ev, func(w io.Writer) (slog.Handler, error) {
		return daemon.NewHandler(w, config.Log{Level: "info", Format: "text"})
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := slog.New(h).With("g", g)
			for i := range 50 {
				l.Info("m", "i", i)
			}
		}()
	}
	wg.Wait()
	if len(ev.entries) != 400 {
		t.Fatalf("%d entries, want 400", len(ev.entries))
	}
	for _, e := range ev.entries {
		if strings.Count(e, "msg=m") != 1 || strings.Contains(e, "\n") {
			t.Fatalf("mangled entry %q", e)
		}
	}
}
