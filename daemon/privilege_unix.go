//go:build unix

package daemon

import (
	"fmt"
	"os"
	"syscall"
)

// dropTo sets the supplementary groups, the group and the user of every
// thread of the process (Go applies these to all threads), in that order:
// after setuid, setgid would no longer be allowed. From root, setuid also
// clears the permitted and ambient capabilities.
func dropTo(d *privilegeDrop) error {
	if err := syscall.Setgroups(d.groups); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setgid(d.gid); err != nil {
		return fmt.Errorf("setgid %d: %w", d.gid, err)
	}
	if err := syscall.Setuid(d.uid); err != nil {
		return fmt.Errorf("setuid %d: %w", d.uid, err)
	}
	if os.Geteuid() != d.uid || os.Getegid() != d.gid {
		return fmt.Errorf("still uid %d gid %d after dropping to %d:%d", os.Geteuid(), os.Getegid(), d.uid, d.gid)
	}
	return nil
}
