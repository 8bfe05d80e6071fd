package config

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/pki/pkitest"
)

// warningsOf renders warnings as "line key: sentinel" lines for comparison.
func warningsOf(ws []*Error) []string {
	var out []string
	for _, w := range ws {
		out = append(out, w.Error())
	}
	return out
}

// TestServerWarnings: a client_ca of roots only, a CRL of a CA not in
// client_ca and a metrics listener beyond loopback are warnings, each on
// its key and line; the example-like configuration has none.
func TestServerWarnings(t *testing.T) {
	dir := t.TempDir()
	f := writeFixture(t, dir)
	t.Chdir(dir)
	os.WriteFile("root.crt", pkitest.PEM(f.h.Root.Cert), 0o600)
	os.WriteFile("server-crl.pem", pkitest.CRLPEM(f.h.ServerCA.CRL(t, 1)), 0o600)
	tests := []struct {
		name string
		text string
		want error // nil: no warning
	}{
		{"clean", serverTLS + "crls = [\"pki/client-ca/crl.pem\"]\n" + minimalPolicy + "[metrics]\nlisten = \"127.0.0.1:9109\"\n", nil},
		{"metrics on [::1]", serverTLS + minimalPolicy + "[metrics]\nlisten = \"[::1]:9109\"\n", nil},
		{"metrics on localhost", serverTLS + minimalPolicy + "[metrics]\nlisten = \"localhost:9109\"\n", nil},
		{"root-only client_ca", "[tls]\ncert = \"gateway.crt\"\nkey = \"gateway.key\"\nclient_ca = \"root.crt\" #<-\n" + minimalPolicy, ErrRootOnlyClientCA},
		{"CRL of another CA", serverTLS + "crls = [\n\"pki/client-ca/crl.pem\",\n\"server-crl.pem\", #<-\n]\n" + minimalPolicy, ErrCRLMatchesNoCA},
		{"metrics on every interface", serverTLS + minimalPolicy + "[metrics]\nlisten = \":9109\" #<-\n", ErrMetricsNotLoopback},
		{"metrics on a LAN address", serverTLS + minimalPolicy + "[metrics]\nlisten = \"198.18.0.1:9109\" #<-\n", ErrMetricsNotLoopback},
		{"metrics on a name", serverTLS + minimalPolicy + "[metrics]\nlisten = \"gw.corp.example:9109\" #<-\n", ErrMetricsNotLoopback},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			os.WriteFile("server.toml", []byte(tt.text), 0o644)
			cfg, err := LoadServer("server.toml")
			if err != nil {
				t.Fatal(err)
			}
			ws := cfg.Warnings()
			if tt.want == nil {
				if len(ws) != 0 {
					t.Fatalf("unexpected warnings: %q", warningsOf(ws))
				}
				return
			}
			if len(ws) != 1 || !errors.Is(ws[0], tt.want) || ws[0].Line != marked(t, tt.text) {
				t.Fatalf("warnings %q, want one %q on line %d", warningsOf(ws), tt.want, marked(t, tt.text))
			}
		})
	}
}

// TestClientWarnings: -L beyond loopback always warns (nothing
// authenticates it), -D beyond loopback only without [socks]
// authentication; forwards added in code (command-line flags) count too.
func TestClientWarnings(t *testing.T) {
	dir := t.TempDir()
	writeFixture(t, dir)
	t.Chdir(dir)
	os.WriteFile("socks.pass", []byte("pw\n"), 0o600)
	socks := "[socks]\nuser = \"alice\"\npassword_file = \"socks.pass\"\n"
	tests := []struct {
		name string
		text string
		want error
	}{
		{"loopback forwards", clientHead + clientTLS + "[[forward]]\nlocal = \"127.0.0.1:5432\"\nremote = \"db:5432\"\n[[forward]]\ntype = \"dynamic\"\nlocal = \"[::1]:1080\"\n", nil},
		{"remote forward on the gateway", clientHead + clientTLS + "[[forward]]\ntype = \"remote\"\nremote = \"0.0.0.0:8080\"\nlocal = \"127.0.0.1:80\"\n", nil},
		{"-L on every interface", clientHead + clientTLS + "[[forward]] #<-\nlocal = \"*:5432\"\nremote = \"db:5432\"\n", ErrForwardNotLoopback},
		{"-L on every interface with socks auth", clientHead + clientTLS + socks + "[[forward]] #<-\nlocal = \"0.0.0.0:5432\"\nremote = \"db:5432\"\n", ErrForwardNotLoopback},
		{"-D on a LAN address", clientHead + clientTLS + "[[forward]] #<-\ntype = \"dynamic\"\nlocal = \"198.18.0.2:1080\"\n", ErrForwardNotLoopback},
		{"-D with socks auth", clientHead + clientTLS + socks + "[[forward]]\ntype = \"dynamic\"\nlocal = \"0.0.0.0:1080\"\n", nil},
		{"metrics beyond loopback", clientHead + clientTLS + "[metrics]\nlisten = \"0.0.0.0:9110\" #<-\n", ErrMetricsNotLoopback},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			os.WriteFile("client.toml", []byte(tt.text), 0o644)
			cfg, err := LoadClient("client.toml")
			if err != nil {
				t.Fatal(err)
			}
			ws := cfg.Warnings()
			if tt.want == nil {
				if len(ws) != 0 {
					t.Fatalf("unexpected warnings: %q", warningsOf(ws))
				}
				return
			}
			if len(ws) != 1 || !errors.Is(ws[0], tt.want) || ws[0].Line != marked(t, tt.text) {
				t.Fatalf("warnings %q, want one %q on line %d", warningsOf(ws), tt.want, marked(t, tt.text))
			}
		})
	}

	// A -D from the command line, added after loading.
	os.WriteFile("client.toml", []byte(clientHead+clientTLS), 0o644)
	cfg, err := LoadClient("client.toml")
	if err != nil {
		t.Fatal(err)
	}
	fw, err := ParseForward("D", "*:1080")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Forwards = append(cfg.Forwards, fw)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ws := cfg.Warnings()
	if len(ws) != 1 || !errors.Is(ws[0], ErrForwardNotLoopback) || !strings.Contains(ws[0].Error(), "-D 0.0.0.0:1080") {
		t.Fatalf("warnings for -D *:1080: %q", warningsOf(ws))
	}
}

