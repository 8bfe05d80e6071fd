package config

import (
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twoway/twoway/authority"
	"github.com/twoway/twoway/fleet"
	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/pki/pkitest"
	"github.com/twoway/twoway/policy"
)

// fixture writes, under dir, every file the example configurations name:
// gateway and alice credentials, both CA bundles and a client-CA CRL.
type fixture struct {
	h       *pkitest.Hierarchy
	gateway *pkitest.Leaf
	alice   *pkitest.Leaf
}

func writeFixture(t *testing.T, dir string) *fixture {
	t.Helper()
	h := pkitest.NewHierarchy(t)
	f := &fixture{h: h, gateway: h.ServerCA.Server(t, "gw.corp.example"), alice: h.ClientCA.Client(t, "alice", "eng")}
	write := func(name string, data []byte) {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("gateway.crt", pkitest.PEM(f.gateway.Certs()...))
	write("gateway.key", pkitest.KeyPEM(t, f.gateway.Key))
	write("alice.crt", pkitest.PEM(f.alice.Certs()...))
	write("alice.key", pkitest.KeyPEM(t, f.alice.Key))
	write("pki/client-ca/bundle.crt", pkitest.PEM(h.ClientBundle()...))
	write("pki/server-ca/bundle.crt", pkitest.PEM(h.ServerBundle()...))
	write("pki/client-ca/crl.pem", pkitest.CRLPEM(h.ClientCA.CRL(t, 1)))
	return f
}

func TestExamplesLoad(t *testing.T) {
	dir := t.TempDir()
	writeFixture(t, dir)
	sp := filepath.Join(dir, "server.toml")
	cp := filepath.Join(dir, "client.toml")
	os.WriteFile(sp, []byte(ExampleServer()), 0o644)
	os.WriteFile(cp, []byte(ExampleClient()), 0o644)

	s, err := LoadServer(sp)
	if err != nil {
		t.Fatalf("ExampleServer: %v", err)
	}
	if s.Listen != ":8443" || s.TLS.Cert != filepath.Join(dir, "gateway.crt") || s.TLS.CRLs[0] != filepath.Join(dir, "pki/client-ca/crl.pem") {
		t.Errorf("server = %+v", s)
	}
	if len(s.Policy.Rules) != 4 || s.Policy.Rules[1].Name != "eng-web" || len(s.Policy.Rules[1].Targets) != 3 {
		t.Errorf("policy = %+v", s.Policy)
	}
	if _, err := policy.New(s.Policy); err != nil {
		t.Errorf("example policy: %v", err)
	}
	if s.Limits.HandshakeTimeout != 10*time.Second || s.Limits.HandshakeRate != 5 {
		t.Errorf("limits = %+v", s.Limits)
	}

	c, err := LoadClient(cp)
	if err != nil {
		t.Fatalf("ExampleClient: %v", err)
	}
	want := []Forward{
		{Type: ForwardLocal, Local: "127.0.0.1:5432", Remote: "db.corp.example:5432"},
		{Type: ForwardRemote, Remote: "127.0.0.1:8080", Local: "127.0.0.1:3000"},
		{Type: ForwardDynamic, Local: "127.0.0.1:1080"},
	}
	if fmt.Sprint(c.Forwards) != fmt.Sprint(want) {
		t.Errorf("forwards = %v, want %v", c.Forwards, want)
	}
	if c.TLS.ServerCA != filepath.Join(dir, "pki/server-ca/bundle.crt") || c.ServerName != "gw.corp.example" || len(c.Servers) != 2 {
		t.Errorf("client = %+v", c)
	}
}

func TestDefaults(t *testing.T) {
	dir := t.TempDir()
	writeFixture(t, dir)
	p := filepath.Join(dir, "server.toml")
	os.WriteFile(p, []byte(serverTLS+minimalPolicy), 0o644)
	s, err := LoadServer(p)
	if err != nil {
		t.Fatal(err)
	}
	d := DefaultServer()
	if s.Listen != DefaultListen || s.Limits != d.Limits || s.Log != d.Log {
		t.Errorf("defaults not applied: %+v", s)
	}
	if s.Log.SlogLevel().String() != "INFO" {
		t.Errorf("SlogLevel = %v", s.Log.SlogLevel())
	}
	p = filepath.Join(dir, "client.toml")
	os.WriteFile(p, []byte(clientHead+clientTLS), 0o644)
	c, err := LoadClient(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Reconnect != DefaultClient().Reconnect || len(c.Forwards) != 0 {
		t.Errorf("client defaults not applied: %+v", c)
	}
}

// TestFleetStoreUnreachable: store_unreachable defaults to "refuse" and
// reaches the fleet package's config.
func TestFleetStoreUnreachable(t *testing.T) {
	dir := t.TempDir()
	writeFixture(t, dir)
	p := filepath.Join(dir, "server.toml")
	head := serverTLS + minimalPolicy + "[fleet]\nendpoints = [\"127.0.0.1:2379\"]\nname = \"gw1\"\n"
	for _, tc := range []struct{ line, want string }{
		{"", ""},
		{"store_unreachable = \"refuse\"\n", fleet.StoreRefuse},
		{"store_unreachable = \"serve-cached\"\n", fleet.StoreServeCached},
	} {
		os.WriteFile(p, []byte(head+tc.line), 0o644)
		s, err := LoadServer(p)
		if err != nil {
			t.Fatalf("%q: %v", tc.line, err)
		}
		if got := s.Fleet.Config().StoreUnreachable; got != tc.want {
			t.Errorf("%q: StoreUnreachable = %q, want %q", tc.line, got, tc.want)
		}
	}
}

const serverTLS = `[tls]
cert = "gateway.crt"
key = "gateway.key"
client_ca = "pki/client-ca/bundle.crt"
`

const minimalPolicy = `[policy.admit]
groups = ["*"]
`

const twoRules = `[[policy.rule]]
name = "a"
groups = ["*"]
targets = ["any"]
[[policy.rule]]
name = "b"
groups = ["eng"]
`

// marked returns the 1-based line of the first line containing "#<-".
func marked(t *testing.T, text string) int {
	for i, line := range strings.Split(text, "\n") {
		if strings.Contains(line, "#<-") {
			return i + 1
		}
	}
	t.Fatalf("no #<- marker in\n%s", text)
	return 0
}

func TestServerErrors(t *testing.T) {
	tests := []struct {
		name string
		text string
		want string // expected error after "server.toml:LINE: "; LINE is the #<- line
	}{
		{"bad cidr in second rule", serverTLS + minimalPolicy + twoRules + `targets = ["198.18.0.0/15", "10.0.0/8"] #<-`,
			`policy.rule[1].targets: invalid CIDR "10.0.0/8"`},
		{"bad cidr on its own line", serverTLS + minimalPolicy + twoRules + "targets = [\n \"198.18.0.0/15\",\n \"10.0.0/8\", #<-\n]",
			`policy.rule[1].targets: invalid CIDR "10.0.0/8"`},
		{"bad protocol", serverTLS + minimalPolicy + twoRules + "targets = [\"any\"]\nprotocols = [\"tcp\", \"sctp\"] #<-",
			`policy.rule[1].protocols: invalid protocol "sctp" (want tcp, udp or icmp)`},
		{"rule without targets", serverTLS + minimalPolicy + twoRules + "action = \"deny\"",
			"", // checked separately: points at the rule header
		},
		{"unknown key in second rule", serverTLS + minimalPolicy + twoRules + `target = ["any"] #<-`,
			`policy.rule[1].target: unknown key (valid keys here: name, identities, groups, issuers, action, targets, protocols, binds)`},
		{"type error in second rule", serverTLS + minimalPolicy + twoRules + `targets = "any" #<-`,
			`policy.rule[1].targets: incompatible types: TOML value has type string; destination has type slice`},
		{"fleet without endpoints", serverTLS + minimalPolicy + "[fleet] #<-\nname = \"gw1\"\n",
			`fleet.endpoints: required: the [fleet] table names no etcd endpoints`},
		{"fleet without name", serverTLS + minimalPolicy + "[fleet] #<-\nendpoints = [\"127.0.0.1:2379\"]\n",
			`fleet.name: required: this gateway's name in the fleet, e.g. name = "gw1"`},
		{"fleet bad endpoint", serverTLS + minimalPolicy + "[fleet]\nendpoints = [\"127.0.0.1:2379\", \"ftp://x\"] #<-\nname = \"gw1\"\n",
			`fleet.endpoints[1]: "ftp://x": scheme "ftp", want http or https`},
		{"fleet lease", serverTLS + minimalPolicy + "[fleet]\nendpoints = [\"127.0.0.1:2379\"]\nname = \"gw1\"\nlease_ttl = \"1500ms\" #<-\n",
			`fleet.lease_ttl: 1.5s is outside 2s to 10m0s`},
		{"fleet store unreachable", serverTLS + minimalPolicy + "[fleet]\nendpoints = [\"127.0.0.1:2379\"]\nname = \"gw1\"\nstore_unreachable = \"cached\" #<-\n",
			`fleet.store_unreachable: "cached": want "refuse" or "serve-cached"`},
		{"fleet store unreachable without endpoints", serverTLS + minimalPolicy + "[fleet] #<-\nstore_unreachable = \"refuse\"\n",
			`fleet.endpoints: required: the [fleet] table names no etcd endpoints`},
		{"unknown table", serverTLS + minimalPolicy + "[metric] #<-\nlisten = \"127.0.0.1:9109\"",
			`metric: unknown key (valid keys here: listen, tls, limits, policy, log, vpn, enroll, fleet, control, metrics, user)`},
		{"unknown metrics key", serverTLS + minimalPolicy + "[metrics]\nenabled = true #<-",
			`metrics.enabled: unknown key (valid keys here: listen)`},
		{"bad metrics listen", serverTLS + minimalPolicy + "[metrics]\nlisten = \"9109\" #<-",
			`metrics.listen: invalid address "9109": want host:port, e.g. ":8443" or "[::1]:8443"`},
		{"relative control socket", serverTLS + minimalPolicy + "[control]\nsocket = \"run/x.sock\" #<-",
			`control.socket: "run/x.sock": must be an absolute path (or "off")`},
		{"unknown vpn key", serverTLS + minimalPolicy + "[vpn]\nenabled = true #<-",
			`vpn.enabled: unknown key (valid keys here: enable, ipv4, ipv6, gateway, static, group, routes, dns, search_domains, mtu, client_to_client, lan_to_clients, forwarding, lan_interface, lan_announce, tun, offload, state_dir, udp, udp_port, manage_path_queue)`},
		{"vpn without pool", serverTLS + minimalPolicy + "[vpn] #<-\nenable = true",
			`vpn.ipv4: no pool configured: set an IPv4 and/or an IPv6 prefix`},
		{"vpn bad pool", serverTLS + minimalPolicy + "[vpn]\nenable = true\nipv4 = \"198.18.100.1/24\" #<-",
			`vpn.ipv4: 198.18.100.1/24 has host bits set (did you mean 198.18.100.0/24?)`},
		{"vpn gateway outside pool", serverTLS + minimalPolicy + "[vpn]\nenable = true\nipv4 = \"198.18.100.0/24\"\ngateway = [\"198.18.1.1\"] #<-",
			`vpn.gateway[0]: 198.18.1.1 is outside the IPv4 pool 198.18.100.0/24`},
		{"vpn forwarding", serverTLS + minimalPolicy + "[vpn]\nenable = true\nipv4 = \"198.18.100.0/24\"\nforwarding = \"bridge\" #<-",
			`vpn.forwarding: "bridge": want "nat" or "routed"`},
		{"vpn lan_announce", serverTLS + minimalPolicy + "[vpn]\nenable = true\nipv4 = \"198.18.100.0/24\"\nforwarding = \"routed\"\nlan_interface = \"eth0\"\nlan_announce = \"arp\" #<-",
			`vpn.lan_announce: "arp": want "none" or "proxy-arp"`},
		{"vpn lan_announce with nat", serverTLS + minimalPolicy + "[vpn]\nenable = true\nipv4 = \"198.18.100.0/24\"\nlan_interface = \"eth0\"\nlan_announce = \"proxy-arp\" #<-",
			`vpn.lan_announce: "proxy-arp" needs forwarding = "routed" (with NAT the LAN sees only the gateway's own address)`},
		{"vpn lan_announce without interface", serverTLS + minimalPolicy + "[vpn]\nenable = true\nipv4 = \"198.18.100.0/24\"\nforwarding = \"routed\"\nlan_announce = \"proxy-arp\" #<-",
			`vpn.lan_announce: "proxy-arp" needs lan_interface: the interface on the LAN to answer ARP/NDP on`},
		{"vpn mtu", serverTLS + minimalPolicy + "[vpn]\nenable = true\nipv4 = \"198.18.100.0/24\"\nmtu = 100 #<-",
			`vpn.mtu: invalid tun config: mtu 100 outside 576..65535`},
		{"vpn bad route", serverTLS + minimalPolicy + "[vpn]\nenable = true\nipv4 = \"198.18.100.0/24\"\nroutes = [\"198.18.0.0/33\"] #<-",
			`vpn.routes: netip.ParsePrefix("198.18.0.0/33"): prefix length out of range`},
		{"unknown tls key", serverTLS + `certfile = "x" #<-` + "\n" + minimalPolicy,
			`tls.certfile: unknown key (valid keys here: cert, key, key_password_file, client_ca, crls, crl_stale, session_tickets, allow_insecure_key_permissions)`},
		{"syntax", serverTLS + "cert = = 1 #<-\n" + minimalPolicy, ""},
		{"listen", `listen = "8443" #<-` + "\n" + serverTLS + minimalPolicy,
			`listen: invalid address "8443": want host:port, e.g. ":8443" or "[::1]:8443"`},
		{"listen port", `listen = ":https" #<-` + "\n" + serverTLS + minimalPolicy,
			`listen: invalid address ":https": port "https" is not a number 0-65535`},
		{"missing cert file", "[tls]\ncert = \"nope.crt\" #<-\nkey = \"gateway.key\"\nclient_ca = \"pki/client-ca/bundle.crt\"\n" + minimalPolicy,
			`tls.cert: DIR/nope.crt: no such file or directory`},
		{"key is not a key", "[tls]\ncert = \"gateway.crt\"\nkey = \"gateway.crt\" #<-\nclient_ca = \"pki/client-ca/bundle.crt\"\n" + minimalPolicy,
			`tls.key: DIR/gateway.crt: no PEM private key found`},
		{"key of another cert", "[tls]\ncert = \"gateway.crt\"\nkey = \"alice.key\" #<-\nclient_ca = \"pki/client-ca/bundle.crt\"\n" + minimalPolicy,
			`tls.key: DIR/alice.key does not match the certificate's public key`},
		{"client_ca is not PEM", "[tls]\ncert = \"gateway.crt\"\nkey = \"gateway.key\"\nclient_ca = \"gateway.key\" #<-\n" + minimalPolicy,
			`tls.client_ca: DIR/gateway.key: no PEM data found: expected CERTIFICATE`},
		{"crl is a certificate", serverTLS + "crls = [\"pki/client-ca/crl.pem\", \"gateway.crt\"] #<-\n" + minimalPolicy,
			`tls.crls[1]: DIR/gateway.crt: no PEM data found: expected X509 CRL, found CERTIFICATE`},
		{"crl_stale", serverTLS + "crl_stale = \"deny\" #<-\n" + minimalPolicy,
			`tls.crl_stale: "deny": must be "warn" or "reject"`},
		{"integer duration", serverTLS + "[limits]\nhandshake_timeout = 10 #<-\n" + minimalPolicy,
			`limits.handshake_timeout: 10ns is too short: write durations with a unit, e.g. "10s"`},
		{"bad duration", serverTLS + "[limits]\nkeepalive_interval = \"30 s\" #<-\n" + minimalPolicy,
			`limits.keepalive_interval: invalid duration: "30 s"`},
		{"long duration", serverTLS + "[limits]\nhandshake_timeout = \"1h\" #<-\n" + minimalPolicy,
			`limits.handshake_timeout: 1h0m0s is too long (maximum 5m0s)`},
		{"max sessions", serverTLS + "[limits]\nmax_sessions = 0 #<-\n" + minimalPolicy,
			`limits.max_sessions: 0: must be at least 1`},
		{"negative sessions per identity", serverTLS + "[limits]\nmax_sessions_per_identity = -1 #<-\n" + minimalPolicy,
			`limits.max_sessions_per_identity: -1: must not be negative (0 means no limit)`},
		{"receive budget", serverTLS + "[limits]\nreceive_budget_mib = 0 #<-\n" + minimalPolicy,
			`limits.receive_budget_mib: 0: must be at least 1`},
		{"total receive budget below one session's", serverTLS + "[limits]\nreceive_budget_mib = 128\nreceive_budget_total_mib = 64 #<-\n" + minimalPolicy,
			`limits.receive_budget_total_mib: 64: must be at least receive_budget_mib (128)`},
		{"rate type", serverTLS + "[limits]\nhandshake_rate = \"fast\" #<-\n" + minimalPolicy,
			`limits.handshake_rate: incompatible types: TOML value has type string; destination has type float`},
		{"nobody admitted", serverTLS + "[policy] #<-\n",
			`policy.admit: nobody is admitted: list identities or groups ("*" admits every verified identity)`},
		{"bad admit group", serverTLS + "[policy.admit]\ngroups = [\"eng\", \"\"] #<-\n",
			`policy.admit.groups: invalid group ""`},
		{"bad ca issuer", serverTLS + minimalPolicy + "[[policy.ca]]\nissuer = \"sha256:abcd\" #<-\ngroups = [\"eng\"]\n",
			`policy.ca[0].issuer: invalid issuer "sha256:abcd": a sha256: fingerprint has 64 hex digits`},
		{"log level", serverTLS + minimalPolicy + "[log]\nlevel = \"loud\" #<-\n",
			`log.level: invalid level "loud" (want debug, info, warn or error)`},
	}
	dir := t.TempDir()
	writeFixture(t, dir)
	t.Chdir(dir)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			os.WriteFile("server.toml", []byte(tt.text), 0o644)
			_, err := LoadServer("server.toml")
			if err == nil {
				t.Fatalf("loaded:\n%s", tt.text)
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("error %v is %T, want *Error", err, err)
			}
			switch tt.name {
			case "syntax":
				if ce.Line != marked(t, tt.text) || !errors.Is(err, ErrSyntax) || !strings.HasPrefix(err.Error(), fmt.Sprintf("server.toml:%d: TOML syntax error: ", ce.Line)) {
					t.Errorf("got %q (line %d)", err, ce.Line)
				}
				return
			case "rule without targets":
				header := strings.LastIndex(tt.text[:strings.LastIndex(tt.text, "[[policy.rule]]")], "\n")
				line := strings.Count(tt.text[:header+1], "\n") + 1
				want := fmt.Sprintf("server.toml:%d: policy.rule[1].targets: rule has neither targets nor binds", line)
				if err.Error() != want {
					t.Errorf("got  %q\nwant %q", err, want)
				}
				return
			}
			want := fmt.Sprintf("server.toml:%d: %s", marked(t, tt.text), strings.ReplaceAll(tt.want, "DIR", dir))
			if err.Error() != want {
				t.Errorf("got  %q\nwant %q", err, want)
			}
		})
	}
}

