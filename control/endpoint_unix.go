//go:build !windows

package control

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/twoway/twoway/config"
)

// systemDir is where a daemon running as root puts its sockets.
func systemDir() string {
	if runtime.GOOS == "linux" {
		return "/run/twoway"
	}
	return "/var/run/twoway" // macOS and the BSDs have no /run
}

// DefaultPath is where a daemon of the given role puts its control socket:
// /run/twoway/ROLE.sock when running as root (or when there is no per-user
// runtime directory), otherwise $XDG_RUNTIME_DIR/twoway/ROLE.sock.
func DefaultPath(role config.Role) string {
	if xdg := os.Getenv("XDG_RUNTIME_DIR"); os.Geteuid() != 0 && xdg != "" {
		return filepath.Join(xdg, "twoway", string(role)+".sock")
	}
	return filepath.Join(systemDir(), string(role)+".sock")
}

// Candidates are the paths a command looks at for a daemon of the given
// role when no path is configured, most likely first: the system one, then
// the caller's own runtime directory.
func Candidates(role config.Role) []string {
	out := []string{filepath.Join(systemDir(), string(role)+".sock")}
	if xdg := os.Getenv("XDG_RUNTIME_DIR"); xdg != "" {
		out = append(out, filepath.Join(xdg, "twoway", string(role)+".sock"))
	}
	return out
}

// listen creates the socket at path with the given mode, in a directory
// only its owner (and group) may enter, replacing a socket a crashed
// daemon left behind.
func listen(path string, mode os.FileMode) (net.Listener, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("socket directory %s is not a directory", dir)
	}
	// Others must not be able to replace the socket. The directory we
	// create is 0750, which also keeps others out of the moment between
	// bind and chmod below, when the socket has the umask's mode.
	if perm := fi.Mode().Perm(); perm&0o002 != 0 {
		return nil, fmt.Errorf("%w: %s has mode %#o (use a directory only root or the daemon's user can write, e.g. 0750)", ErrUnsafeDir, dir, perm)
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, mode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("socket mode: %w", err)
	}
	return ln, nil
}

// removeStale removes path if it is a socket nobody listens on. Anything
// else there is an error: a live daemon, or a file that is not ours.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fmt.Errorf("%s exists and is not a socket; not removing it", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%w: another twoway daemon answers on %s", ErrInUse, path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("check existing socket %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}

func dial(ctx context.Context, path string) (net.Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	switch {
	case err == nil:
		return c, nil
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%w (no socket at %s)", ErrNotRunning, path)
	case errors.Is(err, syscall.ECONNREFUSED):
		return nil, fmt.Errorf("%w (stale socket at %s)", ErrNotRunning, path)
	case errors.Is(err, fs.ErrPermission):
		return nil, fmt.Errorf("%s: permission denied (run as root or as a member of the socket's group)", path)
	}
	return nil, err
}

// exists reports whether something is at path.
func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
