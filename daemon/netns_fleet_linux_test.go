package daemon_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twoway/twoway/fleet/fleettest"
)

// This file tests a fleet of three gateways failing over in network
// namespaces (README, "Running a fleet of gateways"): the gateways share
// one LAN segment (a bridge in the corporate host's namespace) and an
// "internet" segment (a bridge in a namespace of its own) with two
// clients; etcd runs in the corporate namespace, on its LAN address. The
// VPN pool is routed and lies inside the LAN's subnet, so the corporate
// host reaches clients directly, through whichever gateway answers ARP for
// their addresses (lan_announce = "proxy-arp"). The test kill -9s the
// gateway a client is on and measures how long the corporate host's
// probes to the client go unanswered, while a TCP transfer to the client
// runs through it all.

// fleetTopology is the namespaces of the failover test.
type fleetTopology struct {
	corp, inet string
	gws        [3]string
	clients    [2]string
}

// fleetLAN and fleetWAN: gateway i (0-based) is .1+i on both; the
// corporate host is fleetCorp, client j is 198.19.0.101+j.
const (
	// probeWait is how long after the kill the corporate host's probes
	// may go unanswered: without the takeover announcement its ARP
	// entry would point at the dead gateway for 15-45 s
	// (base_reachable_time) and then some.
	probeWait  = 10 * time.Second
	fleetCorp  = "198.18.0.10"
	fleetCorp6 = "2001:db8:1::10"
	// The pools lie inside the LAN's subnets (198.18.0.0/16,
	// 2001:db8:1::/64), as proxy ARP/NDP needs.
	fleetPool  = "198.18.100.0/24"
	fleetPool6 = "2001:db8:1::100:0/112"
)

func newFleetTopology(t *testing.T) fleetTopology {
	t.Helper()
	id := strconv.Itoa(os.Getpid())
	tp := fleetTopology{corp: "twfcorp" + id, inet: "twfinet" + id}
	for i := range tp.gws {
		tp.gws[i] = fmt.Sprintf("twfgw%d-%s", i+1, id)
	}
	for i := range tp.clients {
		tp.clients[i] = fmt.Sprintf("twfc%d-%s", i+1, id)
	}
	all := append(append([]string{tp.corp, tp.inet}, tp.gws[:]...), tp.clients[:]...)
	for _, ns := range all {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { _, _ = try("ip", "netns", "del", ns) })
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	// Two bridges: the LAN in the corporate host's namespace (the host's
	// own address on it), the internet in a namespace of its own.
	// No DAD anywhere: addresses are usable at once, link-local ones too.
	for _, ns := range all {
		run(t, "ip", "netns", "exec", ns, "sh", "-c", "echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad && echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad")
	}
	// Multicast snooping off: neighbour solicitations reach every port,
	// whatever the bridge learnt of solicited-node groups.
	run(t, "ip", "-n", tp.corp, "link", "add", "br0", "type", "bridge", "forward_delay", "0", "mcast_snooping", "0")
	run(t, "ip", "-n", tp.corp, "addr", "add", fleetCorp+"/16", "dev", "br0")
	run(t, "ip", "-n", tp.corp, "addr", "add", fleetCorp6+"/64", "dev", "br0", "nodad")
	run(t, "ip", "-n", tp.corp, "link", "set", "br0", "up")
	run(t, "ip", "-n", tp.inet, "link", "add", "br1", "type", "bridge", "forward_delay", "0")
	run(t, "ip", "-n", tp.inet, "link", "set", "br1", "up")
	// plug creates a veth in ns (named dev, with addr) whose other end
	// (port) joins the bridge br in namespace bns.
	plug := func(ns, dev, bns, br, port string, addrs ...string) {
		run(t, "ip", "-n", ns, "link", "add", dev, "type", "veth", "peer", "name", port, "netns", bns)
		for _, a := range addrs {
			run(t, "ip", "-n", ns, "addr", "add", a, "dev", dev, "nodad")
		}
		run(t, "ip", "-n", bns, "link", "set", port, "master", br, "up")
		run(t, "ip", "-n", ns, "link", "set", dev, "up")
	}
	for i, gw := range tp.gws {
		plug(gw, "lan0", tp.corp, "br0", fmt.Sprintf("gw%d", i+1), fmt.Sprintf("198.18.0.%d/16", i+1), fmt.Sprintf("2001:db8:1::%d/64", i+1))
		plug(gw, "wan0", tp.inet, "br1", fmt.Sprintf("gw%d", i+1), fmt.Sprintf("198.19.0.%d/24", i+1))
	}
	for j, c := range tp.clients {
		plug(c, "eth0", tp.inet, "br1", fmt.Sprintf("c%d", j+1), fmt.Sprintf("198.19.0.%d/24", 101+j))
	}
	return tp
}

