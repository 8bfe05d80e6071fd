//go:build !windows

package service

import (
	"io/fs"
	"os"
	"os/user"
	"slices"
	"strconv"
	"syscall"
)

// readableBy reports whether u may read path by its owner, group and mode
// bits (ACLs aside: this is an install-time hint). Root is no exception:
// the unit's CapabilityBoundingSet leaves out CAP_DAC_OVERRIDE.
func readableBy(path string, u *user.User) (bool, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return false, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return true, nil
	}
	mode := fi.Mode().Perm()
	if strconv.FormatUint(uint64(st.Uid), 10) == u.Uid {
		return mode&0o400 != 0, nil
	}
	gid := strconv.FormatUint(uint64(st.Gid), 10)
	groups, _ := u.GroupIds()
	if gid == u.Gid || slices.Contains(groups, gid) {
		return mode&0o040 != 0, nil
	}
	return mode&fs.FileMode(0o004) != 0, nil
}
