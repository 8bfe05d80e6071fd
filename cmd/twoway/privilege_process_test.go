package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// nobody is the account the privilege tests drop to; every Linux system
// has it.
const nobody = 65534

// procStatus returns the fields of a /proc/PID/status line, e.g. "Uid".
func procStatus(t *testing.T, pid int, key string) []string {
	t.Helper()
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && k == key {
			return strings.Fields(v)
		}
	}
	t.Fatalf("no %s in /proc/%d/status", key, pid)
	return nil
}

// TestProcessDropsToUser: a gateway without [vpn] started as root goes on
// as the configured user once it listens: real, effective, saved and
// file-system uid and gid are nobody's, it holds no capabilities, and a
// client still gets through.
func TestProcessDropsToUser(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: the gateway must start as root to drop to another user")
	}
	echo := echoServer(t)
	g := startProcGatewayWith(t, "ivan", echo, "", func(g *procGateway) {
		g.conf = "user = \"nobody\"\n" + g.conf
	})
	g.gw.waitLog("dropped root privileges; reloads read files as this user, and -R listeners cannot bind ports below 1024", 10*time.Second, nil)
	pid := g.gw.cmd.Process.Pid
	for _, key := range []string{"Uid", "Gid"} {
		for _, id := range procStatus(t, pid, key) {
			if id != strconv.Itoa(nobody) {
				t.Fatalf("%s after start: %v, want all %d", key, procStatus(t, pid, key), nobody)
			}
		}
	}
	for _, key := range []string{"CapEff", "CapPrm", "CapAmb"} {
		if got := procStatus(t, pid, key)[0]; strings.Trim(got, "0") != "" {
			t.Errorf("%s = %s after the drop, want none", key, got)
		}
	}
	fwd := startProc(t, "forward", "--server", g.addr, "--cert", g.cli.CertFile, "--key", g.cli.KeyFile,
		"--ca", filepath.Join(g.dir, "pki/server-ca/bundle.crt"), "--control-socket", "off", "--user", "root", "-L", "127.0.0.1:0:"+echo)
	fwd.waitLog("connected to gateway", 10*time.Second, nil)
}

// TestProcessDropsNetAdmin: a gateway without [vpn] that a unit starts as
// an unprivileged user with CAP_NET_ADMIN in its ambient set (as the
// packaged units do, for VPN mode) gives CAP_NET_ADMIN up once started,
// and keeps CAP_NET_BIND_SERVICE. The binary is built without cgo, as the
// packages build it: only then can Go change every thread's capabilities.
func TestProcessDropsNetAdmin(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to start a process as nobody with ambient capabilities")
	}
	bin := filepath.Join(t.TempDir(), "twoway")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if err := os.Chmod(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	echo := echoServer(t)
	g := startProcGatewayWith(t, "judy", echo, "", nil) // for its PKI and config
	g.gw.cmd.Process.Kill()
	// The second gateway runs as nobody: it must be able to read its files.
	if err := filepath.Walk(g.dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, nobody, nobody)
	}); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(g.dir), 0o755); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(bin, "--log-format", "json", "server", "-c", g.confPath)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential:  &syscall.Credential{Uid: nobody, Gid: nobody},
		AmbientCaps: []uintptr{unix.CAP_NET_ADMIN, unix.CAP_NET_BIND_SERVICE},
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var seen []string
	dropped := false
	for sc := bufio.NewScanner(stderr); !dropped && sc.Scan(); {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue
		}
		msg, _ := m["msg"].(string)
		seen = append(seen, msg)
		dropped = msg == "dropped CAP_NET_ADMIN: no [vpn] in the configuration"
	}
	if !dropped {
		t.Fatalf("the gateway exited without dropping CAP_NET_ADMIN; it logged %q", seen)
	}
	for _, key := range []string{"CapEff", "CapPrm", "CapAmb"} {
		caps, err := strconv.ParseUint(procStatus(t, cmd.Process.Pid, key)[0], 16, 64)
		if err != nil {
			t.Fatal(err)
		}
		if caps&(1<<unix.CAP_NET_ADMIN) != 0 || caps&(1<<unix.CAP_NET_BIND_SERVICE) == 0 {
			t.Errorf("%s = %#x after start: want CAP_NET_BIND_SERVICE without CAP_NET_ADMIN", key, caps)
		}
	}
}
