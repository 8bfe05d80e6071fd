package daemon_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twoway/twoway/config"
	"github.com/twoway/twoway/daemon"
	"github.com/twoway/twoway/internal/nstest"
	"github.com/twoway/twoway/lan"
	"github.com/twoway/twoway/pki/pkitest"
	"go.uber.org/goleak"
)

// This file tests VPN mode end to end with real TUN devices, routes,
// forwarding and nftables, in network namespaces the test creates and
// removes: a corporate host, a gateway and two clients, joined by veth
// pairs, using only 198.18.0.0/15 and 2001:db8::/32. The gateway, the
// clients and the helpers (a TCP data source on the corporate host, a
// fetcher on a client) are this test binary re-executed in a role (see
// TestMain) under "ip netns exec". Nothing touches the host's own
// interfaces, routes, firewall or resolv.conf: the nftables table lives in
// the gateway namespace and DNS goes to temp resolv.conf files.

const roleEnv = "TWOWAY_DAEMON_TEST_ROLE"

// privateRun gives the re-run a /run of its own: "ip netns add" keeps its
// namespaces under /run/netns, which a user namespace may not write. The
// mount namespace is the re-run's own, so nothing outside sees the tmpfs.
func privateRun(t *testing.T) {
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		t.Fatalf("making mounts private: %v", err)
	}
	if err := syscall.Mount("twoway-test", "/run", "tmpfs", 0, "mode=0755"); err != nil {
		t.Fatalf("mounting a private /run: %v", err)
	}
}

// TestMain runs a role when the binary is re-executed as one; otherwise
// it runs the tests and fails the package if any goroutine outlives them
// (main_nolinux_test.go does the same where there are no roles).
func TestMain(m *testing.M) {
	if role := os.Getenv(roleEnv); role != "" {
		os.Exit(runRole(role, os.Args[1:]))
	}
	goleak.VerifyTestMain(m)
}

// runRole is the re-executed binary: a gateway or client daemon run until
// SIGTERM (as the twoway commands do), a data source or a fetcher.
func runRole(role string, args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "role error:", err); return 1 }
	switch role {
	case "server":
		cfg, err := config.LoadServer(args[0])
		if err != nil {
			return fail(err)
		}
		srv, err := daemon.NewServer(args[0], cfg, logger)
		if err != nil {
			return fail(err)
		}
		if err := srv.Start(ctx); err != nil {
			return fail(err)
		}
		<-ctx.Done()
		srv.Stop()
		fmt.Fprintln(os.Stderr, "role stopped")
		return 0
	case "client":
		cfg, err := config.LoadClient(args[0])
		if err != nil {
			return fail(err)
		}
		c, err := daemon.NewClient(cfg, daemon.ClientHooks{}, logger)
		if err != nil {
			return fail(err)
		}
		if err := c.Start(ctx); err != nil {
			return fail(err)
		}
		<-ctx.Done()
		c.Stop()
		fmt.Fprintln(os.Stderr, "role stopped")
		return 0
	case "source":
		// Serves, on every address given, the requested number of bytes
		// of the deterministic stream (8-byte big-endian length first).
		for _, a := range args {
			ln, err := net.Listen("tcp", a)
			if err != nil {
				return fail(err)
			}
			go serveSource(ln)
		}
		fmt.Fprintln(os.Stderr, "source ready")
		<-ctx.Done()
		return 0
	case "fetch":
		// fetch ADDR SIZE TIMEOUT [push]: prints bytes and SHA-256
		// received, or with push those the source received from us.
		size, _ := strconv.ParseInt(args[1], 10, 64)
		timeout, _ := time.ParseDuration(args[2])
		c, err := net.DialTimeout("tcp", args[0], timeout)
		if err != nil {
			fmt.Println("error:", err)
			return 1
		}
		defer c.Close()
		var req [8]byte
		push := len(args) > 3 && args[3] == "push"
		if push {
			binary.BigEndian.PutUint64(req[:], uint64(size)|pushFlag)
		} else {
			binary.BigEndian.PutUint64(req[:], uint64(size))
		}
		if _, err := c.Write(req[:]); err != nil {
			fmt.Println("error:", err)
			return 1
		}
		if push {
			start := time.Now()
			var res [40]byte
			err := writeStream(c, size)
			if err == nil {
				err = c.(*net.TCPConn).CloseWrite()
			}
			if err == nil {
				_, err = io.ReadFull(c, res[:])
			}
			if err != nil {
				fmt.Println("error:", err)
				return 1
			}
			fmt.Printf("bytes=%d sha256=%x seconds=%.3f\n", binary.BigEndian.Uint64(res[32:]), res[:32], time.Since(start).Seconds())
			return 0
		}
		h := sha256.New()
		start := time.Now()
		n, err := io.Copy(h, c)
		if err != nil {
			fmt.Println("error:", err)
			return 1
		}
		fmt.Printf("bytes=%d sha256=%x seconds=%.3f\n", n, h.Sum(nil), time.Since(start).Seconds())
		return 0
	}
	if code, ok := runFleetRole(ctx, role, args); ok {
		return code
	}
	return fail(fmt.Errorf("unknown role %q", role))
}

