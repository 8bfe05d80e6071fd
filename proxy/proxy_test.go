package proxy

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twoway/twoway/proxy/proxytest"
)

// serve accepts connections on a loopback port until the test ends,
// handling each with handle, and returns the address.
func serve(t *testing.T, handle func(net.Conn)) string {
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
			go func() { defer wg.Done(); defer c.Close(); handle(c) }()
		}
	}()
	return ln.Addr().String()
}

// echoServer answers every connection with what it reads.
func echoServer(t *testing.T) string {
	return serve(t, func(c net.Conn) { _, _ = io.Copy(c, c) })
}

// fakeProxy is an HTTP CONNECT proxy for the unit tests: answer decides
// the status line for a request (empty: 200 and relay).
type fakeProxy struct {
	addr     string
	mu       sync.Mutex
	requests []*http.Request
}

func startFakeProxy(t *testing.T, answer func(r *http.Request) string) *fakeProxy {
	t.Helper()
	p := &fakeProxy{}
	p.addr = serve(t, func(c net.Conn) {
		r, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			return
		}
		p.mu.Lock()
		p.requests = append(p.requests, r)
		p.mu.Unlock()
		if a := answer(r); a != "" {
			_, _ = io.WriteString(c, a)
			_, _ = io.Copy(io.Discard, c)
			return
		}
		up, err := net.Dial("tcp", r.Host)
		if err != nil {
			_, _ = io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
			return
		}
		defer up.Close()
		_, _ = io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
		go func() { _, _ = io.Copy(up, c); up.Close() }()
		_, _ = io.Copy(c, up)
	})
	return p
}

func always(u string) Func {
	pu, _ := url.Parse(u)
	return func(string) (*url.URL, error) { return pu, nil }
}

func roundTrip(t *testing.T, c net.Conn) {
	t.Helper()
	defer c.Close()
	msg := "hello through the proxy"
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != msg {
		t.Fatalf("echo: %q %v", got, err)
	}
}

func TestConnect(t *testing.T) {
	target := echoServer(t)
	p := startFakeProxy(t, func(*http.Request) string { return "" })
	d := &Dialer{Proxy: always("http://" + p.addr)}
	c, err := d.DialContext(context.Background(), "tcp", target)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c)
	if r := p.requests[0]; r.Method != http.MethodConnect || r.Host != target || r.Header.Get("Proxy-Authorization") != "" {
		t.Fatalf("request %s %s %v", r.Method, r.Host, r.Header)
	}
	// No proxy for this target: direct.
	d.Proxy = func(string) (*url.URL, error) { return nil, nil }
	c, err = d.DialContext(context.Background(), "tcp", target)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c)
	if len(p.requests) != 1 {
		t.Fatal("the direct connection went through the proxy")
	}
}

func TestConnectAuth(t *testing.T) {
	target := echoServer(t)
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))
	p := startFakeProxy(t, func(r *http.Request) string {
		if r.Header.Get("Proxy-Authorization") != want {
			return "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"x\"\r\n\r\n"
		}
		return ""
	})
	ctx := context.Background()
	if _, err := (&Dialer{Proxy: always("http://" + p.addr)}).DialContext(ctx, "tcp", target); !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "give credentials") {
		t.Fatalf("without credentials: %v", err)
	}
	_, err := (&Dialer{Proxy: always("http://" + p.addr), User: "alice", Password: "wrong"}).DialContext(ctx, "tcp", target)
	if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), `"alice"`) || strings.Contains(err.Error(), "wrong") {
		t.Fatalf("wrong password: %v", err)
	}
	c, err := (&Dialer{Proxy: always("http://" + p.addr), User: "alice", Password: "s3cret"}).DialContext(ctx, "tcp", target)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c)
	// Credentials in the URL win, and are not shown in errors.
	c, err = (&Dialer{Proxy: always("http://alice:s3cret@" + p.addr), User: "bob"}).DialContext(ctx, "tcp", target)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c)
	_, err = (&Dialer{Proxy: always("http://alice:nope@" + p.addr)}).DialContext(ctx, "tcp", target)
	if !errors.Is(err, ErrAuth) || strings.Contains(err.Error(), "nope") {
		t.Fatalf("wrong password in the URL: %v", err)
	}
}

