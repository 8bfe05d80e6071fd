package authority

import (
	"os"

	"golang.org/x/sys/windows"
)

// allBytes locks the whole (empty) file: the range may lie beyond its end.
const allBytes = ^uint32(0)

// lockFile takes an exclusive LockFileEx lock on f, waiting for it. Such
// locks belong to the file handle, so two opens in one process exclude
// each other too.
func lockFile(f *os.File) error {
	return control(f, func(h windows.Handle) error {
		return windows.LockFileEx(h, windows.LOCKFILE_EXCLUSIVE_LOCK, 0, allBytes, allBytes, new(windows.Overlapped))
	})
}

func unlockFile(f *os.File) error {
	return control(f, func(h windows.Handle) error {
		return windows.UnlockFileEx(h, 0, allBytes, allBytes, new(windows.Overlapped))
	})
}

func control(f *os.File, op func(windows.Handle) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var oerr error
	if err := rc.Control(func(fd uintptr) { oerr = op(windows.Handle(fd)) }); err != nil {
		return err
	}
	return oerr
}
