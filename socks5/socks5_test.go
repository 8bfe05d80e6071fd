package socks5

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// memConn is a net.Conn whose input is fixed and whose output is recorded,
// so tests can assert the exact bytes of a conversation.
type memConn struct {
	in  *bytes.Reader
	out bytes.Buffer
}

func newMemConn(in []byte) *memConn { return &memConn{in: bytes.NewReader(in)} }

func (c *memConn) Read(p []byte) (int, error)       { return c.in.Read(p) }
func (c *memConn) Write(p []byte) (int, error)      { return c.out.Write(p) }
func (c *memConn) Close() error                     { return nil }
func (c *memConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *memConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *memConn) SetDeadline(time.Time) error      { return nil }
func (c *memConn) SetReadDeadline(time.Time) error  { return nil }
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }
func cat(parts ...[]byte) []byte                    { return bytes.Join(parts, nil) }
func b(v ...byte) []byte                            { return v }
func domainAddr(name string, port uint16) []byte {
	return cat(b(3, byte(len(name))), []byte(name), b(byte(port>>8), byte(port)))
}
func connect(addr []byte) []byte { return cat(b(5, 1, 0), addr) }
func creds(user, pass string) []byte {
	return cat(b(1, byte(len(user))), []byte(user), b(byte(len(pass))), []byte(pass))
}
func refusal(code ReplyCode) []byte { return b(5, byte(code), 0, 1, 0, 0, 0, 0, 0, 0) }
func ipv4Addr(a, b2, c, d byte, port uint16) []byte {
	return []byte{1, a, b2, c, d, byte(port >> 8), byte(port)}
}
func ipv6Addr(a netip.Addr, port uint16) []byte {
	s := a.As16()
	return cat(b(4), s[:], b(byte(port>>8), byte(port)))
}
func noAuth() []byte                                   { return b(5, 1, 0) }
func auth(user, pass string) func(string, string) bool { return StaticCredentials(user, pass) }