// fleetServerConf is gateway name's server.toml: routed VPN, proxy ARP
// on lan0, the fleet's etcd at endpoint.
func fleetServerConf(name, endpoint string) string {
	return fmt.Sprintf(`listen = ":8443"
[tls]
cert = "gw.crt"
key = "gw.key"
client_ca = "client-ca.crt"
[control]
socket = "off"
[policy.admit]
groups = ["vpn"]
[[policy.rule]]
name = "corp"
groups = ["vpn"]
targets = ["198.18.0.0/16", "[2001:db8:1::]/64"]
[vpn]
enable = true
ipv4 = %q
ipv6 = %q
routes = ["198.18.0.0/16", "2001:db8:1::/64"]
mtu = 1400
forwarding = "routed"
lan_interface = "lan0"
lan_announce = "proxy-arp"
lan_to_clients = true
state_dir = "%[4]s-state"
[fleet]
endpoints = [%[3]q]
name = %[4]q
prefix = "/twoway/"
lease_ttl = "2s"
`, fleetPool, fleetPool6, endpoint, name)
}

// fleetClientConf is client name's client.toml, trying the gateways in
// the order given, with short dead-peer detection and backoff, keeping
// its VPN configuration while reconnecting.
func fleetClientConf(t *testing.T, dir, name string, servers ...string) string {
	t.Helper()
	var quoted []string
	for _, s := range servers {
		quoted = append(quoted, strconv.Quote(s))
	}
	return writeFile(t, filepath.Join(dir, name+".toml"), fmt.Sprintf(`servers = [%s]
server_name = "gw.test"
[tls]
cert = "%[2]s.crt"
key = "%[2]s.key"
server_ca = "server-ca.crt"
[control]
socket = "off"
[reconnect]
min_backoff = "50ms"
max_backoff = "500ms"
keepalive = "1s"
dead_peer = "3s"
[vpn]
enable = true
tun = "tw0"
state_dir = "%[2]s-state"
resolv_conf = "%[2]s-resolv.conf"
persist = true
`, strings.Join(quoted, ", "), name))
}