func TestUnreadableConfig(t *testing.T) {
	_, err := LoadServer(filepath.Join(t.TempDir(), "missing.toml"))
	if err == nil || !strings.HasSuffix(err.Error(), "missing.toml: cannot read: no such file or directory") || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadServer(missing) = %v", err)
	}
}

func TestRelativePaths(t *testing.T) {
	dir := t.TempDir()
	confDir := filepath.Join(dir, "etc", "twoway")
	writeFixture(t, confDir)
	os.WriteFile(filepath.Join(confDir, "server.toml"), []byte(serverTLS+minimalPolicy), 0o644)
	// Load it from elsewhere, by a relative path: paths inside stay
	// relative to the file, and come out absolute.
	t.Chdir(dir)
	s, err := LoadServer(filepath.Join("etc", "twoway", "server.toml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{s.TLS.Cert, s.TLS.Key, s.TLS.ClientCA} {
		if !filepath.IsAbs(p) || !strings.HasPrefix(p, confDir) {
			t.Errorf("path %q not resolved against %s", p, confDir)
		}
	}
	// Absolute paths are kept.
	abs := filepath.Join(confDir, "gateway.crt")
	os.WriteFile(filepath.Join(confDir, "server.toml"), []byte(strings.Replace(serverTLS, `"gateway.crt"`, `"`+abs+`"`, 1)+minimalPolicy), 0o644)
	if s, err = LoadServer("etc/twoway/server.toml"); err != nil || s.TLS.Cert != abs {
		t.Errorf("absolute path: %v, %q", err, s.TLS.Cert)
	}
}

func TestKeyPermissions(t *testing.T) {
	dir := t.TempDir()
	writeFixture(t, dir)
	t.Chdir(dir)
	os.Chmod("gateway.key", 0o644)
	os.WriteFile("server.toml", []byte(serverTLS+minimalPolicy), 0o644)
	_, err := LoadServer("server.toml")
	want := fmt.Sprintf("server.toml:3: tls.key: secret file %s is readable by group/others (mode 0644); chmod 600 it or set tls.allow_insecure_key_permissions = true",
		filepath.Join(dir, "gateway.key"))
	if err == nil || err.Error() != want || !errors.Is(err, ErrInsecureKeyPermissions) {
		t.Errorf("got  %v\nwant %s", err, want)
	}

	os.Chmod("gateway.key", 0o640)
	os.WriteFile("server.toml", []byte(serverTLS+"allow_insecure_key_permissions = true\n"+minimalPolicy), 0o644)
	if _, err := LoadServer("server.toml"); err != nil {
		t.Errorf("with allow_insecure_key_permissions: %v", err)
	}

	// The password file is a secret too.
	os.Chmod("gateway.key", 0o600)
	os.WriteFile("pass", []byte("hunter2\n"), 0o604)
	os.WriteFile("server.toml", []byte(serverTLS+"key_password_file = \"pass\"\n"+minimalPolicy), 0o644)
	if _, err := LoadServer("server.toml"); !errors.Is(err, ErrInsecureKeyPermissions) || !strings.Contains(err.Error(), "tls.key_password_file: secret file "+filepath.Join(dir, "pass")+" is readable by group/others (mode 0604)") {
		t.Errorf("password file 0604: %v", err)
	}
	os.Chmod("pass", 0o600)
	if _, err := LoadServer("server.toml"); err != nil {
		t.Errorf("password file 0600: %v", err)
	}
}

// encryptedGatewayKey writes the fixture into a temp dir, with the
// gateway key encrypted (password "pw"), and returns the dir.
func encryptedGatewayKey(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	f := writeFixture(t, dir)
	old := authority.KDFIterations
	authority.KDFIterations = 1000
	t.Cleanup(func() { authority.KDFIterations = old })
	enc, err := authority.MarshalPrivateKeyPEM(f.gateway.Key, []byte("pw"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "gateway.key"), enc, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestEncryptedKeyIsNotDecrypted(t *testing.T) {
	dir := encryptedGatewayKey(t)
	// A wrong password passes: the key is not decrypted here.
	os.WriteFile(filepath.Join(dir, "pass"), []byte("wrong\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "server.toml"), []byte(serverTLS+"key_password_file = \"pass\"\n"+minimalPolicy), 0o644)
	if _, err := LoadServer(filepath.Join(dir, "server.toml")); err != nil {
		t.Errorf("encrypted key with a password file: %v", err)
	}
}

// An encrypted key without a password file cannot be loaded by the daemon
// (pki.ErrPasswordRequired, and nothing prompts), so validation must
// refuse it, on the key's line.
func TestEncryptedKeyNeedsPasswordFile(t *testing.T) {
	dir := encryptedGatewayKey(t)
	p := filepath.Join(dir, "server.toml")
	os.WriteFile(p, []byte(serverTLS+minimalPolicy), 0o644)
	_, err := LoadServer(p)
	want := p + ":3: tls.key: " + filepath.Join(dir, "gateway.key") + " is encrypted: set tls.key_password_file to a file holding its password"
	if err == nil || err.Error() != want {
		t.Errorf("got  %v\nwant %s", err, want)
	}
}

// The daemon takes the first private-key block of the key file, skipping
// others (pki.ParsePrivateKeyPEM); validation must accept the same files,
// such as the output of `openssl ecparam -genkey`, which starts with an
// EC PARAMETERS block.
func TestKeyAfterOtherPEMBlocks(t *testing.T) {
	dir := t.TempDir()
	f := writeFixture(t, dir)
	keyPEM := pkitest.KeyPEM(t, f.gateway.Key)
	params := pem.EncodeToMemory(&pem.Block{Type: "EC PARAMETERS", Bytes: []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}})
	data := append(params, keyPEM...)
	if _, err := pki.ParsePrivateKeyPEM(data, nil); err != nil {
		t.Fatalf("the daemon's parser refuses it too: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "gateway.key"), data, 0o600)
	p := filepath.Join(dir, "server.toml")
	os.WriteFile(p, []byte(serverTLS+minimalPolicy), 0o644)
	if _, err := LoadServer(p); err != nil {
		t.Errorf("key file with EC PARAMETERS first: %v", err)
	}
}

const clientHead = `servers = ["gw.corp.example:8443"]
`

const clientTLS = `[tls]
cert = "alice.crt"
key = "alice.key"
server_ca = "pki/server-ca/bundle.crt"
`

func TestClientErrors(t *testing.T) {
	tests := []struct {
		name string
		text string
		want string
	}{
		{"no servers", "servers = [] #<-\n" + clientTLS, `servers: required: list at least one gateway, e.g. servers = ["gw.example.com:8443"]`},
		{"server without port", "servers = [\n\"gw.corp.example:8443\",\n\"gw2.corp.example\", #<-\n]\n" + clientTLS,
			`servers[1]: invalid address "gw2.corp.example": want host:port`},
		{"server name", clientHead + "server_name = \"bad name\" #<-\n" + clientTLS, `server_name: invalid name "bad name"`},
		{"pin", clientHead + clientTLS + "pins = [\"sha256//AAAA\"] #<-\n", `tls.pins[0]: invalid pin "AAAA": want the base64 SHA-256 of a public key (44 characters)`},
		{"forward type", clientHead + clientTLS + "[[forward]]\nlocal = \"127.0.0.1:1\"\nremote = \"x:1\"\n[[forward]]\ntype = \"sideways\" #<-\n",
			`forward[1].type: invalid type "sideways" (want local, remote or dynamic)`},
		{"forward listen", clientHead + clientTLS + "[[forward]]\nlocal = \"db:5432\" #<-\nremote = \"db:5432\"\n",
			`forward[0].local: invalid address "db:5432": bind address "db" is not an IP address (or *, localhost)`},
		{"vpn transport", clientHead + clientTLS + "[vpn]\nenable = true\ntransport = \"quic\" #<-\n",
			`vpn.transport: "quic": want "auto" or "tcp"`},
		{"forward remote missing", clientHead + clientTLS + "[[forward]] #<-\nlocal = \"127.0.0.1:5432\"\n",
			`forward[0].remote: required`},
		{"remote forward dial", clientHead + clientTLS + "[[forward]]\ntype = \"remote\"\nremote = \"127.0.0.1:8080\"\nlocal = \"127.0.0.1:0\" #<-\n",
			`forward[0].local: invalid address "127.0.0.1:0": port "0" is not a number 1-65535`},
		{"dynamic with remote", clientHead + clientTLS + "[[forward]]\ntype = \"dynamic\"\nlocal = \"1080\"\nremote = \"x:1\" #<-\n",
			`forward[0].remote: a dynamic forward has no remote address: each SOCKS request names its own`},
		{"forward type error", clientHead + clientTLS + "[[forward]]\nlocal = \"127.0.0.1:1\"\nremote = \"x:1\"\n[[forward]]\nlocal = 8080 #<-\n",
			`forward[1].local: incompatible types: TOML value has type int64; destination has type string`},
		{"forward unknown key", clientHead + clientTLS + "[[forward]]\nlocal = \"127.0.0.1:1\"\nremote = \"x:1\"\n[[forward]]\nlisten = \"x\" #<-\n",
			`forward[1].listen: unknown key (valid keys here: type, local, remote)`},
		{"duplicate listener", clientHead + clientTLS + "[[forward]]\nlocal = \"localhost:1080\"\nremote = \"x:1\"\n[[forward]] #<-\ntype = \"dynamic\"\nlocal = \"127.0.0.1:1080\"\n",
			`forward[1]: listen address 127.0.0.1:1080 is also used by forward[0]`},
		{"backoff", clientHead + clientTLS + "[reconnect]\nmin_backoff = \"5s\"\nmax_backoff = \"1s\" #<-\n",
			`reconnect.max_backoff: 1s is shorter than min_backoff (5s)`},
		{"order", clientHead + clientTLS + "[reconnect]\norder = \"roundrobin\" #<-\n",
			`reconnect.order: "roundrobin": want "in-order" or "random"`},
		{"dead peer before keepalive", clientHead + clientTLS + "[reconnect]\nkeepalive = \"5s\"\ndead_peer = \"5s\" #<-\n",
			`reconnect.dead_peer: 5s must be longer than keepalive (5s): the gateway needs time to answer a ping`},
		{"keepalive too short", clientHead + clientTLS + "[reconnect]\nkeepalive = \"10ms\" #<-\n",
			`reconnect.keepalive: 10ms is too short (minimum 100ms)`},
		{"missing key", clientHead + "[tls] #<-\ncert = \"alice.crt\"\nserver_ca = \"pki/server-ca/bundle.crt\"\n", `tls.key: required`},
		{"socks user alone", clientHead + clientTLS + "[socks] #<-\nuser = \"alice\"\n", `socks.password_file: required: user is set, so is a password file`},
		{"socks password alone", clientHead + clientTLS + "[socks] #<-\npassword_file = \"socks.pass\"\n", `socks.user: required: password_file is set, so is a user name`},
		{"socks password readable", clientHead + clientTLS + "[socks]\nuser = \"alice\"\npassword_file = \"socks.pass\" #<-\n", `socks.password_file: secret file DIR/socks.pass is readable by group/others (mode 0644); chmod 600 it or set socks.allow_insecure_permissions = true`},
	}
	dir := t.TempDir()
	writeFixture(t, dir)
	os.WriteFile(filepath.Join(dir, "socks.pass"), []byte("pw\n"), 0o644)
	t.Chdir(dir)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			os.WriteFile("client.toml", []byte(tt.text), 0o644)
			_, err := LoadClient("client.toml")
			want := fmt.Sprintf("client.toml:%d: %s", marked(t, tt.text), strings.ReplaceAll(tt.want, "DIR/", dir+string(filepath.Separator)))
			if err == nil || err.Error() != want {
				t.Errorf("got  %v\nwant %s", err, want)
			}
		})
	}
}

// TestPolicyCompiledOnce: LoadServer's validation compiles the policy and
// keeps it, so the daemon (start and reload) and config check use that one
// rather than compiling it again; Validate compiles an edited policy anew.
func TestPolicyCompiledOnce(t *testing.T) {
	dir := t.TempDir()
	writeFixture(t, dir)
	p := filepath.Join(dir, "server.toml")
	rules := "[[policy.rule]]\ngroups = [\"*\"]\ntargets = [\"any\"]\n[[policy.rule]]\ngroups = [\"eng\"]\ntargets = [\"any\"]\n"
	os.WriteFile(p, []byte(serverTLS+minimalPolicy+rules), 0o644)
	s, err := LoadServer(p)
	if err != nil {
		t.Fatal(err)
	}
	first, err := s.CompiledPolicy()
	if err != nil || first == nil {
		t.Fatalf("CompiledPolicy = %v, %v", first, err)
	}
	if again, _ := s.CompiledPolicy(); again != first {
		t.Errorf("CompiledPolicy compiled the policy again")
	}
	s.Policy.Rules = s.Policy.Rules[:1]
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if edited, _ := s.CompiledPolicy(); edited == first {
		t.Errorf("after an edit and Validate, CompiledPolicy is the policy compiled before")
	}
}

func TestValidateInCode(t *testing.T) {
	// A config built in code (tests, flags-only mode) reports keys
	// without a file.
	s := DefaultServer()
	s.Listen = "nope"
	if err := s.Validate(); err == nil || err.Error() != `listen: invalid address "nope": want host:port, e.g. ":8443" or "[::1]:8443"` {
		t.Errorf("Validate = %v", err)
	}
	c := DefaultClient()
	if err := c.Validate(); err == nil || !errors.Is(err, ErrRequired) || !strings.HasPrefix(err.Error(), "servers: ") {
		t.Errorf("Validate = %v", err)
	}
}

func TestParseForward(t *testing.T) {
	tests := []struct {
		kind, spec string
		want       Forward
	}{
		{"L", "8080:db.corp.example:5432", Forward{ForwardLocal, "127.0.0.1:8080", "db.corp.example:5432"}},
		{"L", "0.0.0.0:8080:198.18.0.5:80", Forward{ForwardLocal, "0.0.0.0:8080", "198.18.0.5:80"}},
		{"L", "*:8080:h:80", Forward{ForwardLocal, "0.0.0.0:8080", "h:80"}},
		{"L", ":8080:h:80", Forward{ForwardLocal, "0.0.0.0:8080", "h:80"}},
		{"L", "localhost:8080:h:80", Forward{ForwardLocal, "127.0.0.1:8080", "h:80"}},
		{"local", "[::1]:8080:[2001:db8::5]:443", Forward{ForwardLocal, "[::1]:8080", "[2001:db8::5]:443"}},
		{"L", "8080:[2001:db8::5]:443", Forward{ForwardLocal, "127.0.0.1:8080", "[2001:db8::5]:443"}},
		{"R", "8080:127.0.0.1:3000", Forward{ForwardRemote, "127.0.0.1:3000", "127.0.0.1:8080"}},
		{"remote", "0.0.0.0:9000:localhost:3000", Forward{ForwardRemote, "localhost:3000", "0.0.0.0:9000"}},
		{"R", "[::]:9000:[::1]:3000", Forward{ForwardRemote, "[::1]:3000", "[::]:9000"}},
		{"D", "1080", Forward{Type: ForwardDynamic, Local: "127.0.0.1:1080"}},
		{"D", "0.0.0.0:1080", Forward{Type: ForwardDynamic, Local: "0.0.0.0:1080"}},
		{"dynamic", "[::1]:1080", Forward{Type: ForwardDynamic, Local: "[::1]:1080"}},
		{"D", "0", Forward{Type: ForwardDynamic, Local: "127.0.0.1:0"}},
	}
	for _, tt := range tests {
		got, err := ParseForward(tt.kind, tt.spec)
		if err != nil || got != tt.want {
			t.Errorf("ParseForward(%q, %q) = %+v, %v; want %+v", tt.kind, tt.spec, got, err, tt.want)
			continue
		}
		if err := got.validate(nil, "forward"); err != nil {
			t.Errorf("ParseForward(%q, %q) result does not validate: %v", tt.kind, tt.spec, err)
		}
	}

	bad := []struct{ kind, spec, want string }{
		{"X", "1:h:2", `invalid forward: unknown forward type "X" (want L, R or D)`},
		{"L", "8080", `invalid forward -L "8080": want [bind:]port:host:hostport`},
		{"L", "8080:h", `invalid forward -L "8080:h": want [bind:]port:host:hostport`},
		{"L", "a:b:8080:h:80", `invalid forward -L "a:b:8080:h:80": want [bind:]port:host:hostport (put IPv6 addresses in brackets)`},
		{"L", "::1:8080:h:80", `put IPv6 addresses in brackets`},
		{"L", "8080:2001:db8::5:443", `put IPv6 addresses in brackets`},
		{"L", "http:h:80", `invalid forward -L "http:h:80": port "http" is not a number 0-65535`},
		{"L", "70000:h:80", `port "70000" is not a number 0-65535`},
		{"L", "8080:h:0", `invalid forward -L "8080:h:0": invalid address "h:0": port "0" is not a number 1-65535`},
		{"L", "8080:h:", `invalid forward -L "8080:h:": trailing colon`},
		{"L", "8080:db:5432:", `invalid forward -L "8080:db:5432:": trailing colon`},
		{"L", "8080:bad_host!:80", `bad host "bad_host!"`},
		{"L", "db.corp:8080:h:80", `bind address "db.corp" is not an IP address (or *, localhost)`},
		{"L", "[::1:8080:h:80", `missing ]`},
		{"L", "[::1]x:8080:h:80", `unexpected "x:8080:h:80" after ]`},
		{"L", "[fe80::1%eth0]:8080:h:80", `bind address "fe80::1%eth0" is not an IP address`},
		{"R", "8080:h", `invalid forward -R "8080:h": want [bind:]port:host:hostport`},
		{"D", "h:1080:x", `invalid forward -D "h:1080:x": want [bind:]port`},
		{"D", "", `port "" is not a number 0-65535`},
		{"D", "-1", `port "-1" is not a number 0-65535`},
	}
	for _, tt := range bad {
		_, err := ParseForward(tt.kind, tt.spec)
		if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrForwardSpec) {
			t.Errorf("ParseForward(%q, %q) = %v, want error containing %q", tt.kind, tt.spec, err, tt.want)
		}
	}
}