func TestAccept(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		in      []byte
		out     []byte // everything Accept writes
		err     error
		host    string
		addr    string
		port    uint16
		user    string
		errText string
	}{
		{name: "ipv4", in: cat(noAuth(), connect(ipv4Addr(198, 18, 0, 1, 80))), out: b(5, 0), addr: "198.18.0.1", port: 80},
		{name: "ipv6", in: cat(noAuth(), connect(ipv6Addr(netip.MustParseAddr("2001:db8::1"), 443))), out: b(5, 0), addr: "2001:db8::1", port: 443},
		{name: "domain", in: cat(noAuth(), connect(domainAddr("db.corp.example", 5432))), out: b(5, 0), host: "db.corp.example", port: 5432},
		{name: "domain that is an IP literal", in: cat(noAuth(), connect(domainAddr("198.18.0.9", 22))), out: b(5, 0), addr: "198.18.0.9", port: 22},
		{name: "domain that is a bracketed IPv6 literal", in: cat(noAuth(), connect(domainAddr("[2001:db8::2]", 22))), out: b(5, 0), addr: "2001:db8::2", port: 22},
		{name: "several methods offered", in: cat(b(5, 3, 2, 1, 0), connect(ipv4Addr(127, 0, 0, 1, 1))), out: b(5, 0), addr: "127.0.0.1", port: 1},
		{name: "username/password", opts: Options{Authenticate: auth("alice", "s3cret")},
			in:  cat(b(5, 2, 0, 2), creds("alice", "s3cret"), connect(ipv4Addr(198, 18, 0, 1, 80))),
			out: b(5, 2, 1, 0), addr: "198.18.0.1", port: 80, user: "alice"},
		{name: "wrong password", opts: Options{Authenticate: auth("alice", "s3cret")},
			in:  cat(b(5, 1, 2), creds("alice", "guess"), connect(ipv4Addr(198, 18, 0, 1, 80))),
			out: b(5, 2, 1, 1), err: ErrAuthFailed, errText: `user "alice"`},
		{name: "empty credentials", opts: Options{Authenticate: auth("alice", "s3cret")},
			in: cat(b(5, 1, 2), creds("", "")), out: b(5, 2, 1, 1), err: ErrAuthFailed},
		{name: "bad auth version", opts: Options{Authenticate: auth("a", "b")},
			in: cat(b(5, 1, 2), b(5, 1, 'a', 1, 'b')), out: b(5, 2, 1, 1), err: ErrMalformed},
		{name: "auth required but not offered", opts: Options{Authenticate: auth("a", "b")},
			in: cat(noAuth()), out: b(5, 0xff), err: ErrNoAcceptableMethod, errText: "did not offer username/password"},
		{name: "client insists on auth", in: b(5, 1, 2), out: b(5, 0xff), err: ErrNoAcceptableMethod, errText: "requires authentication"},
		{name: "no methods", in: b(5, 0), out: b(5, 0xff), err: ErrNoAcceptableMethod},
		{name: "socks4", in: b(4, 1, 0, 80, 127, 0, 0, 1, 0), err: ErrVersion},
		{name: "http", in: []byte("GET / HTTP/1.1\r\n\r\n"), err: ErrVersion},
		{name: "bind", in: cat(noAuth(), b(5, 2, 0), ipv4Addr(198, 18, 0, 1, 80)),
			out: cat(b(5, 0), refusal(ReplyCommandNotSupported)), err: ErrCommandNotSupported, errText: "BIND 198.18.0.1:80"},
		{name: "udp associate", in: cat(noAuth(), b(5, 3, 0), domainAddr("x.example", 53)),
			out: cat(b(5, 0), refusal(ReplyCommandNotSupported)), err: ErrCommandNotSupported, errText: "UDP ASSOCIATE x.example:53"},
		{name: "unknown command", in: cat(noAuth(), b(5, 9, 0), ipv4Addr(1, 2, 3, 4, 5)),
			out: cat(b(5, 0), refusal(ReplyCommandNotSupported)), err: ErrCommandNotSupported},
		{name: "unknown address type", in: cat(noAuth(), b(5, 1, 0, 7, 1, 2, 3, 4)),
			out: cat(b(5, 0), refusal(ReplyAddressTypeNotSupported)), err: ErrAddressTypeNotSupported},
		{name: "request version", in: cat(noAuth(), b(4, 1, 0), ipv4Addr(1, 2, 3, 4, 5)),
			out: cat(b(5, 0), refusal(ReplyGeneralFailure)), err: ErrMalformed},
		{name: "empty domain", in: cat(noAuth(), connect(domainAddr("", 80))),
			out: cat(b(5, 0), refusal(ReplyGeneralFailure)), err: ErrMalformed},
		{name: "domain with a newline", in: cat(noAuth(), connect(domainAddr("evil\nlog", 80))),
			out: cat(b(5, 0), refusal(ReplyGeneralFailure)), err: ErrMalformed},
		{name: "truncated greeting", in: b(5), err: io.ErrUnexpectedEOF},
		{name: "truncated methods", in: b(5, 3, 0), err: io.ErrUnexpectedEOF},
		{name: "truncated address", in: cat(noAuth(), b(5, 1, 0, 1, 127, 0)), out: b(5, 0), err: io.ErrUnexpectedEOF},
		{name: "truncated domain", in: cat(noAuth(), b(5, 1, 0, 3, 10, 'a')), out: b(5, 0), err: io.ErrUnexpectedEOF},
		{name: "nothing", in: nil, err: io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newMemConn(tt.in)
			req, err := Accept(c, tt.opts)
			if !bytes.Equal(c.out.Bytes(), tt.out) {
				t.Errorf("wrote % x, want % x", c.out.Bytes(), tt.out)
			}
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("Accept error = %v, want %v", err, tt.err)
				}
				if !strings.Contains(err.Error(), tt.errText) {
					t.Errorf("error %q does not contain %q", err, tt.errText)
				}
				return
			}
			if err != nil {
				t.Fatalf("Accept: %v", err)
			}
			var want netip.Addr
			if tt.addr != "" {
				want = netip.MustParseAddr(tt.addr)
			}
			if req.Command != CommandConnect || req.Host != tt.host || req.Addr != want || req.Port != tt.port || req.User != tt.user {
				t.Errorf("request = %+v, want host %q addr %q port %d user %q", req, tt.host, tt.addr, tt.port, tt.user)
			}
		})
	}
}

func TestRequestAddress(t *testing.T) {
	for _, tt := range []struct {
		r    Request
		want string
	}{
		{Request{Host: "db.corp.example", Port: 5432}, "db.corp.example:5432"},
		{Request{Addr: netip.MustParseAddr("198.18.0.1"), Port: 80}, "198.18.0.1:80"},
		{Request{Addr: netip.MustParseAddr("2001:db8::1"), Port: 443}, "[2001:db8::1]:443"},
	} {
		if got := tt.r.Address(); got != tt.want {
			t.Errorf("Address() = %q, want %q", got, tt.want)
		}
	}
}

func TestReply(t *testing.T) {
	tests := []struct {
		code  ReplyCode
		bound netip.AddrPort
		want  []byte
	}{
		{ReplySucceeded, netip.MustParseAddrPort("127.0.0.1:1234"), b(5, 0, 0, 1, 127, 0, 0, 1, 0x04, 0xd2)},
		{ReplySucceeded, netip.MustParseAddrPort("[::ffff:127.0.0.1]:80"), b(5, 0, 0, 1, 127, 0, 0, 1, 0, 80)},
		{ReplySucceeded, netip.MustParseAddrPort("[2001:db8::1]:443"), cat(b(5, 0, 0, 4, 0x20, 1, 0x0d, 0xb8), make([]byte, 11), b(1, 1, 0xbb))},
		{ReplyConnectionRefused, netip.AddrPort{}, refusal(ReplyConnectionRefused)},
		{ReplyNotAllowed, netip.AddrPort{}, refusal(ReplyNotAllowed)},
	}
	for _, tt := range tests {
		c := newMemConn(cat(noAuth(), connect(ipv4Addr(198, 18, 0, 1, 80))))
		req, err := Accept(c, Options{})
		if err != nil {
			t.Fatal(err)
		}
		c.out.Reset()
		if err := req.Reply(tt.code, tt.bound); err != nil {
			t.Fatalf("Reply: %v", err)
		}
		if !bytes.Equal(c.out.Bytes(), tt.want) {
			t.Errorf("Reply(%s, %s) wrote % x, want % x", tt.code, tt.bound, c.out.Bytes(), tt.want)
		}
		if err := req.Reply(ReplySucceeded, netip.AddrPort{}); !errors.Is(err, ErrReplied) {
			t.Errorf("second Reply = %v, want ErrReplied", err)
		}
	}
}

