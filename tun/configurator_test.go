package tun

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
)

// recorder is a Runner that records every command and answers from canned
// outputs; commands listed in fail return an error.
type recorder struct {
	mu      sync.Mutex
	cmds    []string
	outputs map[string]string
	fail    map[string]bool
}

func (r *recorder) run(_ context.Context, c Command) ([]byte, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := c.String()
	r.cmds = append(r.cmds, s)
	if r.fail[s] {
		return []byte(r.outputs[s]), fmt.Errorf("%s: exit status 1", s)
	}
	return []byte(r.outputs[s]), nil
}

func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.cmds
	r.cmds = nil
	return out
}

// fakePlatform plans n numbered changes; the ones in fail fail. Its undo
// records the step and fails for the steps in undoFail.
type fakePlatform struct {
	mu       sync.Mutex
	log      []string
	n        int
	fail     map[int]bool
	undoFail map[string]bool
	planned  int
}

func (p *fakePlatform) record(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.log = append(p.log, s)
}

func (p *fakePlatform) take() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := p.log
	p.log = nil
	return out
}

func (p *fakePlatform) plan(_ context.Context, dev string, _ Config) ([]change, error) {
	p.planned++
	var out []change
	for i := range p.n {
		out = append(out, change{
			what: fmt.Sprintf("change %d", i),
			do: func(context.Context) (*step, error) {
				if p.fail[i] {
					p.record(fmt.Sprintf("fail %d", i))
					return nil, errors.New("boom")
				}
				p.record(fmt.Sprintf("do %d", i))
				// Odd changes are tied to the interface.
				return &step{Kind: "fake", Dev: fmt.Sprint(i), BestEffort: i%2 == 1}, nil
			},
		})
	}
	return out, nil
}

func (p *fakePlatform) undo(_ context.Context, s step) error {
	if p.undoFail[s.Dev] {
		p.record("undo failed " + s.Dev)
		return errors.New("still busy")
	}
	p.record("undo " + s.Dev)
	return nil
}

func newTestConfigurator(t *testing.T, stateFile string, p platform) *configurator {
	t.Helper()
	c, err := newConfigurator(ConfiguratorOptions{StateFile: stateFile, Run: (&recorder{}).run})
	if err != nil {
		t.Fatal(err)
	}
	c.platform = p
	return c
}

func testDev() string {
	if runtime.GOOS == "darwin" {
		return "utun9"
	}
	return "twtest0"
}

func TestApplyJournalsAndUndoes(t *testing.T) {
	ctx := context.Background()
	stateFile := filepath.Join(t.TempDir(), "state", "tun.json")
	p := &fakePlatform{n: 3}
	c := newTestConfigurator(t, stateFile, p)

	undo, err := c.Apply(ctx, testDev(), validConfig())
	if err != nil {
		t.Fatal(err)
	}
	if got := p.take(); !slices.Equal(got, []string{"do 0", "do 1", "do 2"}) {
		t.Fatalf("applied %v", got)
	}
	fi, err := os.Stat(stateFile)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Errorf("state file mode %v, want 0600", fi.Mode().Perm())
	}
	st, err := readState(stateFile)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Undo) != 3 || st.Dev != testDev() || st.OS != runtime.GOOS {
		t.Fatalf("state %+v", st)
	}

	if _, err := c.Apply(ctx, testDev(), validConfig()); err == nil {
		t.Fatal("second Apply without undo succeeded")
	}
	if err := c.Cleanup(ctx); err == nil {
		t.Fatal("Cleanup while applied succeeded")
	}

	if err := undo(); err != nil {
		t.Fatal(err)
	}
	if got := p.take(); !slices.Equal(got, []string{"undo 2", "undo 1", "undo 0"}) {
		t.Fatalf("undone %v, want reverse order", got)
	}
	if _, err := os.Stat(stateFile); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("state file still there: %v", err)
	}
	if err := undo(); err != nil || len(p.take()) != 0 {
		t.Fatalf("second undo: %v", err)
	}
	// The configurator is free again.
	undo, err = c.Apply(ctx, testDev(), validConfig())
	if err != nil {
		t.Fatal(err)
	}
	if err := undo(); err != nil {
		t.Fatal(err)
	}
}

func TestApplyRollsBackOnFailure(t *testing.T) {
	stateFile := filepath.Join(t.TempDir(), "tun.json")
	p := &fakePlatform{n: 4, fail: map[int]bool{2: true}}
	c := newTestConfigurator(t, stateFile, p)
	_, err := c.Apply(context.Background(), testDev(), validConfig())
	if err == nil || !strings.Contains(err.Error(), "change 2: boom") {
		t.Fatalf("Apply = %v, want the failing change named", err)
	}
	if got := p.take(); !slices.Equal(got, []string{"do 0", "do 1", "fail 2", "undo 1", "undo 0"}) {
		t.Fatalf("log %v", got)
	}
	if _, err := os.Stat(stateFile); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("state file left after rollback: %v", err)
	}
}