func TestForwardAccessors(t *testing.T) {
	l := Forward{ForwardLocal, "127.0.0.1:8080", "db:5432"}
	r := Forward{ForwardRemote, "127.0.0.1:3000", "0.0.0.0:9000"}
	d := Forward{Type: ForwardDynamic, Local: "127.0.0.1:1080"}
	for _, tt := range []struct {
		f                  Forward
		listen, dial, flag string
	}{
		{l, "127.0.0.1:8080", "db:5432", "-L 127.0.0.1:8080:db:5432"},
		{r, "0.0.0.0:9000", "127.0.0.1:3000", "-R 0.0.0.0:9000:127.0.0.1:3000"},
		{d, "127.0.0.1:1080", "", "-D 127.0.0.1:1080"},
	} {
		if tt.f.ListenAddr() != tt.listen || tt.f.DialAddr() != tt.dial || tt.f.String() != tt.flag {
			t.Errorf("%+v: listen %q dial %q string %q", tt.f, tt.f.ListenAddr(), tt.f.DialAddr(), tt.f.String())
		}
		// The flag form parses back to the same forward.
		kind, spec, _ := strings.Cut(strings.TrimPrefix(tt.flag, "-"), " ")
		if back, err := ParseForward(kind, spec); err != nil || back != tt.f {
			t.Errorf("ParseForward(%q) = %+v, %v; want %+v", tt.flag, back, err, tt.f)
		}
	}
}
