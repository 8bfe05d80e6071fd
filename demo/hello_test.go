package demo

import (
	"crypto/tls"
	"net"
	"slices"
	"testing"
)

// recordHello has a real crypto/tls client send its ClientHello to a
// helloRecorder and returns what the recorder kept, with the raw bytes.
func recordHello(t *testing.T, cfg *tls.Config) (*ClientHello, []byte) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := newHelloRecorder(ln)
	defer rec.Close()
	clientDone := make(chan struct{})
	go func() {
		defer close(clientDone)
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return
		}
		defer c.Close()
		_ = tls.Client(c, cfg).Handshake() // fails when the server side closes
	}()
	conn, err := rec.Accept()
	if err != nil {
		t.Fatal(err)
	}
	rc := conn.(*recordingConn)
	buf := make([]byte, 512) // small reads: the hello arrives in pieces
	for !rc.done {
		if _, err := rc.Read(buf); err != nil {
			t.Fatalf("reading the ClientHello: %v", err)
		}
	}
	rec.mu.Lock()
	raw := rec.hellos[conn.RemoteAddr().String()].data
	rec.mu.Unlock()
	h, err := rec.take(conn.RemoteAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	<-clientDone
	return h, raw
}

func TestDemoClientHelloRecorded(t *testing.T) {
	h, raw := recordHello(t, &tls.Config{
		ServerName: "gateway.example",
		NextProtos: []string{"twoway/1", "h2"},
		MinVersion: tls.VersionTLS12,
		MaxVersion: tls.VersionTLS13,
	})
	if h.ServerName != "gateway.example" {
		t.Errorf("SNI %q", h.ServerName)
	}
	if !slices.Equal(h.ALPN, []string{"twoway/1", "h2"}) {
		t.Errorf("ALPN %q", h.ALPN)
	}
	if !slices.Equal(h.Versions, []uint16{tls.VersionTLS13, tls.VersionTLS12}) {
		t.Errorf("versions %x", h.Versions)
	}
	if h.Size != len(raw) || len(h.CipherSuites) == 0 || len(h.Groups) == 0 {
		t.Errorf("hello %+v", h)
	}

	// The same handshake message split over many small records, as a
	// client may send it, is still recognised and parsed.
	if n := int(raw[3])<<8 | int(raw[4]); n != len(raw)-5 {
		t.Fatalf("hello in several records (%d of %d bytes in the first); the split below assumes one", n, len(raw)-5)
	}
	msg := raw[5:]
	var split []byte
	for len(msg) > 0 {
		n := min(len(msg), 100)
		split = append(split, 22, 3, 1, byte(n>>8), byte(n))
		split = append(split, msg[:n]...)
		msg = msg[n:]
	}
	for cut := 0; cut < len(split); cut += 37 {
		if complete, ok := helloComplete(split[:cut]); complete || !ok {
			t.Fatalf("prefix of %d bytes: complete=%v ok=%v", cut, complete, ok)
		}
	}
	if complete, ok := helloComplete(split); !complete || !ok {
		t.Fatalf("split hello: complete=%v ok=%v", complete, ok)
	}
	h2, err := parseClientHello(split)
	if err != nil || !slices.Equal(h2.ALPN, h.ALPN) || h2.ServerName != h.ServerName {
		t.Fatalf("split hello parsed as %+v, %v", h2, err)
	}
}

func TestDemoHelloCompleteNotTLS(t *testing.T) {
	for _, data := range [][]byte{
		[]byte("GET / HTTP/1.1\r\n"),
		{22, 3, 1, 0, 4, 2, 0, 0, 0}, // a handshake, but a ServerHello
	} {
		if _, ok := helloComplete(data); ok {
			t.Errorf("%q taken for a ClientHello", data)
		}
	}
	if _, err := parseClientHello([]byte("not a hello")); err == nil {
		t.Error("garbage parsed")
	}
}

// TestDemoRecorderForgets: a connection's hello is dropped when it closes,
// so refused and finished connections do not accumulate.
func TestDemoRecorderForgets(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := newHelloRecorder(ln)
	defer rec.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return
		}
		defer c.Close()
		_ = tls.Client(c, &tls.Config{ServerName: "x.example"}).Handshake()
	}()
	conn, err := rec.Accept()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	for !conn.(*recordingConn).done {
		if _, err := conn.Read(buf); err != nil {
			t.Fatal(err)
		}
	}
	conn.Close()
	<-done
	if _, err := rec.take(conn.RemoteAddr().String()); err == nil {
		t.Error("hello still recorded after the connection closed")
	}
}