func TestConnectRefusals(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		answer string
		want   error
	}{
		{"HTTP/1.1 403 Forbidden\r\n\r\n", ErrRefused},
		{"HTTP/1.1 502 Bad Gateway\r\n\r\n", ErrRefused},
		{"HTTP/1.1 200 OK\r\n\r\nunexpected", ErrRefused},
		{"SSH-2.0-not-a-proxy\r\n", nil},
		// Headers without end: refused once past the bound, not held.
		{"HTTP/1.1 200 OK\r\n" + strings.Repeat("X-Pad: "+strings.Repeat("a", 1000)+"\r\n", 1000) + "\r\n", nil},
	} {
		p := startFakeProxy(t, func(*http.Request) string { return tc.answer })
		_, err := (&Dialer{Proxy: always("http://" + p.addr)}).DialContext(ctx, "tcp", "gw.example:443")
		if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("answer %.60q: %v, want %v", tc.answer, err, tc.want)
		}
		if err != nil && !strings.Contains(err.Error(), "CONNECT gw.example:443") {
			t.Errorf("error does not say what failed: %v", err)
		}
	}
	// A proxy that never answers: the context's deadline ends the wait.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = (&Dialer{Proxy: always("http://" + ln.Addr().String())}).DialContext(tctx, "tcp", "gw.example:443")
	if err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("silent proxy: %v after %s", err, time.Since(start))
	}
}

func TestProxyChoice(t *testing.T) {
	u, _ := url.Parse("http://proxy.example:3128")
	f := Fixed(u, "corp.example,198.18.0.0/15")
	for target, want := range map[string]bool{
		"gw.example.com:443":   true,
		"gw.corp.example:443":  false,
		"198.18.1.1:8443":      false,
		"198.20.0.1:8443":      true,
		"127.0.0.1:8443":       false, // loopback: direct
		"[2001:db8::1]:443":    true,
		"vpn.corp.example:443": false,
	} {
		got, err := f(target)
		if err != nil || (got != nil) != want {
			t.Errorf("%s: proxy %v (%v), want proxied=%v", target, got, err, want)
		}
	}
	t.Setenv("HTTPS_PROXY", "http://envproxy.example:8080")
	t.Setenv("NO_PROXY", ".internal")
	e := FromEnvironment()
	if got, _ := e("gw.example.com:443"); got == nil || got.Host != "envproxy.example:8080" {
		t.Errorf("HTTPS_PROXY: %v", got)
	}
	if got, _ := e("gw.internal:443"); got != nil {
		t.Errorf("NO_PROXY: %v", got)
	}
}

func TestParseURL(t *testing.T) {
	for s, ok := range map[string]bool{
		"http://proxy:3128":          true,
		"http://user:pw@proxy:3128/": true,
		"http://proxy":               true,
		"https://proxy:3128":         false,
		"socks5://proxy:1080":        false,
		"http://:3128":               false,
		"http://proxy:3128/path":     false,
		"proxy:3128":                 false,
	} {
		if _, err := ParseURL(s); (err == nil) != ok {
			t.Errorf("%s: %v", s, err)
		}
	}
}

// TestTinyproxy: a real proxy from the distribution (tinyproxy, started
// here on loopback) relays the connection, with and without Basic
// authentication.
func TestTinyproxy(t *testing.T) {
	target := echoServer(t)
	for _, auth := range []bool{false, true} {
		t.Run(fmt.Sprintf("auth=%v", auth), func(t *testing.T) {
			addr := proxytest.StartTinyproxy(t, auth)
			d := &Dialer{Proxy: always("http://" + addr)}
			if auth {
				if _, err := d.DialContext(context.Background(), "tcp", target); !errors.Is(err, ErrAuth) {
					t.Fatalf("without credentials: %v", err)
				}
				d.User, d.Password = proxytest.TinyproxyUser, proxytest.TinyproxyPassword
			}
			c, err := d.DialContext(context.Background(), "tcp", target)
			if err != nil {
				t.Fatal(err)
			}
			roundTrip(t, c)
		})
	}
}
