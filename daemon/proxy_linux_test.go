package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/twoway/twoway/config"
	"github.com/twoway/twoway/internal/nstest"
	"github.com/twoway/twoway/pki/pkitest"
	"github.com/twoway/twoway/proxy"
	"github.com/twoway/twoway/proxy/proxytest"
	"github.com/twoway/twoway/tunnel"
)

// TestProxyTraversal: a client whose client.toml names an HTTP proxy
// ([proxy] with a user and a password file) reaches its gateway through a
// real proxy (tinyproxy, requiring Basic authentication), and a client
// without the credentials is refused by the proxy with an error that says
// so. It runs in a network namespace of its own, where the gateway has the
// address 198.18.0.1 (a loopback gateway would be reached directly, as
// NO_PROXY conventions say).
func TestProxyTraversal(t *testing.T) {
	if !nstest.Inside() {
		flags := uintptr(syscall.CLONE_NEWNET)
		if os.Geteuid() != 0 {
			flags |= syscall.CLONE_NEWUSER
		}
		nstest.Rerun(t, "TestProxyTraversal", flags)
		return
	}
	for _, args := range [][]string{{"link", "set", "lo", "up"}, {"addr", "add", "198.18.0.1/32", "dev", "lo"}} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	paddr := proxytest.StartTinyproxy(t, true)

	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	h := pkitest.NewHierarchy(t)
	gw := h.ServerCA.Server(t, "198.18.0.1")
	alice := h.ClientCA.Client(t, "alice", "eng")
	write("gateway.crt", pkitest.PEM(gw.Certs()...))
	write("gateway.key", pkitest.KeyPEM(t, gw.Key))
	write("client-ca.crt", pkitest.PEM(h.ClientBundle()...))
	write("alice.crt", pkitest.PEM(alice.Certs()...))
	write("alice.key", pkitest.KeyPEM(t, alice.Key))
	write("server-ca.crt", pkitest.PEM(h.ServerBundle()...))
	write("proxy.pass", []byte(proxytest.TinyproxyPassword+"\n"))

	ln, err := net.Listen("tcp", "198.18.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gwAddr := ln.Addr().String()
	ln.Close()
	spath := write("server.toml", fmt.Appendf(nil, "listen = %q\n[tls]\ncert = \"gateway.crt\"\nkey = \"gateway.key\"\nclient_ca = \"client-ca.crt\"\n[control]\nsocket = \"off\"\n[policy.admit]\ngroups = [\"eng\"]\n", gwAddr))
	scfg, err := config.LoadServer(spath)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(spath, scfg, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Stop(); _ = srv.Wait() }()

	client := func(name, proxyTable string) (tunnel.SessionInfo, error) {
		cpath := write(name, fmt.Appendf(nil, "servers = [%q]\n[tls]\ncert = \"alice.crt\"\nkey = \"alice.key\"\nserver_ca = \"server-ca.crt\"\n[control]\nsocket = \"off\"\n[reconnect]\nmin_backoff = \"50ms\"\nmax_backoff = \"100ms\"\n%s", gwAddr, proxyTable))
		ccfg, err := config.LoadClient(cpath)
		if err != nil {
			t.Fatal(err)
		}
		up := make(chan tunnel.SessionInfo, 1)
		down := make(chan error, 1)
		note := func(err error) {
			select {
			case down <- err:
			default: // the first one is enough
			}
		}
		c, err := NewClient(ccfg, ClientHooks{
			OnSession:      func(si tunnel.SessionInfo) { up <- si },
			OnDisconnect:   note,
			OnConnectError: note,
		}, testLog(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer func() { c.Stop(); _ = c.Wait() }()
		select {
		case si := <-up:
			return si, nil
		case err := <-down:
			return tunnel.SessionInfo{}, err
		case <-time.After(20 * time.Second):
			t.Fatalf("%s: no session and no error in 20 s", name)
		}
		return tunnel.SessionInfo{}, nil
	}

	proxyURL := "http://" + paddr
	si, err := client("with-credentials.toml", fmt.Sprintf("[proxy]\nurl = %q\nuser = %q\npassword_file = \"proxy.pass\"\n", proxyURL, proxytest.TinyproxyUser))
	if err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	if si.Peer == nil || si.Peer.Name() != "198.18.0.1" {
		t.Fatalf("session with %v", si.Peer)
	}
	_, err = client("no-credentials.toml", fmt.Sprintf("[proxy]\nurl = %q\n", proxyURL))
	if !errors.Is(err, proxy.ErrAuth) {
		t.Fatalf("without the proxy's credentials: %v, want the proxy's refusal", err)
	}
	t.Logf("refused as expected: %v", err)
}
