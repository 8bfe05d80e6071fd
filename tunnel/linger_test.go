package tunnel

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"
)

// TestRefusalAlertSurvivesClientData: a TLS 1.3 client sends its hello
// right after its Finished, before it reads the gateway's verdict. A
// gateway that closed at once answered that data with a reset, so the
// client's write failed with a broken pipe before it had read the alert
// that says why it was refused (a flake of TestRefusedClientLearnsWhy on a
// loaded machine). The gateway now lingers: the writes succeed and the
// client reads the alert.
func TestRefusalAlertSurvivesClientData(t *testing.T) {
	f := newFixture(t)
	revoked := f.h.ClientCA.Client(t, "mallory")
	f.serverCreds.setVerifier(t, f.h.ClientBundle(), f.h.ClientCA.CRL(t, 1, revoked.Cert))
	srv := startServer(t, f.serverConfig(nil))
	cert := revoked.TLSCertificate()
	for i := range 5 {
		conn, err := tls.Dial("tcp", srv.Addr().String(), &tls.Config{
			InsecureSkipVerify: true, NextProtos: []string{ALPN}, MinVersion: tls.VersionTLS13,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil },
		})
		if err != nil {
			t.Fatal(err)
		}
		// A client on a busy machine gets to send its hello only after
		// the gateway has refused it; its writes must not fail (a reset
		// answering them would), or it reports a broken pipe instead of
		// why it was refused.
		time.Sleep(20 * time.Millisecond)
		for range 2 {
			if _, err := conn.Write(make([]byte, 4<<10)); err != nil {
				t.Fatalf("attempt %d: client write after the refusal: %v", i, err)
			}
			time.Sleep(5 * time.Millisecond)
		}
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
		if err == nil || !strings.Contains(err.Error(), "bad certificate") {
			t.Fatalf("attempt %d: client read %v, want the bad certificate alert", i, err)
		}
	}
}
