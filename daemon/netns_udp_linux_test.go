package daemon_test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twoway/twoway/control"
)

// This file tests the UDP data path (README, "UDP when it works, TCP/443
// when it does not") end to end, in the namespaces of netns_linux_test.go:
// a client whose VPN packets travel as datagrams to the gateway's UDP
// port, that falls back to the TLS connection when an nftables rule in its
// namespace drops them and returns when the rule goes, and that keeps its
// session when its source address changes. nftables counters in the
// client's namespace show which path the bytes took.

// udpLabRules is the client namespace's nftables table: counters of what
// the client sends to the gateway's port over UDP and over TCP, of the
// datagrams the gateway sends to the client's second address (roaming),
// and an empty chain, ahead of the counters, for the rule that blocks UDP.
const udpLabRules = `table inet twudp {
	counter udp_out { }
	counter tcp_out { }
	counter udp_in_roamed { }
	chain block {
		type filter hook output priority -10; policy accept;
	}
	chain out {
		type filter hook output priority 0; policy accept;
		ip daddr 198.19.1.1 udp dport 8443 counter name udp_out
		ip daddr 198.19.1.1 tcp dport 8443 counter name tcp_out
	}
	chain in {
		type filter hook input priority 0; policy accept;
		ip saddr 198.19.1.1 ip daddr 198.19.1.3 udp sport 8443 counter name udp_in_roamed
	}
}
`

// udpRebindRules is a NAT in the client's namespace that rebinds the
// client's datagrams to the gateway to port 40000 (the roaming test).
const udpRebindRules = `table ip twrebind {
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		ip daddr 198.19.1.1 udp dport 8443 snat to 198.19.1.3:40000
	}
}
`

var nftCounterRE = regexp.MustCompile(`packets (\d+) bytes (\d+)`)

// nftBytes is what counter name of udpLabRules in namespace ns has counted.
func nftBytes(t *testing.T, ns, name string) int64 {
	t.Helper()
	out := run(t, "ip", "netns", "exec", ns, "nft", "list", "counter", "inet", "twudp", name)
	m := nftCounterRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("counter %s: no bytes in %q", name, out)
	}
	n, _ := strconv.ParseInt(m[2], 10, 64)
	return n
}

// daemonStatus asks the daemon at the control socket sock for its status.
func daemonStatus(t *testing.T, sock string) control.Status {
	t.Helper()
	resp, err := control.Query(context.Background(), sock, control.Request{Op: control.OpStatus})
	if err != nil {
		t.Fatal(err)
	}
	return *resp.Status
}

// onlySession is the one session in st.
func onlySession(t *testing.T, st control.Status) control.Session {
	t.Helper()
	if len(st.Sessions) != 1 {
		t.Fatalf("%s has %d sessions, want 1: %+v", st.Role, len(st.Sessions), st.Sessions)
	}
	return st.Sessions[0]
}