// timeoutErr is a net.Error that reports a timeout, like a dialer's.
type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestReplyFor(t *testing.T) {
	opErr := func(err error) error {
		return &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", err)}
	}
	tests := []struct {
		err  error
		want ReplyCode
	}{
		{nil, ReplySucceeded},
		{opErr(syscall.ECONNREFUSED), ReplyConnectionRefused},
		{opErr(syscall.ENETUNREACH), ReplyNetworkUnreachable},
		{opErr(syscall.EHOSTUNREACH), ReplyHostUnreachable},
		{opErr(syscall.ETIMEDOUT), ReplyTTLExpired},
		{&net.OpError{Op: "dial", Err: timeoutErr{}}, ReplyTTLExpired},
		{fmt.Errorf("dial: %w", context.DeadlineExceeded), ReplyTTLExpired},
		{&net.OpError{Op: "dial", Err: &net.DNSError{Err: "no such host", Name: "x.invalid", IsNotFound: true}}, ReplyHostUnreachable},
		{fmt.Errorf("policy: %w", ErrNotAllowed), ReplyNotAllowed},
		{fmt.Errorf("tunnel: %w", &ReplyError{Code: ReplyNetworkUnreachable}), ReplyNetworkUnreachable},
		{errors.New("something else"), ReplyGeneralFailure},
	}
	for _, tt := range tests {
		if got := ReplyFor(tt.err); got != tt.want {
			t.Errorf("ReplyFor(%v) = %s, want %s", tt.err, got, tt.want)
		}
	}

	// And a real refusal from the kernel: a loopback port nobody listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Skip("closed port accepted a connection")
	} else if got := ReplyFor(err); got != ReplyConnectionRefused {
		t.Errorf("ReplyFor(%v) = %s, want connection refused", err, got)
	}
}

func TestStrings(t *testing.T) {
	if s := ReplyNotAllowed.String(); s != "connection not allowed by ruleset" {
		t.Errorf("ReplyNotAllowed.String() = %q", s)
	}
	if s := ReplyCode(42).String(); s != "reply code 42" {
		t.Errorf("ReplyCode(42).String() = %q", s)
	}
	if s := Command(9).String(); s != "command 9" {
		t.Errorf("Command(9).String() = %q", s)
	}
	if s := (&ReplyError{Code: ReplyTTLExpired}).Error(); s != "TTL expired" {
		t.Errorf("ReplyError.Error() = %q", s)
	}
}

func FuzzAccept(f *testing.F) {
	f.Add(cat(noAuth(), connect(ipv4Addr(198, 18, 0, 1, 80))), false)
	f.Add(cat(noAuth(), connect(domainAddr("db.corp.example", 5432))), false)
	f.Add(cat(noAuth(), connect(ipv6Addr(netip.MustParseAddr("2001:db8::1"), 443))), false)
	f.Add(cat(b(5, 1, 2), creds("alice", "s3cret"), connect(domainAddr("x", 1))), true)
	f.Add(cat(noAuth(), b(5, 3, 0), domainAddr("x.example", 53)), false)
	f.Fuzz(func(t *testing.T, in []byte, withAuth bool) {
		opts := Options{}
		if withAuth {
			opts.Authenticate = auth("alice", "s3cret")
		}
		c := newMemConn(in)
		req, err := Accept(c, opts)
		out := c.out.Bytes()
		// Whatever happened, what we wrote must be well-formed: a method
		// selection first, if anything.
		if len(out) > 0 && (len(out) < 2 || out[0] != 5) {
			t.Fatalf("bad method selection % x", out)
		}
		if err != nil {
			return
		}
		if req.Command != CommandConnect {
			t.Fatalf("Accept returned %s", req.Command)
		}
		if (req.Host == "") == !req.Addr.IsValid() {
			t.Fatalf("request has host %q and addr %v: want exactly one", req.Host, req.Addr)
		}
		if withAuth && req.User != "alice" {
			t.Fatalf("authenticated as %q", req.User)
		}
		if !bytes.Equal(out[:2], []byte{5, map[bool]byte{false: 0, true: 2}[withAuth]}) {
			t.Fatalf("accepted after method selection % x", out[:2])
		}
	})
}