func serveSource(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		fmt.Fprintln(os.Stderr, "source: connection from", c.RemoteAddr())
		go func() {
			defer c.Close()
			var req [8]byte
			if _, err := io.ReadFull(c, req[:]); err != nil {
				return
			}
			size := binary.BigEndian.Uint64(req[:])
			if size&pushFlag == 0 {
				_ = writeStream(c, int64(size))
				return
			}
			// Upload: hash what arrives, answer hash and count.
			h := sha256.New()
			n, _ := io.Copy(h, io.LimitReader(c, int64(size&^pushFlag)))
			_, _ = c.Write(binary.BigEndian.AppendUint64(h.Sum(nil), uint64(n)))
		}()
	}
}

// pushFlag in a request to the source asks it to receive instead of send.
const pushFlag = 1 << 63

// writeStream writes size bytes of a fixed pseudo-random stream.
func writeStream(w io.Writer, size int64) error {
	rng := rand.NewChaCha8([32]byte{'t', 'w', 'o', 'w', 'a', 'y'})
	buf := make([]byte, 256<<10)
	for size > 0 {
		n := min(int64(len(buf)), size)
		_, _ = rng.Read(buf[:n])
		if _, err := w.Write(buf[:n]); err != nil {
			return err
		}
		size -= n
	}
	return nil
}

func streamSum(size int64) string {
	h := sha256.New()
	_ = writeStream(h, size)
	return hex.EncodeToString(h.Sum(nil))
}

// proc is a re-executed role in a namespace, with its output as lines.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}

	mu      sync.Mutex // guards lines and changed
	lines   []string
	changed chan struct{} // closed and replaced on every new line
}

func startRole(t *testing.T, ns, role string, args ...string) *proc {
	t.Helper()
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns, os.Args[0]}, args...)...)
	cmd.Env = append(os.Environ(), roleEnv+"="+role)
	r, w := io.Pipe()
	cmd.Stdout, cmd.Stderr = w, w
	p := &proc{name: role + "@" + ns, cmd: cmd, done: make(chan struct{}), changed: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, sc.Text())
			close(p.changed)
			p.changed = make(chan struct{})
			p.mu.Unlock()
		}
	}()
	go func() { _ = cmd.Wait(); w.Close(); close(p.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			p.mu.Lock()
			t.Logf("output of %s:\n%s", p.name, strings.Join(p.lines, "\n"))
			p.mu.Unlock()
		}
	})
	return p
}

// waitLine waits for a line containing every one of subs that is not
// among the first `after` lines, and returns it and its index.
func (p *proc) waitLine(t *testing.T, after int, subs ...string) (string, int) {
	t.Helper()
	timer := time.NewTimer(30 * time.Second)
	defer timer.Stop()
	for {
		p.mu.Lock()
		for i := after; i < len(p.lines); i++ {
			ok := true
			for _, s := range subs {
				ok = ok && strings.Contains(p.lines[i], s)
			}
			if ok {
				line := p.lines[i]
				p.mu.Unlock()
				return line, i
			}
		}
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-p.done:
			t.Fatalf("%s exited before printing %q", p.name, subs)
		case <-timer.C:
			t.Fatalf("%s did not print %q within 30s", p.name, subs)
		}
	}
}

