package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal pair: the test plays the user on the
// master side, the command runs with the replica as its terminal.
func openPTY(t *testing.T) (master, replica *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		m.Close()
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		m.Close()
		t.Fatalf("pty number: %v", err)
	}
	r, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Fatalf("open pty replica: %v", err)
	}
	t.Cleanup(func() { m.Close(); r.Close() })
	return m, r
}

// terminal is what a command printed on the pty so far.
type terminal struct {
	m    *os.File
	out  chan []byte
	seen bytes.Buffer
}

func newTerminal(m *os.File) *terminal {
	tm := &terminal{m: m, out: make(chan []byte, 64)}
	go func() {
		for {
			buf := make([]byte, 4096)
			n, err := m.Read(buf)
			if n > 0 {
				tm.out <- buf[:n]
			}
			if err != nil {
				close(tm.out)
				return
			}
		}
	}()
	return tm
}

// expect waits until the terminal shows s.
func (tm *terminal) expect(t *testing.T, s string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for !strings.Contains(tm.seen.String(), s) {
		select {
		case b, ok := <-tm.out:
			if !ok {
				t.Fatalf("terminal closed before %q; it showed %q", s, tm.seen.String())
			}
			tm.seen.Write(b)
		case <-deadline:
			t.Fatalf("no %q on the terminal; it showed %q", s, tm.seen.String())
		}
	}
}

// echoOff waits until the terminal no longer echoes, as a user's typing
// would come only after the prompt has turned echo off; it fails the test
// if echo stays on.
func echoOff(t *testing.T, tty *os.File) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		tio, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
		if err != nil {
			t.Fatalf("termios: %v", err)
		}
		if tio.Lflag&unix.ECHO == 0 {
			return
		}
	}
	t.Fatal("the prompt did not turn terminal echo off")
}

// The CA password prompt on a real terminal: asked twice without echo, the
// key comes out encrypted with it; a mismatch fails and writes nothing.
func TestPasswordPromptOnTerminal(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	run := func(dir string, answers ...string) (*terminal, error) {
		m, r := openPTY(t)
		cmd := exec.Command(exe, "pki", "init", "--dir", dir, "--org", "pty test")
		cmd.Env = append(os.Environ(), reexecEnv+"=1")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = r, r, r
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		tm := newTerminal(m)
		tm.expect(t, "New password for the CA keys: ")
		echoOff(t, r)
		fmt.Fprintf(m, "%s\r", answers[0])
		tm.expect(t, "Repeat: ")
		echoOff(t, r)
		fmt.Fprintf(m, "%s\r", answers[1])
		err := cmd.Wait()
		// Whatever the child printed last.
		for drained := false; !drained; {
			select {
			case b, ok := <-tm.out:
				if !ok {
					drained = true
				}
				tm.seen.Write(b)
			case <-time.After(200 * time.Millisecond):
				drained = true
			}
		}
		return tm, err
	}

	dir := filepath.Join(t.TempDir(), "pki")
	tm, err := run(dir, "correct horse", "correct horse")
	if err != nil {
		t.Fatalf("pki init on a terminal: %v\n%s", err, tm.seen.String())
	}
	if strings.Contains(tm.seen.String(), "correct horse") {
		t.Fatalf("the password was echoed:\n%s", tm.seen.String())
	}
	key, err := os.ReadFile(filepath.Join(dir, "root", "ca.key"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(key, []byte("ENCRYPTED PRIVATE KEY")) {
		t.Fatalf("root CA key not encrypted:\n%s", key)
	}
	pass := filepath.Join(t.TempDir(), "pass")
	os.WriteFile(pass, []byte("correct horse\n"), 0o600)
	cmd := exec.Command(exe, "pki", "issue", "client", "--ca", filepath.Join(dir, "client-ca"), "--name", "pty-user",
		"--password-file", pass, "--out-dir", t.TempDir())
	cmd.Env = append(os.Environ(), reexecEnv+"=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the typed password does not open the CA key: %v\n%s", err, out)
	}

	dir2 := filepath.Join(t.TempDir(), "pki")
	tm, err = run(dir2, "one thing", "another")
	if err == nil || !strings.Contains(tm.seen.String(), "passwords do not match") {
		t.Fatalf("mismatched passwords: %v\n%s", err, tm.seen.String())
	}
	if _, err := os.Stat(filepath.Join(dir2, "root", "ca.key")); err == nil {
		t.Fatal("a CA key was written after the passwords did not match")
	}
}
