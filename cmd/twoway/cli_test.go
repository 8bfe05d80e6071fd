package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Without a terminal, a missing password is reported with the flag that
// gives that password: commands with two passwords (the CA's and the new
// key's, the key's and the PKCS#12 file's) must not send the user to the
// other one.
func TestPasswordErrorNamesTheFlag(t *testing.T) {
	work, dir, pwFile := caPKI(t)
	clientCA := filepath.Join(dir, "client-ca")
	keyPW := filepath.Join(work, "key.txt")
	if err := os.WriteFile(keyPW, []byte("key password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(work, "out")
	caOK(t, "pki", "issue", "client", "--ca", clientCA, "--name", "alice", "--out-dir", out,
		"--password-file", pwFile, "--key-password-file", keyPW)
	crt, key := filepath.Join(out, "alice.crt"), filepath.Join(out, "alice.key")

	for _, c := range []struct {
		want string
		args []string
	}{
		{"use --key-password-file or run on a terminal", []string{"pki", "issue", "client", "--ca", clientCA, "--name", "bob",
			"--out-dir", out, "--password-file", pwFile, "--encrypt"}},
		{"use --key-password-file or run on a terminal", []string{"pki", "csr", "--name", "carol", "--out-dir", out, "--encrypt"}},
		{"use --key-password-file or run on a terminal", []string{"pki", "export-p12", "--cert", crt, "--key", key,
			"--out", filepath.Join(work, "alice.p12")}},
		{"use --password-file or run on a terminal", []string{"pki", "export-p12", "--cert", crt, "--key", key,
			"--key-password-file", keyPW, "--out", filepath.Join(work, "alice.p12")}},
		{"use --key-password-file or run on a terminal", []string{"probe", "127.0.0.1:1", "--cert", crt, "--key", key}},
		{"use --password-file or run on a terminal", []string{"pki", "crl", "--ca", clientCA}},
	} {
		caFail(t, []string{c.want}, c.args...)
	}
	// An unencrypted parent: the new CA's key needs its own password.
	caOK(t, "pki", "ca", "create", "--parent", clientCA, "--name", "open", "--dir", filepath.Join(work, "open"),
		"--password-file", pwFile, "--no-password")
	caFail(t, []string{"use --new-password-file or run on a terminal"},
		"pki", "ca", "create", "--parent", filepath.Join(work, "open"), "--name", "sub", "--dir", filepath.Join(work, "sub"))
}

// A mistyped subcommand is an error, not the parent's help with exit
// status 0: "twoway service statsu" in a script, or "twoway
// completion fsh > twoway.fish" (which would write the help text into the
// completion file), must fail.
func TestUnknownSubcommandFails(t *testing.T) {
	for _, c := range []struct {
		typo string
		args []string
	}{
		{"exmaple", []string{"config", "exmaple", "server"}},
		{"statsu", []string{"service", "statsu"}},
		{"fsh", []string{"completion", "fsh"}},
		{"sever", []string{"pki", "issue", "sever"}},
	} {
		args := c.args
		out, err := runCLI(t, args...)
		if err == nil || !strings.Contains(err.Error(), `unknown command "`+c.typo+`"`) {
			t.Errorf("twoway %s: err %v, want unknown command; stdout:\n%s", strings.Join(args, " "), err, out)
		}
		if out != "" {
			t.Errorf("twoway %s printed to stdout:\n%s", strings.Join(args, " "), out)
		}
	}
	// Without a subcommand they still show their help.
	for _, args := range [][]string{{"config"}, {"service"}, {"completion"}, {"pki"}} {
		out, err := runCLI(t, args...)
		if err != nil || !strings.Contains(out, "Available Commands:") {
			t.Errorf("twoway %s: err %v, want help; stdout:\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// forward has no configuration file: its errors name its flags, not the
// client.toml keys the flags fill in ("tls.server_ca: required").
func TestForwardErrorsNameFlags(t *testing.T) {
	work, dir, pwFile := caPKI(t)
	keyPW := filepath.Join(work, "key.txt")
	if err := os.WriteFile(keyPW, []byte("key password\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(work, "out")
	caOK(t, "pki", "issue", "client", "--ca", filepath.Join(dir, "client-ca"), "--name", "alice", "--out-dir", out,
		"--password-file", pwFile, "--key-password-file", keyPW)
	base := []string{"forward", "--server", "127.0.0.1:1", "--control-socket", "off",
		"--cert", filepath.Join(out, "alice.crt"), "--key", filepath.Join(out, "alice.key")}
	ca := []string{"--ca", filepath.Join(dir, "server-ca", "bundle.crt")}
	with := func(extra ...string) []string { return append(append([]string(nil), base...), extra...) }

	caFail(t, []string{`required flag(s) "ca" not set`}, with("-D", "0")...)
	caFail(t, []string{"--key: ", "is encrypted: give --key-password-file"}, with(append(ca, "-D", "0")...)...)
	caFail(t, []string{"--key-password-file: ", "chmod 600 it"}, with(append(ca, "--key-password-file", keyPW, "-D", "0")...)...)
	_, err := caRun(t, with(append(ca, "--key-password-file", keyPW, "-D", "0")...)...)
	if err != nil && strings.Contains(err.Error(), "allow_insecure") {
		t.Errorf("forward suggests a configuration key it has no flag for: %v", err)
	}
	if err := os.Chmod(keyPW, 0o600); err != nil {
		t.Fatal(err)
	}
	caFail(t, []string{"-L 8080:b:3: listen address 127.0.0.1:8080 is also used by -L 8080:a:2"},
		with(append(ca, "--key-password-file", keyPW, "-L", "8080:a:2", "-D", "0", "-L", "8080:b:3")...)...)
	caFail(t, []string{"--socks-password-file: ", "--socks-user is given"},
		with(append(ca, "--key-password-file", keyPW, "-D", "0", "--socks-user", "u")...)...)
	caFail(t, []string{"--proxy-password-file: ", "--proxy-user is given"},
		with(append(ca, "--key-password-file", keyPW, "-D", "0", "--proxy", "http://127.0.0.1:3128", "--proxy-user", "u")...)...)
	caFail(t, []string{"--proxy: ", "scheme must be http"},
		with(append(ca, "--key-password-file", keyPW, "-D", "0", "--proxy", "socks5://127.0.0.1:1080")...)...)
}

// TestProbeDaysText: probe's days left are floored (-1: expired within the
// last day), and the text says so in whole days ago.
func TestProbeDaysText(t *testing.T) {
	for d, want := range map[int]string{
		5: "5 days left", 0: "0 days left",
		-1: "EXPIRED less than a day ago", -2: "EXPIRED 1 day ago", -4: "EXPIRED 3 days ago",
	} {
		if got := daysText(d); got != want {
			t.Errorf("daysText(%d) = %q, want %q", d, got, want)
		}
	}
}

// TestPasswordFileModeWarning: a password file others can read works, with
// a warning that names it and the fix.
func TestPasswordFileModeWarning(t *testing.T) {
	work, dir, pwFile := caPKI(t)
	if err := os.Chmod(pwFile, 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	root := newRootCmd()
	root.SetArgs([]string{"pki", "crl", "--ca", filepath.Join(dir, "client-ca"), "--password-file", pwFile, "--out", filepath.Join(work, "crl.pem")})
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetIn(strings.NewReader(""))
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if w := errOut.String(); !strings.Contains(w, pwFile+" is readable by others (mode 0644); chmod 600 it") {
		t.Fatalf("stderr %q lacks the warning", w)
	}
}
