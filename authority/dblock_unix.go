//go:build darwin || dragonfly || freebsd || illumos || linux || netbsd || openbsd

package authority

import (
	"os"

	"golang.org/x/sys/unix"
)

// lockFile takes an exclusive flock on f, waiting for it. flock locks
// belong to the open file, not the process, so two opens in one process
// exclude each other too (POSIX fcntl locks would not).
func lockFile(f *os.File) error {
	return flock(f, unix.LOCK_EX)
}

func unlockFile(f *os.File) error {
	return flock(f, unix.LOCK_UN)
}

func flock(f *os.File, how int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	err = rc.Control(func(fd uintptr) {
		for {
			// A signal can interrupt the wait; the lock is still wanted.
			if ferr = unix.Flock(int(fd), how); ferr != unix.EINTR {
				return
			}
		}
	})
	if err != nil {
		return err
	}
	return ferr
}
