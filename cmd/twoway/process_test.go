package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twoway/twoway/authority"
)

// proc is a twoway process whose JSON log lines the test can wait for.
type proc struct {
	t     *testing.T
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []map[string]any
	cond  *sync.Cond
	done  chan struct{}
	err   error
}

func startProc(t *testing.T, args ...string) *proc {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, append([]string{"--log-format", "json", "--log-level", "debug"}, args...)...)
	cmd.Env = append(os.Environ(), reexecEnv+"=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, cmd: cmd, done: make(chan struct{})}
	p.cond = sync.NewCond(&p.mu)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<16), 1<<20)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				m = map[string]any{"msg": "raw: " + sc.Text()}
			}
			p.mu.Lock()
			p.lines = append(p.lines, m)
			p.cond.Broadcast()
			p.mu.Unlock()
		}
		p.err = cmd.Wait()
		p.mu.Lock()
		close(p.done)
		p.cond.Broadcast()
		p.mu.Unlock()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			p.mu.Lock()
			for _, l := range p.lines {
				t.Logf("%s: %v", args[0], l)
			}
			p.mu.Unlock()
		}
	})
	return p
}

// waitLog blocks until a log line with msg appears (and matches fn, if
// given) or the process exits or the deadline passes.
func (p *proc) waitLog(msg string, within time.Duration, fn func(map[string]any) bool) map[string]any {
	p.t.Helper()
	timer := time.AfterFunc(within, func() { p.mu.Lock(); p.cond.Broadcast(); p.mu.Unlock() })
	defer timer.Stop()
	deadline := time.Now().Add(within)
	p.mu.Lock()
	defer p.mu.Unlock()
	seen := 0
	for {
		for ; seen < len(p.lines); seen++ {
			if l := p.lines[seen]; l["msg"] == msg && (fn == nil || fn(l)) {
				return l
			}
		}
		select {
		case <-p.done:
			p.t.Fatalf("process exited (%v) before logging %q", p.err, msg)
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("no %q log line within %v", msg, within)
		}
		p.cond.Wait()
	}
}

func (p *proc) wait(within time.Duration) error {
	p.t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(within):
		p.t.Fatalf("process did not exit within %v", within)
		return nil
	}
}

// peerName is the identity name a JSON log line names.
func peerName(l map[string]any) string {
	if p, ok := l["peer"].(map[string]any); ok {
		return fmt.Sprint(p["name"])
	}
	return ""
}

// echoServer echoes every connection on loopback until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); defer c.Close(); io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(t *testing.T, c net.Conn, msg string) error {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, msg); err != nil {
		return err
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != msg {
		return fmt.Errorf("echo %q, want %q", buf, msg)
	}
	return nil
}