// has reports whether a line after the first after contains sub.
func (p *proc) has(after int, sub string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.lines[min(after, len(p.lines)):] {
		if strings.Contains(l, sub) {
			return true
		}
	}
	return false
}

func (p *proc) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.lines)
}

// stop sends SIGTERM and waits for the exit.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not exit after SIGTERM", p.name)
	}
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// try runs a command that may fail and returns its output and error.
func try(args ...string) (string, error) {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	return string(out), err
}

// topology creates the namespaces and links; Cleanup removes them (and
// with them every interface, route and nftables rule inside).
type topology struct{ corp, gw, c1, c2 string }

func newTopology(t *testing.T) topology {
	t.Helper()
	id := strconv.Itoa(os.Getpid())
	tp := topology{corp: "twcorp" + id, gw: "twgw" + id, c1: "twc1" + id, c2: "twc2" + id}
	for _, ns := range []string{tp.corp, tp.gw, tp.c1, tp.c2} {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { _, _ = try("ip", "netns", "del", ns) })
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	// veth pairs are created inside the gateway namespace, never in the
	// host's, and one end is moved straight to the peer namespace.
	link := func(gwEnd, peerNS, peerEnd string, gwAddrs, peerAddrs []string) {
		run(t, "ip", "-n", tp.gw, "link", "add", gwEnd, "type", "veth", "peer", "name", peerEnd, "netns", peerNS)
		for _, a := range gwAddrs {
			run(t, "ip", "-n", tp.gw, "addr", "add", a, "dev", gwEnd, "nodad")
		}
		for _, a := range peerAddrs {
			run(t, "ip", "-n", peerNS, "addr", "add", a, "dev", peerEnd, "nodad")
		}
		run(t, "ip", "-n", tp.gw, "link", "set", gwEnd, "up")
		run(t, "ip", "-n", peerNS, "link", "set", peerEnd, "up")
	}
	link("lan0", tp.corp, "corp0", []string{"198.18.0.1/24", "2001:db8:1::1/64"}, []string{"198.18.0.10/24", "2001:db8:1::10/64"})
	link("wan1", tp.c1, "eth0", []string{"198.19.1.1/24"}, []string{"198.19.1.2/24"})
	link("wan2", tp.c2, "eth0", []string{"198.19.2.1/24"}, []string{"198.19.2.2/24"})
	return tp
}

