package tun

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/twoway/twoway/internal/atomicfile"
)

// Configurator applies a Config to a TUN interface and undoes it.
//
// Every change is recorded in a state file as soon as it is made, so that
// Cleanup can undo what a crashed run left behind (the interface itself dies
// with the process, and its addresses and routes with it; host routes for
// Bypass, DNS settings and /etc/resolv.conf do not).
//
// A Configurator holds at most one applied Config at a time; its methods are
// safe for concurrent use.
type Configurator interface {
	// Apply validates cfg, then configures the interface dev (as named
	// by Device.Name). On error nothing of the half-applied state is left.
	// On success it returns undo, which restores what Apply changed and
	// removes the state file; undo is idempotent.
	//
	// If the state file from a previous run exists, Apply first runs
	// Cleanup, as a process that crashed while configured leaves one.
	Apply(ctx context.Context, dev string, cfg Config) (undo func() error, err error)

	// Cleanup undoes whatever the state file records and removes it. It is
	// a no-op when there is no state file. Changes that are already gone
	// (the interface vanished with the crashed process) are not errors.
	// A state file (or its directory) owned by another user or writable
	// by group/others is refused (ErrInsecureState), and so is one that
	// holds a step twoway does not record (ErrForeignStep).
	Cleanup(ctx context.Context) error
}

// ConfiguratorOptions configures NewConfigurator.
type ConfiguratorOptions struct {
	// StateFile records applied changes (required). twoway keeps it
	// under its state directory, e.g. /var/lib/twoway/tun-<dev>.json.
	StateFile string

	// ResolvConf is the resolv.conf rewritten on Linux when
	// systemd-resolved does not run; default /etc/resolv.conf.
	ResolvConf string

	// Run executes external commands (resolvectl, ifconfig, route,
	// networksetup, scutil, netsh, powershell); default ExecRunner. Tests
	// inject a recorder.
	Run Runner

	// Resolved reports whether systemd-resolved manages DNS on Linux;
	// default checks for its runtime directory and resolvectl on PATH, and
	// that ResolvConf sends lookups to it (resolvedServes).
	Resolved func() bool

	// Logger receives one line per change; default discards.
	Logger *slog.Logger
}

// NewConfigurator returns the Configurator for this OS (Linux: netlink plus
// systemd-resolved or resolv.conf; macOS: ifconfig, route, scutil and
// networksetup; Windows: netsh and powershell). ErrUnsupported elsewhere.
func NewConfigurator(opts ConfiguratorOptions) (Configurator, error) {
	c, err := newConfigurator(opts)
	if err != nil {
		return nil, err
	}
	p, err := newPlatform(c)
	if err != nil {
		return nil, err
	}
	c.platform = p
	return c, nil
}

// Cleanup undoes what the state file left by a previous run records, with
// the default options: for a start-up path, or a command, that only cleans
// up (Apply cleans up by itself). It restores /etc/resolv.conf only; a run
// configured with another resolv.conf is cleaned up by a Configurator
// with the same ResolvConf.
func Cleanup(ctx context.Context, stateFile string) error {
	c, err := NewConfigurator(ConfiguratorOptions{StateFile: stateFile})
	if err != nil {
		return err
	}
	return c.Cleanup(ctx)
}

// Command is one external program invocation.
type Command struct {
	Name  string   `json:"name"`
	Args  []string `json:"args,omitempty"`
	Stdin string   `json:"stdin,omitempty"` // fed to the program, for scutil
}

// String renders c for logs and errors (not for a shell).
func (c Command) String() string {
	s := strings.Join(append([]string{c.Name}, c.Args...), " ")
	if c.Stdin != "" {
		s += " <<< " + strings.ReplaceAll(strings.TrimSpace(c.Stdin), "\n", "; ")
	}
	return s
}

// Runner runs a Command and returns its combined output.
type Runner func(ctx context.Context, cmd Command) (output []byte, err error)

