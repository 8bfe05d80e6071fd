package main

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"
)

// demoRun runs twoway demo with its temporary directory inside a test
// directory, and returns stdout, stderr, that directory and the error.
func demoRun(t *testing.T, args ...string) (stdout, stderr, tmp string, err error) {
	t.Helper()
	tmp = t.TempDir()
	for _, v := range []string{"TMPDIR", "TMP", "TEMP"} { // os.TempDir, per OS
		t.Setenv(v, tmp)
	}
	var out, errOut bytes.Buffer
	root := newRootCmd()
	root.SetArgs(append([]string{"demo"}, args...))
	root.SetOut(&out)
	root.SetErr(&errOut)
	err = root.Execute()
	return out.String(), errOut.String(), tmp, err
}

func TestDemoOnce(t *testing.T) {
	out, errOut, tmp, err := demoRun(t, "--once")
	if err != nil {
		t.Fatalf("twoway demo --once: %v\n%s%s", err, out, errOut)
	}
	for _, want := range []string{
		"TLS versions    TLS 1.3 only",
		"ALPN            twoway/1",
		"verified path   127.0.0.1 <- twoway demo server CA <- twoway demo root CA",
		"verified path   demo-user <- twoway demo client CA <- twoway demo root CA",
		"identity        demo-user",
		"groups          demo",
		"admitted by     admit group \"demo\"",
		"| you sent: hello through the tunnel",
		"client saw   remote error: tls: certificate required",
		"not one of the accepted issuing CAs",
		"Done: stopping",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if !regexp.MustCompile(`TLS 1\.3, cipher suite TLS_(AES_128_GCM_SHA256|AES_256_GCM_SHA384|CHACHA20_POLY1305_SHA256)\n`).MatchString(out) {
		t.Errorf("output names no TLS 1.3 cipher suite:\n%s", out)
	}
	if errOut != "" {
		t.Errorf("stderr without --verbose: %q", errOut)
	}
	if ents, _ := os.ReadDir(tmp); len(ents) != 0 {
		t.Errorf("temporary directory left behind: %v", ents)
	}
	if strings.Contains(out, "Try it yourself") {
		t.Error("--once printed the interactive instructions")
	}
}

func TestDemoVerboseKeep(t *testing.T) {
	out, errOut, tmp, err := demoRun(t, "--once", "--keep", "--verbose")
	if err != nil {
		t.Fatalf("twoway demo: %v\n%s%s", err, out, errOut)
	}
	// The tunnel's own logs go to stderr, labelled by side.
	for _, want := range []string{"gateway listening", "side=gateway", "side=client", "connection refused"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("--verbose stderr lacks %q:\n%s", want, errOut)
		}
	}
	m := regexp.MustCompile(`Kept (\S+) `).FindStringSubmatch(out)
	if m == nil || !strings.HasPrefix(m[1], tmp) {
		t.Fatalf("--keep does not say where the directory is:\n%s", out)
	}
	if _, err := os.Stat(m[1] + "/demo-user/demo-user.crt"); err != nil {
		t.Errorf("kept directory lacks the user certificate: %v", err)
	}
}

func TestDemoArgs(t *testing.T) {
	if _, _, _, err := demoRun(t, "extra"); err == nil || strings.Contains(err.Error(), "\n") {
		t.Errorf("twoway demo extra: %v; want a one-line error", err)
	}
}