func writeFile(t *testing.T, path, data string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// tunAddrs returns the addresses on dev in ns, as "198.18.100.2/24".
func tunAddrs(t *testing.T, ns, dev string) []string {
	t.Helper()
	var out []string
	for _, l := range strings.Split(run(t, "ip", "-n", ns, "-o", "addr", "show", "dev", dev, "scope", "global"), "\n") {
		if f := strings.Fields(l); len(f) > 3 {
			out = append(out, f[3])
		}
	}
	return out
}

func routes(t *testing.T, ns string) string {
	t.Helper()
	return run(t, "ip", "-n", ns, "route", "show", "table", "all")
}

// asNetnsRoot makes the calling namespace test run as root: directly when
// the process is root, otherwise by re-running the test as root of a new
// user namespace (with a mount namespace of its own for "ip netns add",
// see privateRun). It skips the test, saying why, when neither can be,
// and reports false when the re-run did the work and the caller must
// return.
func asNetnsRoot(t *testing.T) bool {
	t.Helper()
	if testing.Short() {
		t.Skip("network namespace test skipped with -short")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command (iproute2)")
	}
	if os.Geteuid() != 0 {
		if err := nstest.CanOpenTUN(); err != nil {
			t.Skipf("needs root, or /dev/net/tun open to this user for a user namespace (unshare -Urn): %v", err)
		}
		nstest.Rerun(t, t.Name(), syscall.CLONE_NEWUSER|syscall.CLONE_NEWNS|syscall.CLONE_NEWNET)
		return false
	}
	if nstest.Inside() {
		privateRun(t)
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("no /dev/net/tun: %v", err)
	}
	return true
}

// writeLabPKI writes into dir a gateway certificate for gw.test, the two
// CA bundles and, for each of clients, a certificate in group vpn.
func writeLabPKI(t *testing.T, dir string, clients ...string) {
	t.Helper()
	h := pkitest.NewHierarchy(t)
	gwLeaf := h.ServerCA.Server(t, "gw.test")
	writeFile(t, filepath.Join(dir, "gw.crt"), string(pkitest.PEM(gwLeaf.Certs()...)))
	writeFile(t, filepath.Join(dir, "gw.key"), string(pkitest.KeyPEM(t, gwLeaf.Key)))
	writeFile(t, filepath.Join(dir, "client-ca.crt"), string(pkitest.PEM(h.ClientBundle()...)))
	writeFile(t, filepath.Join(dir, "server-ca.crt"), string(pkitest.PEM(h.ServerBundle()...)))
	for _, name := range clients {
		l := h.ClientCA.Client(t, name, "vpn")
		writeFile(t, filepath.Join(dir, name+".crt"), string(pkitest.PEM(l.Certs()...)))
		writeFile(t, filepath.Join(dir, name+".key"), string(pkitest.KeyPEM(t, l.Key)))
	}
}

// labServerConf is the gateway's server.toml for the files writeLabPKI
// writes: a VPN over IPv4 and IPv6 with NAT to the corporate LAN (lan0
// in the topology), the UDP data path on (the default, on port 8443),
// and a rule denying port 9001 on the corporate host.
const labServerConf = `listen = ":8443"
[tls]
cert = "gw.crt"
key = "gw.key"
client_ca = "client-ca.crt"
[control]
socket = "off"
[policy.admit]
groups = ["vpn"]
[[policy.rule]]
name = "no-9001"
action = "deny"
groups = ["vpn"]
targets = ["198.18.0.10:9001", "[2001:db8:1::10]:9001"]
[[policy.rule]]
name = "corp"
groups = ["vpn"]
targets = ["198.18.0.0/24", "[2001:db8:1::]/64"]
[vpn]
enable = true
ipv4 = "198.18.100.0/24"
ipv6 = "2001:db8:100::/64"
routes = ["198.18.0.0/24", "2001:db8:1::/64"]
dns = ["198.18.0.53"]
search_domains = ["corp.example"]
mtu = 1400
forwarding = "nat"
lan_interface = "lan0"
state_dir = "gwstate"
`

// labResolv is a client's resolv.conf before the VPN changes it.
const labResolv = "nameserver 198.18.0.1\n"

// labClientConf writes dir/name.toml for client name of writeLabPKI,
// dialing server, with its control socket at dir/name.sock, a port
// forward 127.0.0.1:7000 to the corporate host's port 9000, a VPN on tw0
// and a resolv.conf of its own (dir/name-resolv.conf, labResolv);
// extra lines go in its [vpn] table. It returns the paths of both files.
func labClientConf(t *testing.T, dir, name, server string, extra ...string) (conf, resolv string) {
	t.Helper()
	resolv = writeFile(t, filepath.Join(dir, name+"-resolv.conf"), labResolv)
	text := fmt.Sprintf(`servers = [%q]
server_name = "gw.test"
[tls]
cert = "%[2]s.crt"
key = "%[2]s.key"
server_ca = "server-ca.crt"
[control]
socket = %[3]q
[reconnect]
min_backoff = "50ms"
max_backoff = "500ms"
[[forward]]
type = "local"
local = "127.0.0.1:7000"
remote = "198.18.0.10:9000"
[vpn]
enable = true
tun = "tw0"
state_dir = "%[2]s-state"
resolv_conf = %[4]q
%[5]s
`, server, name, filepath.Join(dir, name+".sock"), resolv, strings.Join(extra, "\n"))
	return writeFile(t, filepath.Join(dir, name+".toml"), text), resolv
}

// nsPing pings from namespace ns twice, with ping's args.
func nsPing(ns string, args ...string) error {
	out, err := try(append([]string{"ip", "netns", "exec", ns, "ping", "-n", "-c", "2", "-i", "0.2", "-W", "2"}, args...)...)
	if err != nil {
		return fmt.Errorf("%v: %s", err, out)
	}
	return nil
}

// fetch runs the fetch role in namespace ns: size bytes from the source
// at addr, or to it with mode "push".
func fetch(ns, addr string, size int64, timeout string, mode ...string) (string, error) {
	return fetchContext(context.Background(), ns, addr, size, timeout, mode...)
}

// fetchContext is fetch, killed when ctx ends.
func fetchContext(ctx context.Context, ns, addr string, size int64, timeout string, mode ...string) (string, error) {
	args := append([]string{"netns", "exec", ns, "env", roleEnv + "=fetch", os.Args[0], addr, strconv.FormatInt(size, 10), timeout}, mode...)
	b, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	out := string(b)
	if err != nil {
		return out, fmt.Errorf("fetch %s: %v: %s", addr, err, out)
	}
	return out, nil
}

// checkFetch fetches (or pushes) size bytes and fails t unless the
// SHA-256 of what arrived is that of what was sent.
func checkFetch(t *testing.T, ns, addr string, size int64, mode ...string) {
	t.Helper()
	out, err := fetch(ns, addr, size, "10s", mode...)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("bytes=%d sha256=%s", size, streamSum(size)); !strings.Contains(out, want) {
		t.Fatalf("fetch %s: %s, want %s", addr, out, want)
	}
	t.Logf("%v %d bytes with %s: %s", mode, size, addr, strings.TrimSpace(out))
}

// TestNetnsVPN is the whole story: ping and TCP through the tunnel over
// IPv4 and IPv6 with NAT to the LAN, a port forward on the same client,
// policy per packet, anti-spoofing, two clients without client-to-client,
// a gateway restart that keeps addresses (and a client with persist that
// keeps its routes meanwhile), routed forwarding without NAT, and a client
// that restores routes and DNS when it exits or after it crashed.
func TestNetnsVPN(t *testing.T) {
	if !asNetnsRoot(t) {
		return
	}
	tp := newTopology(t)
	dir := t.TempDir()
	top := t // processes started in subtests outlive them

	// PKI: a gateway certificate and two client certificates.
	writeLabPKI(t, dir, "alice", "bob")
	serverConf := writeFile(t, filepath.Join(dir, "server.toml"), labServerConf)
	// Alice keeps her packets on the TLS connection (the UDP path has a
	// test of its own, TestNetnsUDP), so that GSO passthrough is what
	// carries them.
	aliceConf, aliceResolv := labClientConf(t, dir, "alice", "198.19.1.1:8443", `transport = "tcp"`)
	// Bob's device has no offloads: the gateway cuts superpackets for him.
	// And he keeps his configuration while reconnecting (persist).
	bobConf, bobResolv := labClientConf(t, dir, "bob", "198.19.2.1:8443", "offload = false", "persist = true")

	source := startRole(t, tp.corp, "source", ":9000", ":9001")
	source.waitLine(t, 0, "source ready")
	gw := startRole(t, tp.gw, "server", serverConf)
	gw.waitLine(t, 0, "gateway listening")

	routesBefore := routes(t, tp.c1)
	alice := startRole(t, tp.c1, "client", aliceConf)
	// Both kernels have offloads and client-to-client is off: superpackets
	// pass through whole.
	alice.waitLine(t, 0, "VPN up", "gso=true")
	aliceAddrs := tunAddrs(t, tp.c1, "tw0")
	if len(aliceAddrs) != 2 || !strings.HasPrefix(aliceAddrs[0], "198.18.100.") {
		t.Fatalf("alice's tw0 addresses: %v", aliceAddrs)
	}
	if r := routes(t, tp.c1); !strings.Contains(r, "198.18.0.0/24 dev tw0") || !strings.Contains(r, "2001:db8:1::/64 dev tw0") {
		t.Fatalf("pushed routes missing:\n%s", r)
	}
	if b, _ := os.ReadFile(aliceResolv); !strings.Contains(string(b), "198.18.0.53") || !strings.Contains(string(b), "corp.example") {
		t.Fatalf("pushed DNS not in resolv.conf:\n%s", b)
	}

	t.Run("ping", func(t *testing.T) {
		if err := nsPing(tp.c1, "198.18.0.10"); err != nil {
			t.Fatal(err)
		}
		if err := nsPing(tp.c1, "-6", "2001:db8:1::10"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("tcp", func(t *testing.T) {
		checkFetch(t, tp.c1, "198.18.0.10:9000", 200<<20)
		// Uploads travel as superpackets (GSO passthrough).
		checkFetch(t, tp.c1, "198.18.0.10:9000", 200<<20, "push")
		checkFetch(t, tp.c1, "[2001:db8:1::10]:9000", 8<<20)
		checkFetch(t, tp.c1, "[2001:db8:1::10]:9000", 64<<20, "push")
		checkFetch(t, tp.c1, "127.0.0.1:7000", 8<<20) // the port forward on the same client
	})
	t.Run("policy", func(t *testing.T) {
		n := gw.count()
		out, err := fetch(tp.c1, "198.18.0.10:9001", 1, "2s")
		if err == nil || !strings.Contains(out, "timeout") {
			t.Fatalf("denied port: %v %s, want a connect timeout", err, out)
		}
		gw.waitLine(t, n, "packet dropped", "reason=policy", "no-9001")
	})
	t.Run("spoof", func(t *testing.T) {
		run(t, "ip", "-n", tp.c1, "addr", "add", "198.18.100.200/32", "dev", "lo")
		n := gw.count()
		if err := nsPing(tp.c1, "-I", "198.18.100.200", "198.18.0.10"); err == nil {
			t.Fatal("a ping with a forged source was answered")
		}
		gw.waitLine(t, n, "packet dropped", "reason=spoof", "src=198.18.100.200")
	})

	bob := startRole(t, tp.c2, "client", bobConf)
	bob.waitLine(t, 0, "VPN up", "gso=false")
	bobAddrs := tunAddrs(t, tp.c2, "tw0")
	t.Run("two clients", func(t *testing.T) {
		if len(bobAddrs) != 2 || bobAddrs[0] == aliceAddrs[0] {
			t.Fatalf("bob's addresses %v (alice %v)", bobAddrs, aliceAddrs)
		}
		if err := nsPing(tp.c2, "198.18.0.10"); err != nil {
			t.Fatal(err)
		}
		// What the gateway reads as superpackets reaches bob cut into
		// packets; his own arrive ordinary.
		checkFetch(t, tp.c2, "198.18.0.10:9000", 64<<20)
		checkFetch(t, tp.c2, "[2001:db8:1::10]:9000", 16<<20)
		checkFetch(t, tp.c2, "198.18.0.10:9000", 16<<20, "push")
		n := gw.count()
		bob4, _, _ := strings.Cut(bobAddrs[0], "/")
		if err := nsPing(tp.c1, bob4); err == nil {
			t.Fatal("alice reached bob with client-to-client off")
		}
		gw.waitLine(t, n, "packet dropped", "reason=client-to-client")
	})

	t.Run("gateway restart", func(t *testing.T) {
		n, nb := alice.count(), bob.count()
		gw.stop(t)
		alice.waitLine(t, n, "VPN down")
		bob.waitLine(t, nb, "VPN down", "configuration kept")
		// While the gateway is away, alice's routes are gone and bob's
		// (persist) still lead into his tunnel, and his DNS stays.
		if r := routes(t, tp.c1); strings.Contains(r, "198.18.0.0/24") {
			t.Errorf("alice's corp route outlived her session:\n%s", r)
		}
		if r := routes(t, tp.c2); !strings.Contains(r, "198.18.0.0/24 dev tw0") || !strings.Contains(r, "2001:db8:1::/64 dev tw0") {
			t.Errorf("bob's corp routes were not kept while reconnecting:\n%s", r)
		}
		if b, _ := os.ReadFile(bobResolv); string(b) == labResolv {
			t.Error("bob's DNS was undone while reconnecting")
		}
		gw = startRole(top, tp.gw, "server", serverConf)
		alice.waitLine(t, n, "VPN up")
		bob.waitLine(t, nb, "VPN up")
		if bob.has(nb, "replacing the kept one") {
			t.Error("bob's kept configuration was replaced by the same one")
		}
		if err := nsPing(tp.c2, "198.18.0.10"); err != nil {
			t.Fatalf("bob after the restart: %v", err)
		}
		if got := tunAddrs(t, tp.c1, "tw0"); strings.Join(got, " ") != strings.Join(aliceAddrs, " ") {
			t.Fatalf("addresses after the restart %v, before %v", got, aliceAddrs)
		}
		if err := nsPing(tp.c1, "198.18.0.10"); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("routed", func(t *testing.T) {
		// The LAN knows the pools' routes (via the gateway), so the
		// gateway forwards without NAT: the corporate host sees the
		// clients' own addresses: the nftables table only filters
		// (connections the LAN opens toward clients), it masquerades
		// nothing.
		run(t, "ip", "-n", tp.corp, "route", "add", "198.18.100.0/24", "via", "198.18.0.1")
		run(t, "ip", "-n", tp.corp, "-6", "route", "add", "2001:db8:100::/64", "via", "2001:db8:1::1")
		routedConf := writeFile(t, filepath.Join(dir, "server-routed.toml"),
			strings.Replace(labServerConf, `forwarding = "nat"`, `forwarding = "routed"`, 1))
		n := alice.count()
		gw.stop(t)
		gw = startRole(top, tp.gw, "server", routedConf)
		alice.waitLine(t, n, "VPN up")
		if gw.has(0, "masquerading") {
			t.Error("the routed gateway set up masquerading")
		}
		if out, err := try("ip", "netns", "exec", tp.gw, "nft", "list", "table", "inet", lan.TableName); err == nil && (strings.Contains(out, "masquerade") || !strings.Contains(out, "hook forward")) {
			t.Errorf("nftables table %q in the routed gateway's namespace should only filter:\n%s", lan.TableName, out)
		}
		for i, addr := range []string{"198.18.0.10:9000", "[2001:db8:1::10]:9000"} {
			ns := source.count()
			checkFetch(t, tp.c1, addr, 16<<20)
			own, _, _ := strings.Cut(aliceAddrs[i], "/")
			source.waitLine(t, ns, "source: connection from "+net.JoinHostPort(own, ""))
		}
	})

	t.Run("client exit restores", func(t *testing.T) {
		alice.stop(t)
		if b, _ := os.ReadFile(aliceResolv); string(b) != labResolv {
			t.Errorf("resolv.conf after exit:\n%s", b)
		}
		after := routes(t, tp.c1)
		for _, gone := range []string{"tw0", "198.18.0.0/24", "2001:db8:1::/64"} {
			if strings.Contains(after, gone) {
				t.Errorf("routes after exit still mention %s:\n%s", gone, after)
			}
		}
		for _, l := range strings.Split(routesBefore, "\n") {
			if !strings.Contains(after, l) {
				t.Errorf("route %q lost", l)
			}
		}
		if out, err := try("ip", "-n", tp.c1, "link", "show", "tw0"); err == nil {
			t.Errorf("tw0 still there after exit:\n%s", out)
		}
	})

	t.Run("client crash cleanup", func(t *testing.T) {
		_ = bob.cmd.Process.Kill()
		<-bob.done
		if b, _ := os.ReadFile(bobResolv); string(b) == labResolv {
			t.Fatal("resolv.conf was not changed while bob ran")
		}
		bob = startRole(top, tp.c2, "client", bobConf)
		bob.waitLine(t, 0, "VPN up")
		if got := tunAddrs(t, tp.c2, "tw0"); strings.Join(got, " ") != strings.Join(bobAddrs, " ") {
			t.Errorf("bob's addresses after a crash %v, before %v", got, bobAddrs)
		}
		bob.stop(t)
		if b, _ := os.ReadFile(bobResolv); string(b) != labResolv {
			t.Errorf("resolv.conf after crash and clean exit:\n%s", b)
		}
	})
	gw.stop(t)
}
