// Package proxy connects a client to its gateway through an HTTP proxy
// (CONNECT, RFC 9110 §9.3.6), for networks that let nothing out but a
// proxy. The proxy only relays bytes: the mutual-TLS session inside is
// the same as on a direct connection, so the gateway's certificate is
// verified as always and the proxy learns the gateway's address, nothing
// more.
//
// Which proxy is used for a gateway address is a function (Func): a fixed
// proxy from the configuration, or the standard environment (HTTPS_PROXY,
// HTTP_PROXY, NO_PROXY and their lower-case forms).
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
	"time"

	"golang.org/x/net/http/httpproxy"
)

// Func returns the proxy to reach the gateway at target ("host:port")
// through, or nil to connect directly.
type Func func(target string) (*url.URL, error)

// Errors a dial through a proxy can fail with, beside network errors.
var (
	// ErrAuth: the proxy wants credentials, or refused the ones given
	// (407).
	ErrAuth = errors.New("proxy requires authentication")
	// ErrRefused: the proxy answered CONNECT with another status.
	ErrRefused = errors.New("proxy refused the connection")
)

// FromEnvironment is the proxy the standard environment names for an
// https connection to target: HTTPS_PROXY (or https_proxy), except for the
// hosts NO_PROXY lists, as Go's net/http reads them (HTTP_PROXY is for
// plain http and not used). Loopback targets always connect directly. The
// environment is read once, now.
func FromEnvironment() Func {
	return funcOf(httpproxy.FromEnvironment())
}

// Fixed always uses u, except for the targets noProxy lists (the syntax
// of NO_PROXY: host names, domain suffixes, IP addresses and CIDRs,
// comma-separated) and loopback targets, which connect directly.
func Fixed(u *url.URL, noProxy string) Func {
	return funcOf(&httpproxy.Config{HTTPSProxy: u.String(), NoProxy: noProxy})
}

func funcOf(c *httpproxy.Config) Func {
	pf := c.ProxyFunc()
	return func(target string) (*url.URL, error) {
		return pf(&url.URL{Scheme: "https", Host: target})
	}
}

// ParseURL checks a proxy URL from a configuration: http:// with a host
// and port (the default port 80 if none), no path.
func ParseURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	switch {
	case u.Scheme != "http":
		return nil, fmt.Errorf("proxy URL %q: scheme must be http (the TLS session to the gateway is inside)", s)
	case u.Hostname() == "":
		return nil, fmt.Errorf("proxy URL %q: no host", s)
	case u.Path != "" && u.Path != "/", u.RawQuery != "", u.Fragment != "":
		return nil, fmt.Errorf("proxy URL %q: a proxy URL has no path, query or fragment", s)
	}
	return u, nil
}

// Dialer opens TCP connections to gateways, through a proxy where Proxy
// says so. The zero value of Proxy connects directly.
type Dialer struct {
	// Proxy picks the proxy per target; nil: always direct.
	Proxy Func
	// User and Password are the proxy credentials when the proxy URL
	// carries none (Basic authentication).
	User, Password string
	// Direct makes the TCP connections, to the gateway or to the proxy.
	Direct *net.Dialer
}

// DialContext connects to addr ("host:port"), directly or through the
// proxy; through a proxy, the returned connection is the tunnel CONNECT
// opened. ctx bounds the whole exchange with the proxy.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	direct := d.Direct
	if direct == nil {
		direct = &net.Dialer{}
	}
	var pu *url.URL
	if d.Proxy != nil {
		var err error
		if pu, err = d.Proxy(addr); err != nil {
			return nil, fmt.Errorf("choosing a proxy for %s: %w", addr, err)
		}
	}
	if pu == nil {
		return direct.DialContext(ctx, network, addr)
	}
	paddr := pu.Host
	if pu.Port() == "" {
		paddr = net.JoinHostPort(pu.Hostname(), "80")
	}
	conn, err := direct.DialContext(ctx, network, paddr)
	if err != nil {
		return nil, fmt.Errorf("proxy %s: %w", redacted(pu), err)
	}
	c, err := d.connect(ctx, conn, pu, addr)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("proxy %s: CONNECT %s: %w", redacted(pu), addr, err)
	}
	return c, nil
}

// connect asks the proxy on conn for a tunnel to addr.
func (d *Dialer) connect(ctx context.Context, conn net.Conn, pu *url.URL, addr string) (net.Conn, error) {
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// A cancelled ctx unblocks the exchange.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	var b strings.Builder
	fmt.Fprintf(&b, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n", addr, addr)
	user, pass := d.User, d.Password
	if pu.User != nil {
		user = pu.User.Username()
		pass, _ = pu.User.Password()
	}
	if user != "" {
		cred := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
		fmt.Fprintf(&b, "Proxy-Authorization: Basic %s\r\n", cred)
	}
	b.WriteString("\r\n")
	if _, err := conn.Write([]byte(b.String())); err != nil {
		return nil, err
	}
	// The answer is read through a bound: a proxy that sends headers
	// without end must not make us hold them.
	br := bufio.NewReader(io.LimitReader(conn, maxAnswer))
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return nil, fmt.Errorf("reading the answer: %w", err)
	}
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusProxyAuthRequired && user == "":
		return nil, fmt.Errorf("%w (%s); give credentials in the proxy URL or the configuration", ErrAuth, resp.Status)
	case resp.StatusCode == http.StatusProxyAuthRequired:
		return nil, fmt.Errorf("%w: credentials for %q refused (%s)", ErrAuth, user, resp.Status)
	case resp.StatusCode/100 != 2:
		return nil, fmt.Errorf("%w: %s", ErrRefused, resp.Status)
	}
	if err := stopDeadline(stop, conn); err != nil {
		return nil, err
	}
	if br.Buffered() > 0 {
		// The gateway speaks only after the client's TLS hello, so a proxy
		// that sends bytes of its own here is not relaying.
		return nil, fmt.Errorf("%w: %d unexpected bytes after the answer", ErrRefused, br.Buffered())
	}
	return conn, nil
}

// maxAnswer bounds the proxy's answer to CONNECT (status line and
// headers); real ones are a few hundred bytes.
const maxAnswer = 16 << 10

// stopDeadline ends ctx's hold on conn; if ctx was already done, the
// exchange counts as cancelled.
func stopDeadline(stop func() bool, conn net.Conn) error {
	if !stop() {
		return context.Canceled
	}
	return conn.SetDeadline(time.Time{})
}

// redacted is u without its password, for errors and logs.
func redacted(u *url.URL) string { return u.Redacted() }
