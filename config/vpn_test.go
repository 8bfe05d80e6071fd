package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/twoway/twoway/tun"
)

// TestVPNLoad: an enabled [vpn] loads with its defaults filled in and its
// state directory resolved next to the file; the client's [vpn] too.
func TestVPNLoad(t *testing.T) {
	dir := t.TempDir()
	writeFixture(t, dir)
	srvPath := filepath.Join(dir, "server.toml")
	os.WriteFile(srvPath, []byte(`[tls]
cert = "gateway.crt"
key = "gateway.key"
client_ca = "pki/client-ca/bundle.crt"
`+minimalPolicy+`
[vpn]
enable = true
ipv4 = "198.18.100.0/24"
routes = ["0.0.0.0/0"]
state_dir = "state"
[vpn.static]
alice = ["198.18.100.10"]
[[vpn.group]]
group = "ops"
prefixes = ["198.18.100.128/26"]
`), 0o600)
	s, err := LoadServer(srvPath)
	if err != nil {
		t.Fatal(err)
	}
	v := s.VPN
	if v.Forwarding != ForwardingNAT || v.MTU != tun.DefaultMTU || v.StateDir != filepath.Join(dir, "state") {
		t.Errorf("defaults: %+v", v)
	}
	pool := v.Pool()
	if pool.StateFile != filepath.Join(dir, "state", "leases.json") || pool.Static["alice"][0] != netip.MustParseAddr("198.18.100.10") ||
		len(pool.Groups) != 1 || pool.Groups[0].Group != "ops" {
		t.Errorf("pool: %+v", pool)
	}

	cliPath := filepath.Join(dir, "client.toml")
	client := func(vpn string) {
		os.WriteFile(cliPath, []byte(`servers = ["gw.corp.example:8443"]
[tls]
cert = "alice.crt"
key = "alice.key"
server_ca = "pki/server-ca/bundle.crt"
[vpn]
enable = true
`+vpn), 0o600)
	}
	client("resolv_conf = \"resolv.conf\"\n")
	c, err := LoadClient(cliPath)
	if err != nil {
		t.Fatal(err)
	}
	if !c.VPN.Enable || c.VPN.ResolvConf != filepath.Join(dir, "resolv.conf") || c.VPN.StateDir != DefaultStateDir || c.VPN.Persist || !c.VPN.OffloadOn() {
		t.Errorf("client vpn: %+v", c.VPN)
	}
	client("persist = true\noffload = false\n")
	if c, err = LoadClient(cliPath); err != nil {
		t.Fatal(err)
	}
	if !c.VPN.Persist || c.VPN.OffloadOn() {
		t.Errorf("client vpn persist/offload: %+v", c.VPN)
	}
}
