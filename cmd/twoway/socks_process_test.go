package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/proxy"
)

// A -D proxy with --socks-user/--socks-password-file requires them: a client
// without credentials or with a wrong password is refused, the right ones
// get through (checked with golang.org/x/net/proxy, an independent SOCKS5
// client); a password file readable by others is refused at start.
func TestProcessSOCKSAuth(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	echo := echoServer(t)
	g := startProcGateway(t, "erin", echo)
	dir, cli, gwAddr := g.dir, g.cli, g.addr

	pass := filepath.Join(dir, "socks.pass")
	if err := os.WriteFile(pass, []byte("s3cret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"forward", "--server", gwAddr, "--cert", cli.CertFile, "--key", cli.KeyFile,
		"--ca", filepath.Join(dir, "pki/server-ca/bundle.crt"), "--control-socket", "off",
		"-D", "127.0.0.1:0", "--socks-user", "erin", "--socks-password-file", pass}
	// Readable by others: refused before anything starts.
	bad := startProc(t, args...)
	if err := bad.wait(10 * time.Second); err == nil {
		t.Fatal("forward started with a world-readable SOCKS password file")
	}
	if out := bad.output(); !strings.Contains(out, "--socks-password-file") || !strings.Contains(out, "0644") {
		t.Fatalf("refusal does not name the flag and mode:\n%s", out)
	}
	if err := os.Chmod(pass, 0o600); err != nil {
		t.Fatal(err)
	}

	fwd := startProc(t, args...)
	socksAddr := fwd.waitLog("forward listening", 10*time.Second, nil)["addr"].(string)
	fwd.waitLog("connected to gateway", 10*time.Second, nil)

	for _, tc := range []struct {
		name string
		auth *proxy.Auth
		ok   bool
	}{
		{"no credentials", nil, false},
		{"wrong password", &proxy.Auth{User: "erin", Password: "guess"}, false},
		{"wrong user", &proxy.Auth{User: "mallory", Password: "s3cret"}, false},
		{"right credentials", &proxy.Auth{User: "erin", Password: "s3cret"}, true},
	} {
		d, err := proxy.SOCKS5("tcp", socksAddr, tc.auth, proxy.Direct)
		if err != nil {
			t.Fatal(err)
		}
		c, err := d.Dial("tcp", echo)
		if !tc.ok {
			if err == nil {
				c.Close()
				t.Fatalf("%s: SOCKS connect succeeded", tc.name)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if err := roundTrip(t, c, "through an authenticated proxy"); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		c.Close()
	}
}

// output is everything the process printed so far, one line each.
func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	for _, l := range p.lines {
		fmt.Fprintln(&b, l)
	}
	return b.String()
}