// runFleetRole runs the roles of this file (see runRole); ok is false
// for a role that is not one of them.
func runFleetRole(ctx context.Context, role string, args []string) (code int, ok bool) {
	fail := func(err error) (int, bool) { fmt.Fprintln(os.Stderr, "role error:", err); return 1, true }
	switch role {
	case "etcd":
		// etcd DIR HOST: a one-member cluster on HOST.
		c, err := fleettest.StartClusterAt(args[1], args[0], 1, nil)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintln(os.Stderr, "etcd ready", c.Endpoints[0])
		<-ctx.Done()
		c.Close()
		return 0, true
	case "paced":
		// paced ADDR BYTES_PER_SECOND: serves as the source role does,
		// at most that fast, printing progress every MiB.
		rate, _ := strconv.ParseInt(args[1], 10, 64)
		ln, err := net.Listen("tcp", args[0])
		if err != nil {
			return fail(err)
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go servePaced(c, rate)
			}
		}()
		fmt.Fprintln(os.Stderr, "paced ready")
		<-ctx.Done()
		return 0, true
	case "echo":
		// echo ADDR: sends every UDP datagram back.
		pc, err := net.ListenPacket("udp", args[0])
		if err != nil {
			return fail(err)
		}
		go func() {
			buf := make([]byte, 1500)
			for {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				_, _ = pc.WriteTo(buf[:n], from)
			}
		}()
		fmt.Fprintln(os.Stderr, "echo ready")
		<-ctx.Done()
		return 0, true
	case "resume":
		// resume ADDR SIZE: fetches SIZE bytes from the paced role;
		// when nothing arrives for a second (its connection died with a
		// NAT gateway) it connects again and asks for the rest from
		// where it was. Prints bytes, SHA-256 and reconnections.
		size, _ := strconv.ParseInt(args[1], 10, 64)
		h := sha256.New()
		buf := make([]byte, 64<<10)
		var got int64
		reconnects := 0
		start := time.Now()
		for got < size {
			if ctx.Err() != nil {
				return fail(ctx.Err())
			}
			c, err := net.DialTimeout("tcp", args[0], 2*time.Second)
			if err != nil {
				fmt.Fprintln(os.Stderr, "resume: dial:", err)
				time.Sleep(50 * time.Millisecond) // retry backoff
				continue
			}
			req := binary.BigEndian.AppendUint64(nil, uint64(size)|resumeFlag)
			if _, err = c.Write(binary.BigEndian.AppendUint64(req, uint64(got))); err == nil {
				for got < size {
					_ = c.SetReadDeadline(time.Now().Add(time.Second))
					var n int
					n, err = c.Read(buf)
					h.Write(buf[:n])
					got += int64(n)
					if err != nil {
						break
					}
				}
			}
			c.Close()
			if got < size {
				reconnects++
				fmt.Fprintf(os.Stderr, "resume: connection ended at byte %d (%v); reconnecting\n", got, err)
			}
		}
		fmt.Printf("bytes=%d sha256=%x seconds=%.3f reconnects=%d\n", got, h.Sum(nil), time.Since(start).Seconds(), reconnects)
		return 0, true
	case "probe":
		// probe ADDR: a datagram every 10 ms carrying its send time;
		// prints each echo as "probe sent=NS recv=NS".
		c, err := net.Dial("udp", args[0])
		if err != nil {
			return fail(err)
		}
		go func() {
			buf := make([]byte, 64)
			for {
				n, err := c.Read(buf)
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					continue // ICMP errors while the client is away
				}
				if n >= 8 {
					fmt.Printf("probe sent=%d recv=%d\n", binary.BigEndian.Uint64(buf), time.Now().UnixNano())
				}
			}
		}()
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return 0, true
			case <-tick.C:
				_, _ = c.Write(binary.BigEndian.AppendUint64(nil, uint64(time.Now().UnixNano())))
			}
		}
	}
	return 0, false
}

// resumeFlag in a request to the paced role says an 8-byte offset
// follows: send the stream from there.
const resumeFlag = 1 << 62

// servePaced answers a request of the source role's protocol (download
// only) at rate bytes per second.
func servePaced(c net.Conn, rate int64) {
	defer c.Close()
	var req [8]byte
	if _, err := io.ReadFull(c, req[:]); err != nil {
		return
	}
	size := int64(binary.BigEndian.Uint64(req[:]))
	var offset int64
	if size&resumeFlag != 0 {
		if _, err := io.ReadFull(c, req[:]); err != nil {
			return
		}
		size, offset = size&^resumeFlag, int64(binary.BigEndian.Uint64(req[:]))
	}
	fmt.Fprintln(os.Stderr, "paced: connection from", c.RemoteAddr(), "offset", offset)
	pr, pw := io.Pipe()
	total := size
	go func() { pw.CloseWithError(writeStream(pw, total)) }()
	defer pr.Close()
	if _, err := io.CopyN(io.Discard, pr, offset); err != nil {
		return
	}
	size -= offset
	const chunk = 16 << 10
	buf := make([]byte, chunk)
	start := time.Now()
	var sent int64
	for sent < size {
		n, err := io.ReadFull(pr, buf[:min(chunk, size-sent)])
		if err != nil {
			return
		}
		if _, err := c.Write(buf[:n]); err != nil {
			fmt.Fprintln(os.Stderr, "paced: write:", err)
			return
		}
		before := sent
		sent += int64(n)
		if sent>>20 != before>>20 {
			fmt.Fprintf(os.Stderr, "paced: sent %d MiB\n", sent>>20)
		}
		if ahead := time.Duration(sent*int64(time.Second)/rate) - time.Since(start); ahead > 0 {
			time.Sleep(ahead) // pacing, not synchronization
		}
	}
	fmt.Fprintln(os.Stderr, "paced: done", sent)
}

// next is closed when p prints its next line.
func (p *proc) next() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changed
}

