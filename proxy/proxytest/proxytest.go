// Package proxytest starts real HTTP proxies for tests.
package proxytest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The credentials StartTinyproxy configures when asked for authentication.
const (
	TinyproxyUser     = "twoway"
	TinyproxyPassword = "proxy-secret"
)

// StartTinyproxy runs tinyproxy, a real HTTP proxy from the distribution,
// on a free loopback port until the test ends and returns its address;
// with auth it requires Basic authentication as TinyproxyUser. It skips
// the test when tinyproxy is not installed.
func StartTinyproxy(t testing.TB, auth bool) string {
	t.Helper()
	bin, err := exec.LookPath("tinyproxy")
	if err != nil {
		t.Skip("tinyproxy is not installed (apt-get install tinyproxy); .ci/run installs it")
	}
	dir := t.TempDir()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	ln.Close()
	conf := fmt.Sprintf("Port %s\nListen 127.0.0.1\nTimeout 60\nMaxClients 20\nAllow 127.0.0.1\nLogLevel Info\nLogFile %q\nPidFile %q\n",
		port, filepath.Join(dir, "tinyproxy.log"), filepath.Join(dir, "tinyproxy.pid"))
	if os.Geteuid() == 0 {
		// As root it would switch to the user "nobody", who cannot
		// write the log in our temp dir.
		_ = os.Chmod(dir, 0o777)
	}
	if auth {
		conf += fmt.Sprintf("BasicAuth %s %s\n", TinyproxyUser, TinyproxyPassword)
	}
	cf := filepath.Join(dir, "tinyproxy.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-d", "-c", cf)
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return addr
		}
		select {
		case <-done:
			log, _ := os.ReadFile(filepath.Join(dir, "tinyproxy.log"))
			t.Fatalf("tinyproxy exited: %s %s", out, log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("tinyproxy not listening on %s", addr)
		}
		time.Sleep(20 * time.Millisecond) // polling for a port with no event to wait on
	}
}
