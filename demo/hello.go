package demo

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// ClientHello is what a client offered in its first TLS message, as the
// gateway received it. It is sent in clear, so the demo can show it as it
// was on the wire rather than as the client was configured.
type ClientHello struct {
	// Size is the number of bytes recorded (TLS record headers included).
	Size int
	// Versions are the TLS versions offered (supported_versions).
	Versions []uint16
	// ALPN lists the application protocols offered.
	ALPN []string
	// ServerName is the SNI; empty when the client sent none (as for an
	// IP address).
	ServerName string
	// CipherSuites and Groups (key exchanges) are in the client's order
	// of preference.
	CipherSuites []uint16
	Groups       []tls.CurveID
	// SignatureSchemes are those the client accepts from the gateway.
	SignatureSchemes []tls.SignatureScheme
}

// maxHello bounds what is recorded per connection; a ClientHello is a few
// kilobytes even with post-quantum key shares.
const maxHello = 64 << 10

// helloRecorder is a listener that keeps a copy of the bytes carrying each
// accepted connection's ClientHello, so that the demo can show what the
// client really sent. A copy is dropped when its connection closes.
type helloRecorder struct {
	net.Listener

	mu     sync.Mutex
	hellos map[string]*recorded // by remote address; guarded by mu
}

type recorded struct{ data []byte }

func newHelloRecorder(ln net.Listener) *helloRecorder {
	return &helloRecorder{Listener: ln, hellos: make(map[string]*recorded)}
}

// Accept wraps each connection so that its first bytes are recorded.
func (l *helloRecorder) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &recordingConn{Conn: c, rec: l, key: c.RemoteAddr().String()}, nil
}

// take returns the ClientHello recorded for the connection from remote.
func (l *helloRecorder) take(remote string) (*ClientHello, error) {
	l.mu.Lock()
	r := l.hellos[remote]
	delete(l.hellos, remote)
	l.mu.Unlock()
	if r == nil {
		return nil, fmt.Errorf("no ClientHello recorded from %s", remote)
	}
	return parseClientHello(r.data)
}

func (l *helloRecorder) store(c *recordingConn, data []byte) {
	l.mu.Lock()
	c.mine = &recorded{data: data}
	l.hellos[c.key] = c.mine
	l.mu.Unlock()
}

// forget drops c's hello, if it is still there (and not a later
// connection's from the same address).
func (l *helloRecorder) forget(c *recordingConn) {
	l.mu.Lock()
	if c.mine != nil && l.hellos[c.key] == c.mine {
		delete(l.hellos, c.key)
	}
	l.mu.Unlock()
}

// recordingConn copies what is read until a complete ClientHello has
// passed. Read has one caller at a time (the TLS handshake, then the
// record layer), so buf and done need no lock; Close may come from any
// goroutine (a handshake timeout), hence mine is guarded.
type recordingConn struct {
	net.Conn
	rec  *helloRecorder
	key  string
	buf  []byte
	done bool
	mine *recorded // guarded by rec.mu
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if !c.done && n > 0 {
		c.buf = append(c.buf, p[:n]...)
		switch complete, ok := helloComplete(c.buf); {
		case !ok || len(c.buf) > maxHello:
			c.done, c.buf = true, nil // not TLS, or absurd: nothing to show
		case complete:
			c.rec.store(c, c.buf)
			c.done, c.buf = true, nil
		}
	}
	return n, err
}

func (c *recordingConn) Close() error {
	c.rec.forget(c)
	return c.Conn.Close()
}

// helloComplete reports whether data, the start of a connection, holds a
// whole ClientHello handshake message, which may span several TLS
// records; ok is false when data is not a TLS handshake.
func helloComplete(data []byte) (complete, ok bool) {
	const recordHeader, handshakeHeader = 5, 4
	var msg []byte // handshake bytes collected from the records so far
	for len(data) >= recordHeader {
		if data[0] != 22 { // content type handshake
			return false, false
		}
		n := int(data[3])<<8 | int(data[4])
		if len(data) < recordHeader+n {
			break
		}
		msg = append(msg, data[recordHeader:recordHeader+n]...)
		data = data[recordHeader+n:]
	}
	if len(msg) < handshakeHeader {
		return false, true
	}
	if msg[0] != 1 { // handshake type client_hello
		return false, false
	}
	n := int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3])
	return len(msg) >= handshakeHeader+n, true
}

// errParsed stops the replayed handshake once the hello has been read.
var errParsed = errors.New("client hello parsed")

// parseClientHello lets crypto/tls itself parse the recorded bytes: it
// replays them into a server handshake that stops as soon as the hello
// has been decoded. No handwritten parser to get wrong.
func parseClientHello(data []byte) (*ClientHello, error) {
	var h *ClientHello
	srv := tls.Server(&replayConn{r: bytes.NewReader(data)}, &tls.Config{
		GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
			h = &ClientHello{
				Size:             len(data),
				Versions:         chi.SupportedVersions,
				ALPN:             chi.SupportedProtos,
				ServerName:       chi.ServerName,
				CipherSuites:     chi.CipherSuites,
				Groups:           chi.SupportedCurves,
				SignatureSchemes: chi.SignatureSchemes,
			}
			return nil, errParsed
		},
	})
	err := srv.Handshake()
	if h == nil {
		return nil, fmt.Errorf("parse ClientHello: %w", err)
	}
	return h, nil
}

// replayConn feeds recorded bytes to a TLS server and swallows its answer.
type replayConn struct{ r io.Reader }

func (c *replayConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *replayConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *replayConn) Close() error                     { return nil }
func (c *replayConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *replayConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *replayConn) SetDeadline(time.Time) error      { return nil }
func (c *replayConn) SetReadDeadline(time.Time) error  { return nil }
func (c *replayConn) SetWriteDeadline(time.Time) error { return nil }
