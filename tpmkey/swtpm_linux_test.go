package tpmkey

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// swtpm is a software TPM (Debian's swtpm) serving the raw TPM command
// protocol on a unix socket, as a TPM device would, with its state in a
// directory that outlives a restart.
type swtpm struct {
	t     testing.TB
	state string
	sock  string
	// port, when set, makes start serve TCP on 127.0.0.1:port with the
	// control channel on port+1 (what tpm2-tss's swtpm TCTI speaks)
	// instead of the unix socket.
	port int
	cmd  *exec.Cmd
	done chan struct{}
	log  bytes.Buffer
}

// startSWTPM starts a fresh software TPM for the test and stops it when the
// test ends. It skips the test when swtpm is not installed, unless CI is
// set: CI installs it (.ci/run), so there it must run.
func startSWTPM(t testing.TB) *swtpm {
	t.Helper()
	if _, err := exec.LookPath("swtpm"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("swtpm is not installed and CI is set: .ci/run must install swtpm")
		}
		t.Skip("swtpm is not installed (apt-get install swtpm swtpm-tools); .ci/run installs it")
	}
	dir := t.TempDir()
	s := &swtpm{t: t, state: filepath.Join(dir, "state"), sock: filepath.Join(dir, "tpm.sock")}
	if err := os.Mkdir(s.state, 0o700); err != nil {
		t.Fatal(err)
	}
	s.start()
	t.Cleanup(s.stop)
	return s
}

// start runs swtpm on the state directory and waits for its socket.
func (s *swtpm) start() {
	s.t.Helper()
	os.Remove(s.sock)
	s.log.Reset()
	network, addr := "unix", s.sock
	args := []string{"socket", "--tpm2", "--tpmstate", "dir=" + s.state,
		"--flags", "not-need-init,startup-clear", "--server"}
	if s.port != 0 {
		network, addr = "tcp", fmt.Sprintf("127.0.0.1:%d", s.port)
		args = append(args, fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", s.port),
			"--ctrl", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", s.port+1))
	} else {
		args = append(args, "type=unixio,path="+s.sock)
	}
	s.cmd = exec.Command("swtpm", args...)
	s.cmd.Stdout, s.cmd.Stderr = &s.log, &s.log
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.done = make(chan struct{})
	go func() { s.cmd.Wait(); close(s.done) }()
	// swtpm has no readiness signal but its socket, which exists (bound)
	// a moment before it listens: poll until a connection is accepted.
	// swtpm takes an empty connection as a client that left.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial(network, addr); err == nil {
			c.Close()
			return
		}
		select {
		case <-s.done:
			s.t.Fatalf("swtpm exited: %s", s.log.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("swtpm: nothing listening on %s after 10s", addr)
		}
	}
}

// stop kills swtpm (as a pulled device would go) and waits for it. Its
// state, including persistent keys, stays for a later start.
func (s *swtpm) stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// ref returns a reference to a key on this TPM.
func (s *swtpm) ref(query string) string { return "tpm:" + s.sock + "?" + query }
