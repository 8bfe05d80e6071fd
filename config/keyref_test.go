package config

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestKeyReference: tls.key may be a pkcs11: URI. It is kept as written
// (not joined to the configuration's directory like a file path), checked
// without opening the token, and its mistakes are reported with file,
// line and key.
func TestKeyReference(t *testing.T) {
	dir := t.TempDir()
	writeFixture(t, dir)
	t.Chdir(dir)
	lib := filepath.Join(dir, "libtoken.so")
	pin := filepath.Join(dir, "pin")
	os.WriteFile(lib, nil, 0o644)
	os.WriteFile(pin, []byte("s3cr3t-PIN\n"), 0o600)
	ref := "pkcs11:token=laptop;object=twoway?module-path=" + lib + "&pin-source=file:" + pin
	client := func(key string, extra ...string) string {
		return clientHead + fmt.Sprintf("[tls]\ncert = \"alice.crt\"\nkey = %q\nserver_ca = \"pki/server-ca/bundle.crt\"\n", key) + strings.Join(extra, "")
	}
	os.WriteFile("client.toml", []byte(client(ref)), 0o644)
	c, err := LoadClient("client.toml")
	if err != nil {
		t.Fatal(err)
	}
	if c.TLS.Key != ref {
		t.Fatalf("tls.key = %q, want the reference as written", c.TLS.Key)
	}

	os.WriteFile("server.toml", []byte(strings.Replace(serverTLS, `"gateway.key"`, fmt.Sprintf("%q", ref), 1)+minimalPolicy), 0o644)
	if s, err := LoadServer("server.toml"); err != nil || s.TLS.Key != ref {
		t.Fatalf("server: %v", err)
	}

	for _, c := range []struct{ text, want string }{
		{client("pkcs11:token=laptop?module-path=" + lib + "&pin-source=file:" + pin), "client.toml:4: tls.key: pkcs11 URI: no key"},
		{client("pkcs11:token=laptop;object=k?module-path=" + lib + "&pin-value=s3cr3t-PIN"), "client.toml:4: tls.key: pkcs11 URI: pin-value is refused"},
		{client(ref, "key_password_file = \"pin\"\n"), "client.toml:6: tls.key_password_file: not used with a key in a token"},
	} {
		os.WriteFile("client.toml", []byte(c.text), 0o644)
		_, err := LoadClient("client.toml")
		if err == nil || !strings.HasPrefix(err.Error(), c.want) || strings.Contains(err.Error(), "s3cr3t-PIN") {
			t.Errorf("got  %v\nwant %s...", err, c.want)
		}
	}
	os.Chmod(pin, 0o644)
	os.WriteFile("client.toml", []byte(client(ref)), 0o644)
	if _, err := LoadClient("client.toml"); err == nil || !strings.Contains(err.Error(), "client.toml:4: tls.key: pkcs11 URI: PIN file "+pin+" is readable by group/others") {
		t.Errorf("group-readable PIN file: %v", err)
	}
}

// TestOSStoreKeyReference: a keychain: or certstore: identity brings its
// certificate, so tls.cert may be left out for it (and only for it); on a
// system without that store the reference is refused with file, line and
// key, before anything runs.
func TestOSStoreKeyReference(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the refusals checked here are Linux's")
	}
	dir := t.TempDir()
	writeFixture(t, dir)
	t.Chdir(dir)
	noCert := func(key string) string {
		return clientHead + fmt.Sprintf("[tls]\nkey = %q\nserver_ca = \"pki/server-ca/bundle.crt\"\n", key)
	}
	for ref, want := range map[string]string{
		"keychain:alice":          "client.toml:3: tls.key: keychain:alice: keychain: references work on macOS only",
		"certstore:user/my/alice": "client.toml:3: tls.key: certstore:user/my/alice: certstore: references work on Windows only",
		"keychain:":               `client.toml:3: tls.key: key reference "keychain:": no name or thumbprint`,
		"alice.key":               "tls.cert",
	} {
		os.WriteFile("client.toml", []byte(noCert(ref)), 0o644)
		_, err := LoadClient("client.toml")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("key %q without a cert: got %v, want %q", ref, err, want)
		}
	}
}
