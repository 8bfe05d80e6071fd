package tunnel

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/big"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// countConn counts the Writes that reach the TCP connection.
type countConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

func TestCorkConnCollectsInOrder(t *testing.T) {
	rc := newRecConn()
	ck := &corkConn{Conn: rc}
	ck.Write([]byte("direct"))
	ck.cork()
	ck.Write([]byte("one,"))
	ck.Write([]byte("two"))
	if n := len(rc.records()); n != 1 {
		t.Fatalf("corked writes reached the connection: %d writes", n)
	}
	if err := ck.uncork(); err != nil {
		t.Fatal(err)
	}
	ck.Write([]byte("after"))
	recs := rc.records()
	if len(recs) != 3 || string(recs[0]) != "direct" || string(recs[1]) != "one,two" || string(recs[2]) != "after" {
		t.Fatalf("writes %q", recs)
	}
	// Nothing collected: uncork writes nothing.
	ck.cork()
	if err := ck.uncork(); err != nil || len(rc.records()) != 3 {
		t.Fatalf("empty uncork: %v, %d writes", err, len(rc.records()))
	}
}

// A frame of several TLS records leaves muxConn in one write to the TCP
// connection, and arrives intact.
func TestMuxConnCorksRecords(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cert := selfSigned(t)
	const size = 100_000
	hdr, body := frame(0, 7, bytes.Repeat([]byte("0123456789abcdef"), size/16))
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
		buf := make([]byte, len(hdr)+len(body))
		_ = tc.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(tc, buf); err != nil {
			t.Errorf("server read: %v", err)
			buf = nil
		}
		got <- buf
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cc := &countConn{Conn: raw}
	ck := &corkConn{Conn: cc}
	// The test's own throwaway certificate: nothing to verify it against.
	tc := tls.Client(ck, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	mc := newMuxConn(tc, raw, time.Minute, 256<<10)
	mc.cork = ck
	defer mc.Close()
	before := cc.writes.Load()
	mc.Write(hdr)
	mc.Write(body)
	b := <-got
	if !bytes.Equal(b, append(hdr, body...)) {
		t.Fatal("frame corrupted through the corked connection")
	}
	if n := cc.writes.Load() - before; n != 1 {
		t.Fatalf("a %d-byte frame took %d writes to the TCP connection, want 1", size, n)
	}
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"cork.test"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}
