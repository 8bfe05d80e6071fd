package tunnel

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"

	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/policy"
	"github.com/twoway/twoway/socks5"
)

// socksConnect speaks just enough SOCKS5 (no auth, CONNECT by domain name)
// to ask for host:port, and returns the reply code and bound address.
func socksConnect(t *testing.T, proxy, host string, port uint16) (net.Conn, socks5.ReplyCode, netip.AddrPort) {
	t.Helper()
	conn, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	req := []byte{5, 1, 0, 5, 1, 0, 3, byte(len(host))}
	req = append(req, host...)
	req = binary.BigEndian.AppendUint16(req, port)
	if _, err := conn.Write(req); err != nil {
		t.Fatal(err)
	}
	var head [6]byte // method choice (2) + reply header (4)
	if _, err := io.ReadFull(conn, head[:]); err != nil {
		t.Fatalf("SOCKS reply: %v", err)
	}
	if head[0] != 5 || head[1] != 0 || head[2] != 5 {
		t.Fatalf("SOCKS reply header % x", head)
	}
	var addr netip.Addr
	switch head[5] {
	case 1:
		var b [4]byte
		io.ReadFull(conn, b[:])
		addr = netip.AddrFrom4(b)
	case 4:
		var b [16]byte
		io.ReadFull(conn, b[:])
		addr = netip.AddrFrom16(b)
	default:
		t.Fatalf("bound address type %d", head[5])
	}
	var p [2]byte
	io.ReadFull(conn, p[:])
	return conn, socks5.ReplyCode(head[3]), netip.AddrPortFrom(addr, binary.BigEndian.Uint16(p[:]))
}

func TestDynamicForward(t *testing.T) {
	f := newFixture(t)
	tgt := startTarget(t, echo)
	_, tp, _ := net.SplitHostPort(tgt.addr())
	port := mustPort(t, tp)
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	_, cp, _ := net.SplitHostPort(closed.Addr().String())
	closed.Close()
	closedPort := mustPort(t, cp)
	pol := &fakePolicy{dial: func(_ *pki.Identity, tg policy.Target) policy.Decision {
		return policy.Decision{Allow: tg.Port == port || tg.Port == closedPort, Rule: "only the echo port"}
	}}
	scfg := f.serverConfig(pol)
	scfg.Resolver = fakeResolver{"echo.test": {netip.MustParseAddr("127.0.0.1")}}
	srv := startServer(t, scfg)
	ccfg := f.clientConfig(srv.Addr().String(), mustForward(t, ForwardDynamic, "127.0.0.1:0", ""))
	var ev sessionEvents
	ev.hook(&ccfg)
	c := startClient(t, ccfg)
	waitFor(t, ev.up, "session")
	proxy := c.Forwards()[0].Local.String()

	conn, code, bound := socksConnect(t, proxy, "echo.test", port)
	defer conn.Close()
	if code != socks5.ReplySucceeded || !bound.Addr().IsLoopback() {
		t.Fatalf("reply %v bound %v", code, bound)
	}
	roundTrip(t, conn, "through SOCKS")

	for _, tc := range []struct {
		host string
		port uint16
		want socks5.ReplyCode
	}{
		{"echo.test", port + 1, socks5.ReplyNotAllowed}, // policy
		{"nowhere.test", port, socks5.ReplyHostUnreachable},
		{"127.0.0.1", closedPort, socks5.ReplyConnectionRefused}, // allowed, nothing listening
	} {
		t.Run(fmt.Sprintf("%s:%d", tc.host, tc.port), func(t *testing.T) {
			conn, code, _ := socksConnect(t, proxy, tc.host, tc.port)
			defer conn.Close()
			if code != tc.want {
				t.Fatalf("reply %v, want %v", code, tc.want)
			}
			if _, err := conn.Read(make([]byte, 1)); err == nil {
				t.Fatal("connection open after a refusal")
			}
		})
	}
}