// TestProcessForwardReloadDrain drives the real binary: a gateway from a
// config file and the port-forward mode, data through -L, a policy-denied
// target, SIGHUP after revoking the client (its live session must end
// within 5 s), and SIGTERM draining an open stream before exit.
func TestProcessForwardReloadDrain(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	echo := echoServer(t)
	denied := echoServer(t)
	g := startProcGateway(t, "dave", echo)
	res, cli, dir, conf, confPath, gw, gwAddr := g.res, g.cli, g.dir, g.conf, g.confPath, g.gw, g.addr

	fwd := startProc(t, "forward", "--server", gwAddr, "--cert", cli.CertFile, "--key", cli.KeyFile,
		"--ca", filepath.Join(dir, "pki/server-ca/bundle.crt"),
		"--control-socket", "off", "-L", "127.0.0.1:0:"+echo, "-L", "127.0.0.1:0:"+denied)
	listening := map[string]string{}
	for range 2 {
		l := fwd.waitLog("forward listening", 10*time.Second, func(l map[string]any) bool { return listening[l["forward"].(string)] == "" })
		listening[l["forward"].(string)] = l["addr"].(string)
	}
	fwd.waitLog("connected to gateway", 10*time.Second, nil)
	var okAddr, deniedAddr string
	for f, a := range listening {
		if strings.HasSuffix(f, echo) {
			okAddr = a
		} else {
			deniedAddr = a
		}
	}

	// Allowed target: data flows.
	c, err := net.Dial("tcp", okAddr)
	if err != nil {
		t.Fatal(err)
	}
	if err := roundTrip(t, c, "hello through the tunnel"); err != nil {
		t.Fatal(err)
	}
	c.Close()
	// Denied target: the gateway refuses with the rule that decided. The
	// forward resets the local connection, which on a busy machine can
	// happen before our dial has even returned: that is a refusal too.
	if d, err := net.Dial("tcp", deniedAddr); err == nil {
		if err := roundTrip(t, d, "x"); err == nil {
			t.Fatal("policy-denied target reachable")
		}
		d.Close()
	}
	gw.waitLog("stream refused", 5*time.Second, func(l map[string]any) bool {
		return strings.Contains(fmt.Sprint(l["reason"]), "default deny") && peerName(l) == "dave"
	})

	// Revoke dave, publish the CRL, SIGHUP: his live session ends within 5 s.
	if _, err := res.ClientCA.Revoke(cli.Cert.SerialNumber, "keyCompromise"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := res.ClientCA.CRL(authority.CRLOptions{}); err != nil {
		t.Fatal(err)
	}
	held, err := net.Dial("tcp", okAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if err := roundTrip(t, held, "before reload"); err != nil {
		t.Fatal(err)
	}
	gw.cmd.Process.Signal(syscall.SIGHUP)
	gw.waitLog("reloaded configuration, certificates and CRLs", 5*time.Second, nil)
	gw.waitLog("session closed", 5*time.Second, func(l map[string]any) bool {
		return strings.Contains(fmt.Sprint(l["reason"]), "revoked")
	})
	fwd.waitLog("gateway session lost; reconnecting", 5*time.Second, nil)
	if err := roundTrip(t, held, "after revocation"); err == nil {
		t.Fatal("stream of a revoked client still works after reload")
	}
	// And it cannot come back.
	gw.waitLog("connection refused", 10*time.Second, func(l map[string]any) bool { return l["check"] == "revocation" })

	// A broken config on SIGHUP changes nothing and is reported.
	os.WriteFile(confPath, []byte(conf+"\nbogus_key = 1\n"), 0o600)
	gw.cmd.Process.Signal(syscall.SIGHUP)
	gw.waitLog("reload failed; still running with the previous configuration", 5*time.Second, func(l map[string]any) bool {
		return strings.Contains(fmt.Sprint(l["err"]), "bogus_key")
	})

	// SIGTERM: the gateway stops and exits cleanly.
	fwd.cmd.Process.Signal(syscall.SIGTERM)
	if err := fwd.wait(10 * time.Second); err != nil {
		t.Fatalf("forward exit: %v", err)
	}
	gw.cmd.Process.Signal(syscall.SIGTERM)
	gw.waitLog("stopping: draining streams", 5*time.Second, nil)
	if err := gw.wait(10 * time.Second); err != nil {
		t.Fatalf("gateway exit: %v", err)
	}
}

// procGateway is a `twoway server` process with a fresh PKI in a temp dir: a
// server certificate for 127.0.0.1, a client certificate for one identity
// in group eng (admitted, and allowed to reach target only), a CRL.
type procGateway struct {
	res            *authority.InitResult
	cli            *authority.Issued
	dir            string
	conf, confPath string
	gw             *proc
	addr           string
}

func startProcGateway(t *testing.T, client, target string) *procGateway {
	t.Helper()
	return startProcGatewayWith(t, client, target, "", nil)
}

// startProcGatewayWith is startProcGateway with tlsExtra added to the [tls]
// table and before run once the PKI exists, before the gateway starts.
func startProcGatewayWith(t *testing.T, client, target, tlsExtra string, before func(*procGateway)) *procGateway {
	t.Helper()
	g := &procGateway{dir: t.TempDir()}
	res, err := authority.Init(filepath.Join(g.dir, "pki"), authority.InitOptions{Org: "proc test"})
	if err != nil {
		t.Fatal(err)
	}
	srvCert, err := res.ServerCA.Issue(authority.IssueRequest{Kind: authority.KindServer, Name: "127.0.0.1", OutDir: g.dir})
	if err != nil {
		t.Fatal(err)
	}
	if g.cli, err = res.ClientCA.Issue(authority.IssueRequest{Kind: authority.KindClient, Name: client, Groups: []string{"eng"}, OutDir: g.dir}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := res.ClientCA.CRL(authority.CRLOptions{}); err != nil {
		t.Fatal(err)
	}
	g.res = res
	g.conf = fmt.Sprintf(`listen = "127.0.0.1:0"
[tls]
cert = %q
key = %q
client_ca = "pki/client-ca/bundle.crt"
crls = ["pki/client-ca/crl.pem"]
%s
[policy.admit]
groups = ["eng"]
[[policy.rule]]
name = "echo-only"
groups = ["eng"]
targets = [%q]
[control]
socket = "off"
`, filepath.Base(srvCert.CertFile), filepath.Base(srvCert.KeyFile), tlsExtra, target)
	if before != nil {
		before(g)
	}
	g.confPath = filepath.Join(g.dir, "server.toml")
	if err := os.WriteFile(g.confPath, []byte(g.conf), 0o600); err != nil {
		t.Fatal(err)
	}
	g.gw = startProc(t, "server", "-c", g.confPath)
	g.addr = g.gw.waitLog("gateway listening", 10*time.Second, nil)["addr"].(string)
	return g
}

// TestProcessDrain: SIGTERM lets an open forwarded stream finish.
func TestProcessDrain(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	dir := t.TempDir()
	res, err := authority.Init(filepath.Join(dir, "pki"), authority.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	srvCert, _ := res.ServerCA.Issue(authority.IssueRequest{Kind: authority.KindServer, Name: "127.0.0.1", OutDir: dir})
	cli, _ := res.ClientCA.Issue(authority.IssueRequest{Kind: authority.KindClient, Name: "erin", OutDir: dir})
	echo := echoServer(t)
	conf := fmt.Sprintf("listen = \"127.0.0.1:0\"\n[tls]\ncert = %q\nkey = %q\nclient_ca = \"pki/client-ca/bundle.crt\"\n[policy.admit]\nidentities = [\"erin\"]\n[[policy.rule]]\nidentities = [\"erin\"]\ntargets = [%q]\n[control]\nsocket = \"off\"\n",
		srvCert.CertFile, srvCert.KeyFile, echo)
	confPath := filepath.Join(dir, "server.toml")
	os.WriteFile(confPath, []byte(conf), 0o600)
	gw := startProc(t, "server", "-c", confPath)
	gwAddr := gw.waitLog("gateway listening", 10*time.Second, nil)["addr"].(string)
	fwd := startProc(t, "forward", "--server", gwAddr, "--cert", cli.CertFile, "--key", cli.KeyFile,
		"--ca", filepath.Join(dir, "pki/server-ca/bundle.crt"), "--control-socket", "off", "-L", "127.0.0.1:0:"+echo)
	addr := fwd.waitLog("forward listening", 10*time.Second, nil)["addr"].(string)
	fwd.waitLog("connected to gateway", 10*time.Second, nil)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := roundTrip(t, c, "one"); err != nil {
		t.Fatal(err)
	}
	gw.cmd.Process.Signal(syscall.SIGTERM)
	gw.waitLog("stopping: draining streams", 5*time.Second, nil)
	// The open stream still works while the gateway drains...
	if err := roundTrip(t, c, "still here while draining"); err != nil {
		t.Fatalf("open stream cut by SIGTERM: %v", err)
	}
	// ...and once it ends, the gateway exits.
	c.Close()
	if err := gw.wait(15 * time.Second); err != nil {
		t.Fatalf("gateway exit: %v", err)
	}
}

// TestProcessStatus starts a gateway and a forward client as processes,
// reads `twoway status --json` from both, sends traffic, and checks that
// the counters moved; then kicks the client from the gateway.
func TestProcessStatus(t *testing.T) {
	if testing.Short() {
		t.Skip("process test")
	}
	dir := t.TempDir()
	res, err := authority.Init(filepath.Join(dir, "pki"), authority.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	srvCert, _ := res.ServerCA.Issue(authority.IssueRequest{Kind: authority.KindServer, Name: "127.0.0.1", OutDir: dir})
	cli, _ := res.ClientCA.Issue(authority.IssueRequest{Kind: authority.KindClient, Name: "frank", Groups: []string{"ops"}, OutDir: dir})
	echo := echoServer(t)
	gwSock, cliSock := filepath.Join(dir, "run", "gw.sock"), filepath.Join(dir, "run", "cli.sock")
	conf := fmt.Sprintf("listen = \"127.0.0.1:0\"\n[tls]\ncert = %q\nkey = %q\nclient_ca = \"pki/client-ca/bundle.crt\"\n[control]\nsocket = %q\n[policy.admit]\ngroups = [\"ops\"]\n[[policy.rule]]\ngroups = [\"ops\"]\ntargets = [%q]\n",
		srvCert.CertFile, srvCert.KeyFile, gwSock, echo)
	confPath := filepath.Join(dir, "server.toml")
	os.WriteFile(confPath, []byte(conf), 0o600)
	gw := startProc(t, "server", "-c", confPath)
	gwAddr := gw.waitLog("gateway listening", 10*time.Second, nil)["addr"].(string)
	fwd := startProc(t, "forward", "--server", gwAddr, "--cert", cli.CertFile, "--key", cli.KeyFile,
		"--ca", filepath.Join(dir, "pki/server-ca/bundle.crt"), "--control-socket", cliSock, "-L", "127.0.0.1:0:"+echo)
	addr := fwd.waitLog("forward listening", 10*time.Second, nil)["addr"].(string)
	fwd.waitLog("connected to gateway", 10*time.Second, nil)

	status := func(sock string) map[string]any {
		t.Helper()
		var out, errb strings.Builder
		root := newRootCmd()
		root.SetOut(&out)
		root.SetErr(&errb)
		root.SetArgs([]string{"status", "--socket", sock, "--json"})
		if err := root.Execute(); err != nil {
			t.Fatalf("status: %v %s", err, errb.String())
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(out.String()), &m); err != nil {
			t.Fatalf("status JSON: %v\n%s", err, out.String())
		}
		return m
	}
	session := func(m map[string]any) map[string]any {
		t.Helper()
		ss, _ := m["sessions"].([]any)
		if len(ss) != 1 {
			t.Fatalf("want 1 session, status has %v", m["sessions"])
		}
		return ss[0].(map[string]any)
	}
	num := func(m map[string]any, k string) float64 { v, _ := m[k].(float64); return v }

	g0, c0 := session(status(gwSock)), session(status(cliSock))
	if g0["identity"] != "frank" {
		t.Fatalf("gateway status names %v", g0["identity"])
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	payload := strings.Repeat("x", 256<<10)
	if err := roundTrip(t, c, payload); err != nil {
		t.Fatal(err)
	}
	c.Close()
	g1, c1 := session(status(gwSock)), session(status(cliSock))
	for _, k := range []string{"bytes_in", "bytes_out"} {
		if num(g1, k)-num(g0, k) < float64(len(payload)) {
			t.Errorf("gateway %s moved %v -> %v, want at least +%d", k, num(g0, k), num(g1, k), len(payload))
		}
		if num(c1, k)-num(c0, k) < float64(len(payload)) {
			t.Errorf("client %s moved %v -> %v, want at least +%d", k, num(c0, k), num(c1, k), len(payload))
		}
	}
	if g1["role"] != nil || status(gwSock)["role"] != "server" || status(cliSock)["role"] != "client" {
		t.Errorf("roles: %v / %v", status(gwSock)["role"], status(cliSock)["role"])
	}

	var out strings.Builder
	root := newRootCmd()
	root.SetOut(&out)
	root.SetArgs([]string{"kick", "frank", "--socket", gwSock})
	if err := root.Execute(); err != nil || !strings.Contains(out.String(), "kicked 1") {
		t.Fatalf("kick: %v %q", err, out.String())
	}
	gw.waitLog("session kicked by administrator", 5*time.Second, nil)
	fwd.waitLog("gateway session lost; reconnecting", 5*time.Second, nil)
}
