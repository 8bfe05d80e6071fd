package tun

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
)

// Cleanup runs what a state file says, as root. Whoever can write the file
// could make it run anything, so the file and its directory must belong to
// the user running twoway and be writable by nobody else, and a state file
// may hold only the undo steps twoway itself records.
var (
	// ErrInsecureState: the state file or its directory is owned by
	// another user or writable by group/others.
	ErrInsecureState = errors.New("insecure state file")
	// ErrForeignStep: the state file holds a step twoway never records.
	ErrForeignStep = errors.New("state file holds a step twoway does not record")
)

// checkStatePerms refuses the state directory and, when it exists, the
// state file, unless each is owned by euid and not writable by group or
// others. A missing directory is fine: twoway creates it. Windows has no
// mode bits to check (its ACLs are the installer's business); euid < 0
// skips the owner check.
func checkStatePerms(path string, euid int) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	if err := checkOwnerMode("state directory", dir, fi, euid); err != nil {
		return err
	}
	fi, err = os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("state file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: %s is not a regular file (%s)", ErrInsecureState, path, fi.Mode().Type())
	}
	return checkOwnerMode("state file", path, fi, euid)
}

func checkOwnerMode(what, path string, fi fs.FileInfo, euid int) error {
	if uid, ok := fileOwner(fi); ok && euid >= 0 && uid != euid {
		return fmt.Errorf("%w: %s %s is owned by uid %d, not by uid %d that runs twoway; chown it or remove it", ErrInsecureState, what, path, uid, euid)
	}
	if mode := fi.Mode().Perm(); mode&0o022 != 0 {
		return fmt.Errorf("%w: %s %s is writable by group/others (mode %04o); chmod go-w it", ErrInsecureState, what, path, uint32(mode))
	}
	return nil
}

// undoCommands are the programs an exec step may run, each with the only
// argument shapes twoway records for it (see macos.go, netsh.go,
// resolved.go). Names are bare, as recorded: a path would let a state file
// pick any binary.
var undoCommands = map[string]func(c Command) bool{
	// resolvectl revert DEV
	"resolvectl": func(c Command) bool { return len(c.Args) == 2 && c.Args[0] == "revert" && c.Stdin == "" },
	// ifconfig DEV inet|inet6 ADDR -alias
	"ifconfig": func(c Command) bool {
		return len(c.Args) == 4 && (c.Args[1] == "inet" || c.Args[1] == "inet6") && c.Args[3] == "-alias" && c.Stdin == ""
	},
	// route -n delete ...
	"route": func(c Command) bool {
		return len(c.Args) > 2 && c.Args[0] == "-n" && c.Args[1] == "delete" && c.Stdin == ""
	},
	// networksetup -setdnsservers|-setsearchdomains SERVICE VALUE...
	"networksetup": func(c Command) bool {
		return len(c.Args) > 2 && (c.Args[0] == "-setdnsservers" || c.Args[0] == "-setsearchdomains") && c.Stdin == ""
	},
	// scutil <<< "remove State:/Network/Service/twoway-DEV/DNS; quit"
	"scutil": func(c Command) bool { return len(c.Args) == 0 && scutilUndo.MatchString(c.Stdin) },
	// netsh interface ipv4|ipv6 delete address|route ...,
	// netsh interface ipvN set dnsservers ... address=none ...
	"netsh": func(c Command) bool {
		a := c.Args
		if c.Stdin != "" || len(a) < 5 || a[0] != "interface" || (a[1] != "ipv4" && a[1] != "ipv6") {
			return false
		}
		return a[2] == "delete" && (a[3] == "address" || a[3] == "route") ||
			a[2] == "set" && a[3] == "dnsservers" && slices.Contains(a, "address=none")
	},
	// powershell.exe ... the NRPT rule removal, exactly
	"powershell.exe": func(c Command) bool {
		return c.Stdin == "" && len(c.Args) == 4 && slices.Equal(c.Args[:3], []string{"-NoProfile", "-NonInteractive", "-Command"}) &&
			nrptUndo.MatchString(c.Args[3])
	},
}

var (
	scutilUndo = regexp.MustCompile(`^remove State:/Network/Service/twoway-[A-Za-z0-9._-]+/DNS\nquit\n$`)
	nrptUndo   = regexp.MustCompile(`^Get-DnsClientNrptRule \| Where-Object \{ \$_\.Comment -eq 'twoway [A-Za-z0-9._-]+' \} \| Remove-DnsClientNrptRule -Force$`)
)

// checkSteps refuses a state file holding an exec step with a program or
// arguments twoway does not record, or a resolv.conf step for another file
// than resolvConf (with its backup next to it). The netlink kinds are
// checked by the Linux platform when it undoes them: it touches only TUN
// devices and routes carrying RouteProtocol.
func checkSteps(st *state, resolvConf string) error {
	for i, s := range st.Undo {
		switch s.Kind {
		case stepExec:
			if s.Cmd == nil {
				continue // undoStep reports it
			}
			if ok := undoCommands[s.Cmd.Name]; ok == nil || !ok(*s.Cmd) {
				return fmt.Errorf("%w: step %d runs %q", ErrForeignStep, i+1, s.Cmd.String())
			}
		case stepResolvConf:
			if b := s.ResolvConf; b != nil && (b.Path != resolvConf || b.Backup != "" && b.Backup != resolvConf+backupSuffix) {
				return fmt.Errorf("%w: step %d restores %s from %s; only %s may be restored (from %s)",
					ErrForeignStep, i+1, b.Path, b.Backup, resolvConf, resolvConf+backupSuffix)
			}
		}
	}
	return nil
}
