package service

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/twoway/twoway/pki/pkitest"
)

// configs writes a gateway and a client configuration, and every file they
// name, under a temporary directory. The gateway listens on loopback only.
func configs(t *testing.T) (server, client string) {
	t.Helper()
	dir := t.TempDir()
	h := pkitest.NewHierarchy(t)
	gw := h.ServerCA.Server(t, "127.0.0.1")
	alice := h.ClientCA.Client(t, "alice", "eng")
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("gateway.crt", pkitest.PEM(gw.Certs()...))
	write("gateway.key", pkitest.KeyPEM(t, gw.Key))
	write("alice.crt", pkitest.PEM(alice.Certs()...))
	write("alice.key", pkitest.KeyPEM(t, alice.Key))
	write("client-ca.crt", pkitest.PEM(h.ClientBundle()...))
	write("server-ca.crt", pkitest.PEM(h.ServerBundle()...))
	server = write("server.toml", []byte(`listen = "127.0.0.1:0"
[tls]
cert = "gateway.crt"
key = "gateway.key"
client_ca = "client-ca.crt"
[control]
socket = "off"
[policy.admit]
groups = ["eng"]
`))
	client = write("client.toml", []byte(`servers = ["127.0.0.1:1"]
[tls]
cert = "alice.crt"
key = "alice.key"
server_ca = "server-ca.crt"
[control]
socket = "off"
`))
	return server, client
}

// badConfig writes a server configuration whose third line is wrong.
func badConfig(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "server.toml")
	content := fmt.Sprintf("# gateway\n\nlisten = %q\n", "127.0.0.1:99999")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