// probeReplies are the (sent, recv) times the probe printed after line
// index after.
// firstReplyAfter waits up to probeWait for the first of p's probe replies
// (from output line after on) to a probe sent after killed, and returns it:
// what is the failure's wording.
func firstReplyAfter(t *testing.T, p *proc, after int, killed time.Time, what string) [2]int64 {
	t.Helper()
	deadline := time.Now().Add(probeWait)
	for {
		for _, r := range probeReplies(p, after) {
			if r[0] > killed.UnixNano() {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s within %v of the kill", what, probeWait)
		}
		select {
		case <-p.next():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func probeReplies(p *proc, after int) [][2]int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out [][2]int64
	for _, l := range p.lines[min(after, len(p.lines)):] {
		var s, r int64
		if _, err := fmt.Sscanf(l, "probe sent=%d recv=%d", &s, &r); err == nil {
			out = append(out, [2]int64{s, r})
		}
	}
	return out
}

// macOf is the MAC address of dev in namespace ns.
func macOf(t *testing.T, ns, dev string) string {
	t.Helper()
	f := strings.Fields(run(t, "ip", "-n", ns, "-o", "link", "show", "dev", dev))
	for i, w := range f {
		if w == "link/ether" && i+1 < len(f) {
			return f[i+1]
		}
	}
	t.Fatalf("no MAC on %s in %s", dev, ns)
	return ""
}

// TestNetnsFleetFailover: three routed gateways of a fleet with proxy ARP,
// two clients; kill -9 the gateway alice is on. She is back through the
// next one with the same address, the corporate host's probes to her
// address get through again (the time from the kill is printed), the TCP
// transfer she was receiving from the corporate host completes with the
// right SHA-256, only the gateway now holding her answers ARP for her, and
// bob, on another gateway, is untouched.
func TestNetnsFleetFailover(t *testing.T) {
	if !asNetnsRoot(t) {
		return
	}
	// kill -9: the process dies, its kernel closes its connections, the
	// client hears it at once.
	t.Run("kill", func(t *testing.T) { fleetFailover(t, false) })
	// The machine goes silent (its links go down, then the process is
	// killed): nothing reaches the client, which notices by dead_peer.
	t.Run("silent", func(t *testing.T) { fleetFailover(t, true) })
	// NAT: the corporate host sees the gateways' own addresses, so a
	// connection cannot survive its gateway; the receiver resumes.
	t.Run("nat", fleetFailoverNAT)
}

// natConf turns fleetServerConf's routed VPN into NAT to lan0.
func natConf(conf string) string {
	return strings.Replace(conf, "forwarding = \"routed\"\nlan_interface = \"lan0\"\nlan_announce = \"proxy-arp\"\nlan_to_clients = true\n",
		"forwarding = \"nat\"\nlan_interface = \"lan0\"\n", 1)
}

// fleetFailoverNAT: the fleet with NAT, kill -9 of alice's gateway. Her
// probes to the corporate host come back through the next gateway (the
// time from the kill is printed), and her download from the corporate
// host, whose connection died with gw1's address, resumes from where it
// broke off and ends with the right SHA-256.
func fleetFailoverNAT(t *testing.T) {
	tp := newFleetTopology(t)
	dir := t.TempDir()
	writeLabPKI(t, dir, "alice", "bob")
	etcd := startRole(t, tp.corp, "etcd", filepath.Join(dir, "etcd"), fleetCorp)
	line, _ := etcd.waitLine(t, 0, "etcd ready")
	endpoint := strings.Fields(line)[2]
	var gws [3]*proc
	var servers [3]string
	for i := range gws {
		name := fmt.Sprintf("gw%d", i+1)
		conf := natConf(fleetServerConf(name, endpoint))
		if !strings.Contains(conf, `forwarding = "nat"`) {
			t.Fatal("natConf did not apply")
		}
		gws[i] = startRole(t, tp.gws[i], "server", writeFile(t, filepath.Join(dir, name+".toml"), conf))
		servers[i] = fmt.Sprintf("198.19.0.%d:8443", i+1)
	}
	for _, g := range gws {
		g.waitLine(t, 0, "gateway listening")
	}
	writeFile(t, filepath.Join(dir, "alice-resolv.conf"), labResolv)
	alice := startRole(t, tp.clients[0], "client", fleetClientConf(t, dir, "alice", servers[0], servers[1], servers[2]))
	alice.waitLine(t, 0, "VPN up")
	gws[0].waitLine(t, 0, "session established", "peer.name=alice")
	aliceAddrs := tunAddrs(t, tp.clients[0], "tw0")

	const size, rate = 24 << 20, 4 << 20
	paced := startRole(t, tp.corp, "paced", fleetCorp+":9100", strconv.Itoa(rate))
	paced.waitLine(t, 0, "paced ready")
	echo := startRole(t, tp.corp, "echo", fleetCorp+":7001")
	echo.waitLine(t, 0, "echo ready")
	probe := startRole(t, tp.clients[0], "probe", fleetCorp+":7001")
	probe.waitLine(t, 0, "probe sent=")
	fetch := startRole(t, tp.clients[0], "resume", fleetCorp+":9100", strconv.Itoa(size))
	// Masqueraded: the corporate host sees gw1's address.
	paced.waitLine(t, 0, "paced: connection from 198.18.0.1:")
	_, np := paced.waitLine(t, 0, "paced: sent 6 MiB")

	na, npr := alice.count(), probe.count()
	killed := time.Now()
	if err := gws[0].cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-gws[0].done
	run(t, "ip", "-n", tp.gws[0], "link", "set", "lan0", "down")
	alice.waitLine(t, na, "VPN up")
	if got := tunAddrs(t, tp.clients[0], "tw0"); strings.Join(got, " ") != strings.Join(aliceAddrs, " ") {
		t.Fatalf("alice's addresses after the failover %v, before %v", got, aliceAddrs)
	}
	first := firstReplyAfter(t, probe, npr, killed, "no probe from alice answered")
	// The download resumes through gw2, masqueraded to its address.
	again, _ := paced.waitLine(t, np, "paced: connection from 198.18.0.2:")
	resumed := time.Since(killed)
	out, _ := fetch.waitLine(t, 0, "bytes=")
	if want := fmt.Sprintf("bytes=%d sha256=%s", size, streamSum(size)); !strings.Contains(out, want) {
		t.Fatalf("download across the failover: %s, want %s", out, want)
	}
	t.Logf("NAT, kill -9 of gw1 -> first probe from alice answered through gw2: %v; download resumed (%s) %v after the kill, then: %s",
		time.Duration(first[1]-killed.UnixNano()).Round(time.Millisecond), strings.TrimPrefix(again, "paced: "), resumed.Round(time.Millisecond), out)
	for _, p := range []*proc{probe, echo, paced, alice, gws[1], gws[2], etcd} {
		p.stop(t)
	}
}

func fleetFailover(t *testing.T, silent bool) {
	tp := newFleetTopology(t)
	dir := t.TempDir()
	writeLabPKI(t, dir, "alice", "bob")

	etcd := startRole(t, tp.corp, "etcd", filepath.Join(dir, "etcd"), fleetCorp)
	line, _ := etcd.waitLine(t, 0, "etcd ready")
	endpoint := strings.Fields(line)[2]

	var gws [3]*proc
	var servers [3]string
	for i := range gws {
		name := fmt.Sprintf("gw%d", i+1)
		conf := writeFile(t, filepath.Join(dir, name+".toml"), fleetServerConf(name, endpoint))
		gws[i] = startRole(t, tp.gws[i], "server", conf)
		servers[i] = fmt.Sprintf("198.19.0.%d:8443", i+1)
	}
	for _, g := range gws {
		g.waitLine(t, 0, "gateway listening")
	}
	writeFile(t, filepath.Join(dir, "alice-resolv.conf"), labResolv)
	writeFile(t, filepath.Join(dir, "bob-resolv.conf"), labResolv)
	// Alice prefers gw1, bob gw2; each falls over to the next in line.
	alice := startRole(t, tp.clients[0], "client", fleetClientConf(t, dir, "alice", servers[0], servers[1], servers[2]))
	bob := startRole(t, tp.clients[1], "client", fleetClientConf(t, dir, "bob", servers[1], servers[2], servers[0]))
	alice.waitLine(t, 0, "VPN up")
	bob.waitLine(t, 0, "VPN up")
	gws[0].waitLine(t, 0, "session established", "peer.name=alice")
	aliceAddrs, bobAddrs := tunAddrs(t, tp.clients[0], "tw0"), tunAddrs(t, tp.clients[1], "tw0")
	if len(aliceAddrs) != 2 || len(bobAddrs) != 2 || aliceAddrs[0] == bobAddrs[0] {
		t.Fatalf("addresses: alice %v, bob %v", aliceAddrs, bobAddrs)
	}
	aliceIP, _, _ := strings.Cut(aliceAddrs[0], "/")
	aliceIP6, _, _ := strings.Cut(aliceAddrs[1], "/")
	bobIP, _, _ := strings.Cut(bobAddrs[0], "/")
	bobIP6, _, _ := strings.Cut(bobAddrs[1], "/")

	// The corporate host reaches both clients' own addresses on its
	// LAN, without a route: the gateways answer ARP for them.
	if err := nsPing(tp.corp, aliceIP); err != nil {
		t.Fatalf("corp -> alice before the failover: %v", err)
	}
	if err := nsPing(tp.corp, bobIP); err != nil {
		t.Fatalf("corp -> bob before the failover: %v", err)
	}
	// And over IPv6, by proxy NDP.
	if err := nsPing(tp.corp, "-6", aliceIP6); err != nil {
		t.Fatalf("corp -> alice over IPv6 before the failover: %v", err)
	}
	if err := nsPing(tp.corp, "-6", bobIP6); err != nil {
		t.Fatalf("corp -> bob over IPv6 before the failover: %v", err)
	}
	gwMAC := [3]string{macOf(t, tp.gws[0], "lan0"), macOf(t, tp.gws[1], "lan0"), macOf(t, tp.gws[2], "lan0")}
	neighMAC := func(ip string) string {
		f := strings.Fields(run(t, "ip", "-n", tp.corp, "neigh", "show", ip, "dev", "br0"))
		for i, w := range f {
			if w == "lladdr" && i+1 < len(f) {
				return f[i+1]
			}
		}
		return ""
	}
	if got := neighMAC(aliceIP); got != gwMAC[0] {
		t.Fatalf("corp's ARP entry for alice %s: %q, want gw1's %s", aliceIP, got, gwMAC[0])
	}
	if got := neighMAC(bobIP); got != gwMAC[1] {
		t.Fatalf("corp's ARP entry for bob %s: %q, want gw2's %s", bobIP, got, gwMAC[1])
	}
	if got := neighMAC(aliceIP6); got != gwMAC[0] {
		t.Fatalf("corp's neighbour entry for alice %s: %q, want gw1's %s", aliceIP6, got, gwMAC[0])
	}

	// A TCP transfer from the corporate host to alice, paced so that it
	// runs across the failover, and probes to her every 10 ms.
	const size, rate = 24 << 20, 4 << 20
	paced := startRole(t, tp.corp, "paced", fleetCorp+":9100", strconv.Itoa(rate))
	paced.waitLine(t, 0, "paced ready")
	echo := startRole(t, tp.clients[0], "echo", ":7001")
	echo.waitLine(t, 0, "echo ready")
	probe := startRole(t, tp.corp, "probe", net.JoinHostPort(aliceIP, "7001"))
	probe.waitLine(t, 0, "probe sent=")
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	type result struct {
		out string
		err error
	}
	fetched := make(chan result, 1)
	go func() {
		out, err := fetchContext(ctx, tp.clients[0], fleetCorp+":9100", size, "5s")
		fetched <- result{out, err}
	}()
	paced.waitLine(t, 0, "paced: connection from "+net.JoinHostPort(aliceIP, ""))
	paced.waitLine(t, 0, "paced: sent 6 MiB")

	na, nb, n2 := alice.count(), bob.count(), gws[1].count()
	np := probe.count()
	// killed is when gw1 failed: the kill, or the moment both its links
	// were down. Its machine is gone too: after the kill nothing of gw1
	// is on the LAN any more (its kernel would otherwise forward what
	// still reaches it, a hop through a dead gateway that a real failure
	// does not offer).
	var killed time.Time
	kill := func() {
		if err := gws[0].cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		<-gws[0].done
	}
	if silent {
		run(t, "ip", "-n", tp.gws[0], "link", "set", "wan0", "down")
		run(t, "ip", "-n", tp.gws[0], "link", "set", "lan0", "down")
		killed = time.Now()
		kill()
	} else {
		killed = time.Now()
		kill()
		run(t, "ip", "-n", tp.gws[0], "link", "set", "lan0", "down")
	}
	alice.waitLine(t, na, "VPN up")
	gws[1].waitLine(t, n2, "session established", "peer.name=alice")
	up := time.Since(killed)
	if got := tunAddrs(t, tp.clients[0], "tw0"); strings.Join(got, " ") != strings.Join(aliceAddrs, " ") {
		t.Fatalf("alice's address after the failover %v, before %v", got, aliceAddrs)
	}
	// The first probe sent after the kill that came back went through
	// gw2 both ways: gw1 is gone.
	first := firstReplyAfter(t, probe, np, killed, "no probe to alice answered")
	// The last answered probe before the kill bounds the gap as seen
	// from the LAN.
	var last int64
	for _, r := range probeReplies(probe, 0) {
		if r[1] < killed.UnixNano() {
			last = r[1]
		}
	}
	firstAfter := time.Duration(first[1] - killed.UnixNano())
	how := "kill -9 of gw1"
	if silent {
		how = "gw1 silent (links down, kill -9)"
	}
	t.Logf("%s -> alice's session up on gw2: %v; -> first probe from the corporate host answered through gw2: %v (probe gap %v)",
		how, up.Round(time.Millisecond), firstAfter.Round(time.Millisecond), time.Duration(first[1]-last).Round(time.Millisecond))

	// Only gw2 answers for alice now, and the corporate host's entry
	// points at it (the gratuitous ARP); gw3 holds nobody.
	// Her IPv6 entry too, by the unsolicited advertisement: it has
	// not been used since, so only the announcement can have moved it.
	for _, ip := range []string{aliceIP, aliceIP6} {
		if got := neighMAC(ip); got != gwMAC[1] {
			t.Errorf("corp's neighbour entry for alice's %s after the failover: %q, want gw2's %s", ip, got, gwMAC[1])
		}
	}
	if err := nsPing(tp.corp, "-6", aliceIP6); err != nil {
		t.Errorf("corp -> alice over IPv6 after the failover: %v", err)
	}
	for _, ip := range []string{aliceIP, aliceIP6, bobIP, bobIP6} {
		if out := run(t, "ip", "-n", tp.gws[1], "neigh", "show", "proxy", ip, "dev", "lan0"); !strings.Contains(out, ip) {
			t.Errorf("gw2 has no proxy entry for %s", ip)
		}
	}
	if out := run(t, "ip", "-n", tp.gws[2], "neigh", "show", "proxy", "dev", "lan0"); strings.TrimSpace(out) != "" {
		t.Errorf("gw3 answers ARP for %q while holding no session", out)
	}

	// The transfer finishes, every byte right: the TCP connection itself
	// survived, since alice kept her address and the LAN found her new
	// gateway.
	r := <-fetched
	if r.err != nil {
		t.Fatalf("transfer across the failover: %v", r.err)
	}
	if want := fmt.Sprintf("bytes=%d sha256=%s", size, streamSum(size)); !strings.Contains(r.out, want) {
		t.Fatalf("transfer across the failover: %s, want %s", r.out, want)
	}
	t.Logf("TCP transfer across the failover: %s", strings.TrimSpace(r.out))
	if paced.has(0, "paced: write:") {
		t.Error("the source saw a write error")
	}

	// Bob, on gw2 all along, never lost his session.
	if bob.has(nb, "VPN down") {
		t.Error("bob's session went down when gw1 died")
	}
	if err := nsPing(tp.corp, bobIP); err != nil {
		t.Errorf("corp -> bob after the failover: %v", err)
	}

	probe.stop(t)
	for _, p := range []*proc{alice, bob, echo, paced} {
		p.stop(t)
	}
	// A gateway that stops takes its proxy entries with it.
	gws[1].stop(t)
	if out := run(t, "ip", "-n", tp.gws[1], "neigh", "show", "proxy", "dev", "lan0"); strings.TrimSpace(out) != "" {
		t.Errorf("gw2 left proxy entries behind: %q", out)
	}
	gws[2].stop(t)
	etcd.stop(t)
}