func TestApplyValidatesFirst(t *testing.T) {
	p := &fakePlatform{n: 1}
	c := newTestConfigurator(t, filepath.Join(t.TempDir(), "tun.json"), p)
	bad := validConfig()
	bad.MTU = 10
	if _, err := c.Apply(context.Background(), testDev(), bad); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Apply = %v, want ErrInvalidConfig", err)
	}
	if _, err := c.Apply(context.Background(), "bad name", validConfig()); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Apply with bad name = %v, want ErrInvalidConfig", err)
	}
	if p.planned != 0 || len(p.take()) != 0 {
		t.Fatal("the platform was consulted for an invalid config")
	}
}

// TestCleanupAfterCrash: a process applies and dies; the next one, with a
// fresh configurator on the same state file, undoes what is recorded.
func TestCleanupAfterCrash(t *testing.T) {
	ctx := context.Background()
	stateFile := filepath.Join(t.TempDir(), "tun.json")
	crashed := newTestConfigurator(t, stateFile, &fakePlatform{n: 4})
	if _, err := crashed.Apply(ctx, testDev(), validConfig()); err != nil {
		t.Fatal(err)
	}

	// Undoing step 3 (best-effort) and step 2 (must succeed) fails.
	p := &fakePlatform{n: 1, undoFail: map[string]bool{"3": true, "2": true}}
	next := newTestConfigurator(t, stateFile, p)
	err := next.Cleanup(ctx)
	if err == nil || !strings.Contains(err.Error(), "still busy") {
		t.Fatalf("Cleanup = %v, want the failed step reported", err)
	}
	if got := p.take(); !slices.Equal(got, []string{"undo failed 3", "undo failed 2", "undo 1", "undo 0"}) {
		t.Fatalf("log %v", got)
	}
	// Only the failed must-succeed step is kept for the next attempt.
	st, err := readState(stateFile)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Undo) != 1 || st.Undo[0].Dev != "2" {
		t.Fatalf("kept %+v, want only step 2", st.Undo)
	}

	// Apply cleans up first, then applies.
	p.undoFail = nil
	undo, err := next.Apply(ctx, testDev(), validConfig())
	if err != nil {
		t.Fatal(err)
	}
	if got := p.take(); !slices.Equal(got, []string{"undo 2", "do 0"}) {
		t.Fatalf("log %v", got)
	}
	if err := undo(); err != nil {
		t.Fatal(err)
	}
	if err := next.Cleanup(ctx); err != nil {
		t.Fatalf("Cleanup without state file: %v", err)
	}
}

func TestCleanupRejectsBadStateFiles(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"garbage":       "not json",
		"unknown field": `{"version":1,"os":"` + runtime.GOOS + `","dev":"x","undo":[],"extra":1}`,
		"version":       `{"version":99,"os":"` + runtime.GOOS + `","dev":"x","undo":[]}`,
		"other os":      `{"version":1,"os":"plan9","dev":"x","undo":[]}`,
	} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		c := newTestConfigurator(t, path, &fakePlatform{})
		err := c.Cleanup(context.Background())
		if err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: Cleanup = %v, want an error naming the file", name, err)
		}
	}
}

func TestStateFileRoundTrip(t *testing.T) {
	st := state{Version: stateVersion, OS: runtime.GOOS, Dev: "twtest0", Undo: []step{
		{Kind: stepRoute, Dev: "eth0", Prefix: pfx("203.0.113.7/32")[0], Via: addrs("192.0.2.1")[0]},
		{Kind: stepAddr, Dev: "twtest0", Prefix: pfx("2001:db8::2/64")[0], BestEffort: true},
		{Kind: stepExec, Cmd: &Command{Name: "scutil", Stdin: "remove X\nquit\n"}},
		{Kind: stepResolvConf, ResolvConf: &resolvConfBackup{Path: "/etc/resolv.conf", Backup: "/etc/resolv.conf.twoway-orig"}},
		{Kind: stepMTU, Dev: "twtest0", MTU: 1500},
	}}
	data, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "s.json")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := readState(path)
	if err != nil {
		t.Fatal(err)
	}
	gotJSON, _ := json.Marshal(got)
	if string(gotJSON) != string(data) {
		t.Fatalf("round trip:\n%s\n%s", gotJSON, data)
	}
	// Zero values stay out of the file.
	if strings.Contains(string(data), `"via":""`) || strings.Contains(string(data), `"prefix":""`) {
		t.Errorf("zero values written: %s", data)
	}
}