// TestNetnsUDP: a client on the UDP data path pushes 200 MiB through the
// tunnel to the corporate host, as datagrams; UDP blocked in the middle of
// a transfer moves its packets to the TLS connection and the transfer
// completes, and unblocked they return to UDP (the times of both moves
// are logged); a change of the client's source address moves the
// gateway's datagrams to the new address, in the same session.
func TestNetnsUDP(t *testing.T) {
	if !asNetnsRoot(t) {
		return
	}
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs the nft command (nftables)")
	}
	tp := newTopology(t)
	dir := t.TempDir()
	writeLabPKI(t, dir, "carol")
	gwSock := filepath.Join(dir, "gw.sock")
	serverConf := writeFile(t, filepath.Join(dir, "server.toml"),
		strings.Replace(labServerConf, `socket = "off"`, fmt.Sprintf("socket = %q", gwSock), 1))
	clientConf, _ := labClientConf(t, dir, "carol", "198.19.1.1:8443")
	clientSock := filepath.Join(dir, "carol.sock")
	run(t, "ip", "netns", "exec", tp.c1, "nft", "-f", writeFile(t, filepath.Join(dir, "udp.nft"), udpLabRules))

	source := startRole(t, tp.corp, "source", ":9000")
	source.waitLine(t, 0, "source ready")
	gw := startRole(t, tp.gw, "server", serverConf)
	gw.waitLine(t, 0, "UDP data path listening", "port=8443")
	gw.waitLine(t, 0, "gateway listening")
	client := startRole(t, tp.c1, "client", clientConf)
	client.waitLine(t, 0, "VPN up")
	client.waitLine(t, 0, "VPN packets path", "path=udp")
	addrs := tunAddrs(t, tp.c1, "tw0")
	first := onlySession(t, daemonStatus(t, clientSock))
	if first.Path != "udp" {
		t.Fatalf("client's status says path %q after it logged path=udp", first.Path)
	}

	t.Run("200 MiB over UDP", func(t *testing.T) {
		const size = 200 << 20
		udp0, tcp0 := nftBytes(t, tp.c1, "udp_out"), nftBytes(t, tp.c1, "tcp_out")
		out0 := daemonStatus(t, clientSock).Totals.UDPOut
		checkFetch(t, tp.c1, "198.18.0.10:9000", size, "push")
		udp, tcp := nftBytes(t, tp.c1, "udp_out")-udp0, nftBytes(t, tp.c1, "tcp_out")-tcp0
		st := daemonStatus(t, clientSock)
		t.Logf("client to the gateway: %d bytes over UDP, %d over TCP; %d datagrams sent", udp, tcp, st.Totals.UDPOut-out0)
		if udp < size {
			t.Errorf("%d bytes went over UDP, want at least %d", udp, size)
		}
		if tcp > size/100 {
			t.Errorf("%d bytes went over TCP alongside", tcp)
		}
		if s := onlySession(t, st); s.Path != "udp" {
			t.Errorf("path %q after the transfer", s.Path)
		}
		// Datagrams carry one packet each, of at most the MTU (1400).
		if n := st.Totals.UDPOut - out0; n < size/1400 {
			t.Errorf("%d datagrams sent, want at least %d", n, size/1400)
		}
	})

	t.Run("UDP blocked mid-transfer", func(t *testing.T) {
		const size = 200 << 20
		udp0 := nftBytes(t, tp.c1, "udp_out")
		// The push runs beside the test; if the test ends first, the
		// cleanup kills it and waits.
		ctx, cancel := context.WithCancel(context.Background())
		var out string
		var err error
		done := make(chan struct{})
		go func() {
			defer close(done)
			out, err = fetchContext(ctx, tp.c1, "198.18.0.10:9000", size, "10s", "push")
		}()
		t.Cleanup(func() { cancel(); <-done })
		// Block once a few MiB have gone over UDP.
		deadline := time.Now().Add(20 * time.Second)
		for nftBytes(t, tp.c1, "udp_out")-udp0 < 8<<20 {
			if time.Now().After(deadline) {
				t.Fatal("the transfer did not start over UDP within 20 s")
			}
			time.Sleep(5 * time.Millisecond)
		}
		n := client.count()
		run(t, "ip", "netns", "exec", tp.c1, "nft", "add", "rule", "inet", "twudp", "block", "ip", "daddr", "198.19.1.1", "udp", "dport", "8443", "drop")
		blocked := time.Now()
		tcp0 := nftBytes(t, tp.c1, "tcp_out")
		select {
		case <-done:
			t.Fatalf("the transfer ended before UDP was blocked: %s %v", out, err)
		default:
		}
		client.waitLine(t, n, "VPN packets path", "path=tcp")
		toTCP := time.Since(blocked)
		if s := onlySession(t, daemonStatus(t, clientSock)); s.Path != "tcp" {
			t.Errorf("path %q after the client logged path=tcp", s.Path)
		}
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			t.Fatal("the transfer did not complete within 60 s of the block")
		}
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("bytes=%d sha256=%s", size, streamSum(size)); !strings.Contains(out, want) {
			t.Fatalf("push: %s, want %s", out, want)
		}
		tcp := nftBytes(t, tp.c1, "tcp_out") - tcp0
		t.Logf("transfer: %s; %d bytes of it over TCP after the block", strings.TrimSpace(out), tcp)
		if tcp < 8<<20 {
			t.Errorf("only %d bytes went over TCP after UDP was blocked", tcp)
		}

		n = client.count()
		run(t, "ip", "netns", "exec", tp.c1, "nft", "flush", "chain", "inet", "twudp", "block")
		unblocked := time.Now()
		client.waitLine(t, n, "VPN packets path", "path=udp")
		toUDP := time.Since(unblocked)
		t.Logf("UDP blocked: packets on TCP after %v; unblocked: back on UDP after %v", toTCP.Round(time.Millisecond), toUDP.Round(time.Millisecond))
		udp1 := nftBytes(t, tp.c1, "udp_out")
		checkFetch(t, tp.c1, "198.18.0.10:9000", 16<<20, "push")
		if udp := nftBytes(t, tp.c1, "udp_out") - udp1; udp < 16<<20 {
			t.Errorf("%d bytes over UDP after the return, want at least %d", udp, 16<<20)
		}
		if s := onlySession(t, daemonStatus(t, clientSock)); s.Path != "udp" || s.ID != first.ID || s.Reconnects != 0 {
			t.Errorf("after the return: session %s (path %s, %d reconnects), want %s on udp", s.ID, s.Path, s.Reconnects, first.ID)
		}
	})

	t.Run("roaming", func(t *testing.T) {
		n, nc := gw.count(), client.count()
		moves := []struct {
			name     string
			args     [][]string // commands that move the client
			from, to string     // what the gateway's line names
		}{
			// The client's datagrams leave from a second address: the
			// route to the gateway's network prefers it. Its TLS
			// connection stays on the first, which stays too.
			{"new source address", [][]string{
				{"ip", "-n", tp.c1, "addr", "add", "198.19.1.3/24", "dev", "eth0", "nodad"},
				{"ip", "-n", tp.c1, "route", "replace", "198.19.1.0/24", "dev", "eth0", "proto", "kernel", "scope", "link", "src", "198.19.1.3"},
			}, "from=198.19.1.2:", "to=198.19.1.3:"},
			// A NAT in front of the client rebinds its datagrams to
			// another port.
			{"NAT rebinding", [][]string{
				{"ip", "netns", "exec", tp.c1, "nft", "-f", writeFile(t, filepath.Join(dir, "rebind.nft"), udpRebindRules)},
			}, "from=198.19.1.3:", "to=198.19.1.3:40000"},
		}
		for _, m := range moves {
			for _, args := range m.args {
				run(t, args...)
			}
			ng := gw.count()
			in0 := nftBytes(t, tp.c1, "udp_in_roamed")
			checkFetch(t, tp.c1, "198.18.0.10:9000", 32<<20)
			line, _ := gw.waitLine(t, ng, "client's UDP address changed", m.from, m.to)
			t.Logf("%s: the gateway logged %q %s", m.name, "client's UDP address changed", line[strings.Index(line, "from="):])
			// The download came back as datagrams to the new address.
			if in := nftBytes(t, tp.c1, "udp_in_roamed") - in0; in < 32<<20 {
				t.Errorf("%s: %d bytes of datagrams to the new address, want at least %d", m.name, in, 32<<20)
			}
			if err := nsPing(tp.c1, "198.18.0.10"); err != nil {
				t.Errorf("%s: ping: %v", m.name, err)
			}
		}
		cs := onlySession(t, daemonStatus(t, clientSock))
		gst := daemonStatus(t, gwSock)
		gs := onlySession(t, gst)
		if cs.ID != first.ID || gs.ID != first.ID || cs.Reconnects != 0 || cs.Path != "udp" {
			t.Errorf("after roaming: client session %s (%d reconnects, path %s), gateway session %s; want %s throughout on udp", cs.ID, cs.Reconnects, cs.Path, gs.ID, first.ID)
		}
		if gst.Totals.UDPRoamed < uint64(len(moves)) {
			t.Errorf("gateway's udp_roamed %d, want at least %d", gst.Totals.UDPRoamed, len(moves))
		}
		if got := tunAddrs(t, tp.c1, "tw0"); strings.Join(got, " ") != strings.Join(addrs, " ") {
			t.Errorf("tw0 addresses after roaming %v, before %v", got, addrs)
		}
		if client.has(nc, "VPN down") || gw.has(n, "session closed") {
			t.Error("the session went down while roaming")
		}
	})
	client.stop(t)
	gw.stop(t)
}
