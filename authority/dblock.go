package authority

import (
	"fmt"
	"os"
	"path/filepath"
)

// DBLockFile is the file, next to db.json, that every change to the
// database locks. db.json itself cannot carry the lock: each change
// replaces it by a rename, so a lock on it would guard a file that is no
// longer the database. The lock file is never replaced or removed, so
// every handle, in this process or another, locks the same file.
const DBLockFile = "db.lock"

// lockDB waits for the CA directory's database lock and returns the
// function that releases it. The lock is an OS file lock (flock on Unix,
// LockFileEx on Windows) on its own open file, so it excludes other
// goroutines as well as other processes, and the OS drops it if the
// process dies while holding it.
func lockDB(dir string) (unlock func(), err error) {
	path := filepath.Join(dir, DBLockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock CA database: %w", err)
	}
	if err := lockFile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock CA database %s: %w", path, err)
	}
	return func() {
		// Closing alone releases the lock, but on Windows only "when
		// resources allow"; unlocking first makes it immediate.
		_ = unlockFile(f)
		f.Close()
	}, nil
}