// TestScopedCRLRefused: config validation refuses a delta CRL, naming the
// file, line and key.
func TestScopedCRLRefused(t *testing.T) {
	dir := t.TempDir()
	f := writeFixture(t, dir)
	t.Chdir(dir)
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: big.NewInt(2), ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(time.Hour),
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 27}, Critical: true, Value: []byte{2, 1, 1}}},
	}, f.h.ClientCA.Cert, f.h.ClientCA.Key)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile("delta.pem", pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), 0o600)
	text := serverTLS + "crls = [\"delta.pem\"] #<-\n" + minimalPolicy
	os.WriteFile("server.toml", []byte(text), 0o644)
	_, err = LoadServer("server.toml")
	var ce *Error
	if !errors.Is(err, pki.ErrDeltaCRL) || !errors.As(err, &ce) || ce.Line != marked(t, text) || ce.Key != "tls.crls[0]" ||
		!strings.Contains(err.Error(), filepath.Join(dir, "delta.pem")) {
		t.Fatalf("delta CRL: %v", err)
	}
}

// TestUserKey: `user` takes an account name; VPN mode keeps root, so a
// user with [vpn] is an error; "root" is always allowed.
func TestUserKey(t *testing.T) {
	dir := t.TempDir()
	writeFixture(t, dir)
	t.Chdir(dir)
	vpn := "[vpn]\nenable = true\nipv4 = \"198.18.100.0/24\"\n"
	for _, tc := range []struct {
		name, text, want string
	}{
		{"server user", "user = \"twoway\"\n" + serverTLS + minimalPolicy, ""},
		{"server root with vpn", "user = \"root\"\n" + serverTLS + minimalPolicy + vpn, ""},
		{"server bad name", "user = \"Bad User\" #<-\n" + serverTLS + minimalPolicy, `user: "Bad User": not a valid account name`},
		{"server user with vpn", "user = \"twoway\" #<-\n" + serverTLS + minimalPolicy + vpn, `user: "twoway": VPN mode keeps root`},
	} {
		os.WriteFile("server.toml", []byte(tc.text), 0o644)
		_, err := LoadServer("server.toml")
		if tc.want == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		want := "server.toml:" + strconv.Itoa(marked(t, tc.text)) + ": " + tc.want
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%s: err = %v, want prefix %q", tc.name, err, want)
		}
	}
	os.WriteFile("client.toml", []byte("user = \"nobody\"\n"+clientHead+clientTLS), 0o644)
	if c, err := LoadClient("client.toml"); err != nil || c.User != "nobody" {
		t.Errorf("client user: %v", err)
	}
	for _, tc := range []struct {
		user       string
		vpn        bool
		want       string
		isExplicit bool
	}{
		{"", false, DefaultUser, false},
		{"svc", false, "svc", true},
		{"root", false, "", true},
		{"", true, "", false},
		{"root", true, "", true},
	} {
		if got, explicit := RunAs(tc.user, tc.vpn); got != tc.want || explicit != tc.isExplicit {
			t.Errorf("RunAs(%q, %v) = %q, %v; want %q, %v", tc.user, tc.vpn, got, explicit, tc.want, tc.isExplicit)
		}
	}
}
