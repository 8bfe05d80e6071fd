package socks5

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/proxy"
)

// testProxy is a minimal -D listener on loopback built from Accept and
// Reply, the way the client uses them. Requests for the name
// "web.twoway.test" go to the test's HTTP server; IP requests are dialed
// only when they are loopback, so nothing leaves the machine.
type testProxy struct {
	addr     string
	requests chan Request
}

func startProxy(t *testing.T, opts Options, web string) *testProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &testProxy{addr: ln.Addr().String(), requests: make(chan Request, 16)}
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
			go func() {
				defer wg.Done()
				defer c.Close()
				p.serve(c, opts, web)
			}()
		}
	}()
	return p
}

func (p *testProxy) serve(c net.Conn, opts Options, web string) {
	req, err := Accept(c, opts)
	if err != nil {
		return
	}
	p.requests <- *req
	dest := req.Address()
	switch {
	case req.Host == "web.twoway.test":
		dest = web
	case req.Host != "" || !req.Addr.IsLoopback():
		_ = req.Reply(ReplyNotAllowed, netip.AddrPort{})
		return
	}
	up, err := net.Dial("tcp", dest)
	if err != nil {
		_ = req.Reply(ReplyFor(err), netip.AddrPort{})
		return
	}
	defer up.Close()
	if err := req.Reply(ReplySucceeded, up.LocalAddr().(*net.TCPAddr).AddrPort()); err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(up, c)
		up.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	_, _ = io.Copy(c, up)
	c.(*net.TCPConn).CloseWrite()
	<-done
}

func webServer(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from "+r.Host)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestAcceptTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	// The client sends half a greeting and stalls; the deadline must fire.
	client.Write([]byte{5})
	_, err = Accept(server, Options{Timeout: 50 * time.Millisecond})
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Accept = %v, want a timeout", err)
	}
}

func TestXNetProxyClient(t *testing.T) {
	web := webServer(t)
	for _, withAuth := range []bool{false, true} {
		opts := Options{}
		var pauth *proxy.Auth
		if withAuth {
			opts.Authenticate = StaticCredentials("alice", "s3cret")
			pauth = &proxy.Auth{User: "alice", Password: "s3cret"}
		}
		p := startProxy(t, opts, web.Listener.Addr().String())
		d, err := proxy.SOCKS5("tcp", p.addr, pauth, proxy.Direct)
		if err != nil {
			t.Fatal(err)
		}
		hc := &http.Client{Transport: &http.Transport{
			DialContext: d.(proxy.ContextDialer).DialContext,
		}}
		resp, err := hc.Get("http://web.twoway.test/x")
		if err != nil {
			t.Fatalf("auth=%v: GET through proxy: %v", withAuth, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "hello from web.twoway.test" {
			t.Errorf("body = %q", body)
		}
		req := <-p.requests
		if req.Host != "web.twoway.test" || req.Port != 80 || (withAuth && req.User != "alice") {
			t.Errorf("proxy saw %+v", req)
		}
		hc.CloseIdleConnections()

		// Refusals reach the client as errors.
		if _, err := d.(proxy.ContextDialer).DialContext(context.Background(), "tcp", closedPort(t)); err == nil || !strings.Contains(err.Error(), "refused") {
			t.Errorf("dial closed port through proxy = %v, want connection refused", err)
		}
		<-p.requests
		if _, err := d.(proxy.ContextDialer).DialContext(context.Background(), "tcp", "elsewhere.example:80"); err == nil || !strings.Contains(err.Error(), "not allowed") {
			t.Errorf("dial disallowed host through proxy = %v, want not allowed", err)
		}
		<-p.requests
	}
}

func TestCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("curl not installed")
	}
	web := webServer(t)
	plain := startProxy(t, Options{}, web.Listener.Addr().String())
	authed := startProxy(t, Options{Authenticate: StaticCredentials("alice", "s3cret")}, web.Listener.Addr().String())
	run := func(args ...string) (string, error) {
		args = append([]string{"-sS", "--max-time", "20", "--noproxy", ""}, args...)
		out, err := exec.Command(curl, args...).CombinedOutput()
		return string(out), err
	}

	out, err := run("--socks5-hostname", plain.addr, "http://web.twoway.test/")
	if err != nil || out != "hello from web.twoway.test" {
		t.Errorf("curl --socks5-hostname: %v: %s", err, out)
	} else if req := <-plain.requests; req.Host != "web.twoway.test" {
		t.Errorf("proxy saw %+v, want the host name", req)
	}

	out, err = run("--socks5", plain.addr, web.URL)
	if err != nil || !strings.HasPrefix(out, "hello from 127.0.0.1:") {
		t.Errorf("curl --socks5: %v: %s", err, out)
	} else if req := <-plain.requests; req.Host != "" || !req.Addr.IsLoopback() {
		t.Errorf("proxy saw %+v, want an IPv4 address", req)
	}

	out, err = run("--socks5-hostname", authed.addr, "--proxy-user", "alice:s3cret", "http://web.twoway.test/")
	if err != nil || out != "hello from web.twoway.test" {
		t.Errorf("curl with username/password: %v: %s", err, out)
	} else if req := <-authed.requests; req.User != "alice" {
		t.Errorf("proxy saw user %q", req.User)
	}

	if out, err = run("--socks5-hostname", authed.addr, "--proxy-user", "alice:wrong", "http://web.twoway.test/"); err == nil {
		t.Errorf("curl with a wrong password succeeded: %s", out)
	}

	if out, err = run("--socks5", plain.addr, "http://"+closedPort(t)+"/"); err == nil || !(strings.Contains(out, "(5)") || strings.Contains(strings.ToLower(out), "refused")) {
		t.Errorf("curl to a closed port: %v: %s (want connection refused)", err, out)
	}
	<-plain.requests
}