// ExecRunner runs cmd with os/exec, without a shell. A failure's error
// includes the program's trimmed output, which is where netsh and friends
// say what went wrong.
func ExecRunner(ctx context.Context, cmd Command) ([]byte, error) {
	c := exec.CommandContext(ctx, cmd.Name, cmd.Args...)
	if cmd.Stdin != "" {
		c.Stdin = strings.NewReader(cmd.Stdin)
	}
	out, err := c.CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if len(msg) > 300 {
			msg = msg[:300] + "..."
		}
		if msg != "" {
			return out, fmt.Errorf("%s: %w: %s", cmd, err, msg)
		}
		return out, fmt.Errorf("%s: %w", cmd, err)
	}
	return out, nil
}

// step is one recorded change in the state file, described by how to undo
// it. Kinds "exec" and "resolvconf" work everywhere; the netlink kinds are
// Linux's.
type step struct {
	Kind string `json:"kind"`
	// BestEffort steps concern the tunnel interface itself, which may
	// already be gone, taking the change with it; their failure is
	// logged, not returned.
	BestEffort bool `json:"best_effort,omitempty"`

	Cmd *Command `json:"cmd,omitempty"` // exec
	// Gone lists what Cmd prints when the change is not there any more
	// (a route that left with its network): that undo counts as done, or
	// the step would be retried, and Apply refused, forever.
	Gone []string `json:"gone,omitempty"`

	Dev    string       `json:"dev,omitempty"`   // netlink: interface the change is on
	Prefix netip.Prefix `json:"prefix,omitzero"` // addr, route
	Via    netip.Addr   `json:"via,omitzero"`    // route: gateway
	MTU    int          `json:"mtu,omitempty"`   // mtu: value to restore

	ResolvConf *resolvConfBackup `json:"resolvconf,omitempty"`
}

// Step kinds.
const (
	stepExec       = "exec"
	stepResolvConf = "resolvconf"
	stepAddr       = "addr"     // delete address Prefix from Dev
	stepRoute      = "route"    // delete route Prefix (via Via) on Dev
	stepMTU        = "mtu"      // set Dev's MTU back to MTU
	stepLinkDown   = "linkdown" // set Dev down
)

func (s step) String() string {
	switch {
	case s.Kind == stepExec && s.Cmd != nil:
		return s.Cmd.String()
	case s.Kind == stepResolvConf && s.ResolvConf != nil:
		return "restore " + s.ResolvConf.Path
	}
	switch s.Kind {
	case stepAddr:
		return fmt.Sprintf("delete address %s from %s", s.Prefix, s.Dev)
	case stepRoute:
		if s.Via.IsValid() {
			return fmt.Sprintf("delete route %s via %s dev %s", s.Prefix, s.Via, s.Dev)
		}
		return fmt.Sprintf("delete route %s dev %s", s.Prefix, s.Dev)
	case stepMTU:
		return fmt.Sprintf("set %s mtu %d", s.Dev, s.MTU)
	case stepLinkDown:
		return fmt.Sprintf("set %s down", s.Dev)
	}
	return s.Kind
}

// state is the state file's content.
type state struct {
	Version int    `json:"version"`
	OS      string `json:"os"`
	Dev     string `json:"dev"`
	// Undo lists the recorded changes in the order they were made; they
	// are undone in reverse.
	Undo []step `json:"undo"`
}

const stateVersion = 1

// change is one planned modification: do makes it and returns the step that
// undoes it (nil when it turned out to change nothing).
type change struct {
	what string
	do   func(ctx context.Context) (*step, error)
}

// platform is the per-OS half of a configurator.
type platform interface {
	// plan inspects the system (read-only) and returns the changes that
	// apply cfg to dev, in order.
	plan(ctx context.Context, dev string, cfg Config) ([]change, error)
	// undo reverts one recorded step of a platform-specific kind.
	undo(ctx context.Context, s step) error
}

