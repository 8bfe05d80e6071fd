// Package nstest runs a test again in new Linux namespaces: the tests that
// create network namespaces, TUN devices, routes and nftables rules use it
// so that they run without root too (as root of a new user namespace,
// what "unshare -Urn" does) and never touch the host's own network.
package nstest

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
)

// Env is set in the re-run's environment.
const Env = "TWOWAY_NSTEST_CHILD"

// Inside reports whether this process is a re-run made by Rerun.
func Inside() bool { return os.Getenv(Env) != "" }

// Rerun runs the test binary again, for the test named name alone, in the
// namespaces flags asks for (syscall.CLONE_NEW*). With CLONE_NEWUSER the
// current user is root inside. The calling test should return after it:
// Rerun logs the re-run's output, fails the test if the re-run failed, and
// skips it, saying why, when the namespaces cannot be made (unprivileged
// user namespaces off) or the re-run skipped everything.
func Rerun(t *testing.T, name string, flags uintptr) {
	t.Helper()
	args := []string{"-test.run=^" + name + "$", "-test.count=1", "-test.timeout=10m"}
	if testing.Verbose() {
		args = append(args, "-test.v")
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), Env+"=1")
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: flags}
	how := "new namespaces"
	if flags&syscall.CLONE_NEWUSER != 0 {
		how = "a new user namespace, as its root"
		cmd.SysProcAttr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getuid(), Size: 1}}
		cmd.SysProcAttr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getgid(), Size: 1}}
	}
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot re-run in %s (%v): run as root, or enable unprivileged user namespaces", how, err)
	}
	err := cmd.Wait()
	t.Logf("re-run in %s:\n%s", how, out.String())
	if err != nil {
		t.Fatalf("%s in %s: %v", name, how, err)
	}
	if strings.Contains(out.String(), "--- SKIP") && !strings.Contains(out.String(), "--- PASS") {
		t.Skip("skipped in the re-run (see the log)")
	}
}

// CanOpenTUN reports whether /dev/net/tun opens for this user: from an
// unprivileged user namespace a 0600 device does not.
func CanOpenTUN() error {
	f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
	if err != nil {
		return err
	}
	return f.Close()
}
