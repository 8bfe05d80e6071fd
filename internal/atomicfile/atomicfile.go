// Package atomicfile writes files so that readers, and the next run after a
// crash, see either the old content or the new one, never a mix: the data
// goes to a temporary file in the same directory, is synced, and is then
// renamed (or linked) into place, and the directory is synced too.
package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Write replaces path with data, with mode perm exactly (the umask does not
// apply).
func Write(path string, data []byte, perm fs.FileMode) error {
	tmp, err := writeTemp(path, data, perm)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	syncDir(filepath.Dir(path))
	return nil
}

// Create writes data to a new file at path, with mode perm exactly. It
// fails with an error wrapping fs.ErrExist if path exists, even if it
// appears while Create runs.
func Create(path string, data []byte, perm fs.FileMode) error {
	if _, err := os.Lstat(path); err == nil {
		return &fs.PathError{Op: "create", Path: path, Err: fs.ErrExist}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	tmp, err := writeTemp(path, data, perm)
	if err != nil {
		return err
	}
	defer os.Remove(tmp) // after Link, only the name goes
	// Link, unlike rename, refuses to replace a file that appeared since.
	err = os.Link(tmp, path)
	switch {
	case err == nil:
	case errors.Is(err, fs.ErrExist):
		return &fs.PathError{Op: "create", Path: path, Err: fs.ErrExist}
	case noHardLinks(err):
		// Still exclusive, though a crash could leave a partial file.
		if err := createExclusive(path, data, perm); err != nil {
			return err
		}
	default:
		return err
	}
	syncDir(filepath.Dir(path))
	return nil
}

// writeTemp writes data to a synced temporary file next to path and returns
// its name.
func writeTemp(path string, data []byte, perm fs.FileMode) (string, error) {
	// CreateTemp makes the file 0600, so a key is never readable by others,
	// not even for an instant; Chmod widens only what is meant to be.
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return "", err
	}
	tmp := f.Name()
	if err := fill(f, data, perm); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("write %s: %w", tmp, err)
	}
	return tmp, nil
}

// fill sets f's mode, writes data, syncs and closes f.
func fill(f *os.File, data []byte, perm fs.FileMode) error {
	err := f.Chmod(perm)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// noHardLinks reports whether err from link(2) means the file system has no
// hard links (FAT, some network and FUSE file systems).
func noHardLinks(err error) bool {
	return errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.ENOTSUP) ||
		errors.Is(err, syscall.EOPNOTSUPP) || errors.Is(err, syscall.ENOSYS)
}

func createExclusive(path string, data []byte, perm fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if err := fill(f, data, perm); err != nil {
		os.Remove(path)
		return err
	}
	return nil
}

// syncDir makes a rename in dir durable. It is best effort: Windows cannot
// sync a directory, and a failure here leaves the file written, at worst
// reverting to the old one after a power cut.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	_ = d.Sync()
	d.Close()
}
