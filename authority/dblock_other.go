//go:build !(darwin || dragonfly || freebsd || illumos || linux || netbsd || openbsd || windows)

package authority

import (
	"errors"
	"fmt"
	"os"
	"runtime"
)

// lockFile refuses: without a file lock two processes could write back
// each other's stale database and lose what the other recorded.
func lockFile(*os.File) error {
	return fmt.Errorf("no file locking on %s: %w", runtime.GOOS, errors.ErrUnsupported)
}

func unlockFile(*os.File) error { return nil }