// configurator is the OS-independent engine: validation, journaling,
// rollback and cleanup around a platform.
type configurator struct {
	opts     ConfiguratorOptions
	log      *slog.Logger
	platform platform

	// euid must own the state file and its directory (see
	// checkStatePerms); tests change it to play another user.
	euid int

	mu     sync.Mutex // serialises Apply, undo and Cleanup; guards active
	active bool       // an Apply is in force and its undo not yet run
}

func newConfigurator(opts ConfiguratorOptions) (*configurator, error) {
	if opts.StateFile == "" {
		return nil, errors.New("tun configurator: no state file")
	}
	if opts.ResolvConf == "" {
		opts.ResolvConf = "/etc/resolv.conf"
	}
	if opts.Run == nil {
		opts.Run = ExecRunner
	}
	if opts.Resolved == nil {
		rc := opts.ResolvConf
		opts.Resolved = func() bool { return resolvedRunning() && resolvedServes(rc) }
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &configurator{opts: opts, log: log, euid: os.Geteuid()}, nil
}

func (c *configurator) Apply(ctx context.Context, dev string, cfg Config) (func() error, error) {
	if err := ValidateName(runtime.GOOS, dev); err != nil {
		return nil, err
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.active {
		return nil, errors.New("tun configurator: a config is already applied; undo it first")
	}
	if err := c.cleanupLocked(ctx); err != nil {
		return nil, fmt.Errorf("clean up previous run: %w", err)
	}
	changes, err := c.platform.plan(ctx, dev, cfg)
	if err != nil {
		return nil, fmt.Errorf("configure %s: %w", dev, err)
	}
	st := &state{Version: stateVersion, OS: runtime.GOOS, Dev: dev}
	for _, ch := range changes {
		s, err := ch.do(ctx)
		if err == nil && s != nil {
			st.Undo = append(st.Undo, *s)
			err = c.save(st)
		}
		if err != nil {
			err = fmt.Errorf("configure %s: %s: %w", dev, ch.what, err)
			// Roll back even when ctx is what ended the apply.
			if rerr := c.undoAll(context.WithoutCancel(ctx), st); rerr != nil {
				return nil, errors.Join(err, fmt.Errorf("roll back: %w", rerr))
			}
			return nil, err
		}
		c.log.Debug("tun configured", "dev", dev, "change", ch.what)
	}
	c.active = true
	var once sync.Once
	var undoErr error
	undo := func() error {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			undoErr = c.undoAll(context.WithoutCancel(ctx), st)
			c.active = false
		})
		return undoErr
	}
	return undo, nil
}

func (c *configurator) Cleanup(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.active {
		return errors.New("tun configurator: a config is applied by this process; use its undo")
	}
	return c.cleanupLocked(ctx)
}

