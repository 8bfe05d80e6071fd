package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twoway/twoway/authority"
)

func runCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out strings.Builder
	root := newRootCmd()
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func TestConfigExampleAndCheck(t *testing.T) {
	dir := t.TempDir()
	res, err := authority.Init(filepath.Join(dir, "pki"), authority.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := res.ServerCA.Issue(authority.IssueRequest{Kind: authority.KindServer, Name: "gw.example", OutDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	for _, role := range []string{"server", "client"} {
		out, err := runCmd(t, "config", "example", role)
		if err != nil || !strings.Contains(out, "[tls]") {
			t.Fatalf("example %s: %v\n%s", role, err, out)
		}
	}
	if _, err := runCmd(t, "config", "example", "router"); err == nil {
		t.Fatal("example of an unknown role succeeded")
	}

	conf := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := "listen = \"127.0.0.1:8443\"\n[tls]\ncert = \"gw.example.crt\"\nkey = \"gw.example.key\"\nclient_ca = \"pki/client-ca/bundle.crt\"\n[policy.admit]\ngroups = [\"eng\"]\n"
	out, err := runCmd(t, "config", "check", "-c", conf("ok.toml", good, 0o600))
	if err != nil || !strings.Contains(out, "OK (server") {
		t.Fatalf("check of a good file: %v\n%s", err, out)
	}

	cases := []struct{ name, body, want string }{
		{"unknown key", good + "bogus = 1\n", "bad1.toml:8: policy.admit.bogus: unknown key"},
		{"bad CIDR", good + "[[policy.rule]]\ngroups = [\"eng\"]\ntargets = [\"10.0.0/8\"]\n", "bad2.toml:10: policy.rule[0].targets:"},
		{"syntax", "listen = \n", "bad3.toml:1:"},
		{"missing cert", strings.Replace(good, "gw.example.crt", "nope.crt", 1), "bad4.toml:3: tls.cert:"},
	}
	for i, tc := range cases {
		name := "bad" + string(rune('1'+i)) + ".toml"
		_, err := runCmd(t, "config", "check", "-c", conf(name, tc.body, 0o600))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to contain %q", tc.name, err, tc.want)
		}
	}

	// A key readable by others is refused, as ssh does.
	if err := os.Chmod(gw.KeyFile, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = runCmd(t, "config", "check", "-c", filepath.Join(dir, "ok.toml"))
	if err == nil || !strings.Contains(err.Error(), "readable by group/others (mode 0644)") {
		t.Fatalf("world-readable key: %v", err)
	}
	allow := strings.Replace(good, "[policy.admit]", "allow_insecure_key_permissions = true\n[policy.admit]", 1)
	if _, err := runCmd(t, "config", "check", "-c", conf("allow.toml", allow, 0o600)); err != nil {
		t.Fatalf("explicitly allowed key permissions: %v", err)
	}
}

// TestConfigCheckWarns: config check passes a configuration that works
// but weakens the setup, and prints why on a warning line: a root-only
// client_ca, a metrics listener beyond loopback, a -D beyond loopback
// without SOCKS authentication.
func TestConfigCheckWarns(t *testing.T) {
	dir := t.TempDir()
	res, err := authority.Init(filepath.Join(dir, "pki"), authority.InitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := res.ServerCA.Issue(authority.IssueRequest{Kind: authority.KindServer, Name: "gw.example", OutDir: dir}); err != nil {
		t.Fatal(err)
	}
	if _, err := res.ClientCA.Issue(authority.IssueRequest{Kind: authority.KindClient, Name: "alice", OutDir: dir}); err != nil {
		t.Fatal(err)
	}
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	server := write("server.toml", "listen = \"127.0.0.1:8443\"\n[tls]\ncert = \"gw.example.crt\"\nkey = \"gw.example.key\"\nclient_ca = \"pki/root/ca.crt\"\n[policy.admit]\ngroups = [\"eng\"]\n[metrics]\nlisten = \":9109\"\n")
	client := write("client.toml", "servers = [\"gw.example:8443\"]\n[tls]\ncert = \"alice.crt\"\nkey = \"alice.key\"\nserver_ca = \"pki/server-ca/bundle.crt\"\n[[forward]]\ntype = \"dynamic\"\nlocal = \"0.0.0.0:1080\"\n")
	for _, tc := range []struct {
		path string
		want []string
	}{
		{server, []string{"server.toml:5: tls.client_ca:", "issuing-CA rule is off", "server.toml:9: metrics.listen:", "beyond loopback", "OK (server"}},
		{client, []string{"client.toml:6: forward[0]: -D 0.0.0.0:1080:", "without SOCKS authentication", "OK (client"}},
	} {
		out, err := runCmd(t, "config", "check", "-c", tc.path)
		if err != nil {
			t.Fatalf("%s: %v\n%s", tc.path, err, out)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s: output lacks %q:\n%s", tc.path, w, out)
			}
		}
	}
}
