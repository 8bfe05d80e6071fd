//go:build windows

package control

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"

	"github.com/Microsoft/go-winio"

	"github.com/twoway/twoway/config"
)

// pipeSDDL lets LocalSystem, the Administrators group and the pipe's owner
// (the user the daemon runs as) connect, nobody else. P protects it from
// inherited entries.
const pipeSDDL = "D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;GA;;;OW)"

// DefaultPath is the named pipe of a daemon of the given role:
// \\.\pipe\twoway-ROLE.
func DefaultPath(role config.Role) string { return `\\.\pipe\twoway-` + string(role) }

// Candidates are the paths a command looks at for a daemon of the given
// role when no path is configured.
func Candidates(role config.Role) []string { return []string{DefaultPath(role)} }

// listen creates the named pipe; mode does not apply to pipes, whose
// access is set by pipeSDDL. A pipe disappears with its process, so there
// is nothing stale to remove.
func listen(path string, _ os.FileMode) (net.Listener, error) {
	ln, err := winio.ListenPipe(path, &winio.PipeConfig{SecurityDescriptor: pipeSDDL})
	if err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return nil, fmt.Errorf("%w: %s: %v", ErrInUse, path, err)
		}
		return nil, err
	}
	return ln, nil
}

func dial(ctx context.Context, path string) (net.Conn, error) {
	c, err := winio.DialPipeContext(ctx, path)
	switch {
	case err == nil:
		return c, nil
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%w (no pipe at %s)", ErrNotRunning, path)
	case errors.Is(err, fs.ErrPermission):
		return nil, fmt.Errorf("%s: access denied (run as an administrator)", path)
	}
	return nil, err
}

// exists reports whether a pipe is at path.
func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