// cleanupLocked checks the state file's directory (which Apply then
// writes to) and the file, and replays the file only when it is the
// user's own and holds only what twoway records.
func (c *configurator) cleanupLocked(ctx context.Context) error {
	if err := checkStatePerms(c.opts.StateFile, c.euid); err != nil {
		return err
	}
	st, err := readState(c.opts.StateFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if st.OS != runtime.GOOS {
		return fmt.Errorf("state file %s was written on %s", c.opts.StateFile, st.OS)
	}
	if err := checkSteps(st, c.opts.ResolvConf); err != nil {
		return fmt.Errorf("state file %s: %w", c.opts.StateFile, err)
	}
	c.log.Warn("undoing tun configuration left by a previous run", "state_file", c.opts.StateFile, "dev", st.Dev, "changes", len(st.Undo))
	return c.undoAll(ctx, st)
}

// undoAll reverts st's steps newest first, then removes the state file, or,
// when a step that is not best-effort failed, rewrites it with just those
// steps for the next Cleanup. Every step carries on past failures, and all
// of them are idempotent, so a crash halfway through undoing is harmless.
func (c *configurator) undoAll(ctx context.Context, st *state) error {
	var errs []error
	var keep []step
	for i := len(st.Undo) - 1; i >= 0; i-- {
		s := st.Undo[i]
		err := c.undoStep(ctx, s)
		switch {
		case err == nil:
			c.log.Debug("tun change undone", "dev", st.Dev, "change", s.String())
		case s.BestEffort:
			c.log.Debug("tun change already gone", "dev", st.Dev, "change", s.String(), "err", err)
		default:
			errs = append(errs, fmt.Errorf("%s: %w", s, err))
			keep = append([]step{s}, keep...)
		}
	}
	st.Undo = keep
	if len(keep) > 0 {
		if err := c.save(st); err != nil {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	}
	if err := os.Remove(c.opts.StateFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, fmt.Errorf("remove state file: %w", err))
	}
	return errors.Join(errs...)
}

// gone reports whether msg, an undo command's output, says the change is
// not there any more.
func (s step) gone(msg string) bool {
	for _, g := range s.Gone {
		if strings.Contains(msg, g) {
			return true
		}
	}
	return false
}

func (c *configurator) undoStep(ctx context.Context, s step) error {
	switch s.Kind {
	case stepExec:
		if s.Cmd == nil {
			return errors.New("exec step without command")
		}
		out, err := c.opts.Run(ctx, *s.Cmd)
		if err != nil && s.gone(string(out)+" "+err.Error()) {
			c.log.Info("tun change was already gone", "change", s.String())
			return nil
		}
		return err
	case stepResolvConf:
		if s.ResolvConf == nil {
			return errors.New("resolvconf step without backup")
		}
		return restoreResolvConf(*s.ResolvConf)
	}
	return c.platform.undo(ctx, s)
}

// save writes st to the state file atomically (temp file, fsync, rename),
// mode 0600.
func (c *configurator) save(st *state) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(c.opts.StateFile, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("write state file: %w", err)
	}
	return nil
}

func readState(path string) (*state, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var st state
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("state file %s: version %d, want %d", path, st.Version, stateVersion)
	}
	return &st, nil
}

// writeFileAtomic replaces path with data so that readers see the old or the
// new content, never a mix, even across a crash.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return atomicfile.Write(path, data, perm)
}

// plannedCommand is a change made by running Do and undone by running Undo
// (nil: nothing to undo). BestEffort marks an Undo tied to the tunnel
// interface, which may be gone already. Gone: see step.Gone.
type plannedCommand struct {
	Do         Command
	Undo       *Command
	BestEffort bool
	Gone       []string
}

// execChanges turns planned commands into changes run by r.
func execChanges(r Runner, cmds []plannedCommand) []change {
	out := make([]change, len(cmds))
	for i, pc := range cmds {
		out[i] = change{
			what: pc.Do.String(),
			do: func(ctx context.Context) (*step, error) {
				if _, err := r(ctx, pc.Do); err != nil {
					return nil, err
				}
				if pc.Undo == nil {
					return nil, nil
				}
				return &step{Kind: stepExec, Cmd: pc.Undo, BestEffort: pc.BestEffort, Gone: pc.Gone}, nil
			},
		}
	}
	return out
}

// output runs cmd for discovery and returns its output as text.
func output(ctx context.Context, r Runner, cmd Command) (string, error) {
	out, err := r(ctx, cmd)
	if err != nil {
		return "", err
	}
	return string(out), nil
}

// execPlatform is a platform driven by external commands (macOS, Windows):
// planCmds inspects the system and returns the command list; every undo is
// an exec step, which the engine runs itself.
type execPlatform struct {
	run      Runner
	planCmds func(ctx context.Context, r Runner, dev string, cfg Config) ([]plannedCommand, error)
}

func (p *execPlatform) plan(ctx context.Context, dev string, cfg Config) ([]change, error) {
	cmds, err := p.planCmds(ctx, p.run, dev, cfg)
	if err != nil {
		return nil, err
	}
	return execChanges(p.run, cmds), nil
}

func (*execPlatform) undo(_ context.Context, s step) error {
	return fmt.Errorf("unknown state file step %q", s.Kind)
}
