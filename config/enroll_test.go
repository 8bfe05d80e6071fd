package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twoway/twoway/authority"
)

func TestServerEnroll(t *testing.T) {
	dir := t.TempDir()
	writeFixture(t, dir)
	old := authority.KDFIterations
	authority.KDFIterations = 1000
	t.Cleanup(func() { authority.KDFIterations = old })
	if _, err := authority.Init(filepath.Join(dir, "apki"), authority.InitOptions{Org: "Example Corp", Password: []byte("pw")}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "ca.pw"), []byte("pw\n"), 0o600)
	load := func(enroll string) (*Server, error) {
		p := filepath.Join(dir, "server.toml")
		os.WriteFile(p, []byte(serverTLS+minimalPolicy+enroll), 0o644)
		return LoadServer(p)
	}
	for _, tc := range []struct{ name, text, want string }{
		{"password without ca", "[enroll]\npassword_file = \"ca.pw\"\n", "server.toml:7: enroll.ca: required: enroll.password_file is set but enroll.ca is not"},
		{"missing dir", "[enroll]\nca = \"nope\"\n", "server.toml:8: enroll.ca: " + filepath.Join(dir, "nope") + ": no such file"},
		{"encrypted key without password", "[enroll]\nca = \"apki/client-ca\"\n", "is encrypted: set enroll.password_file"},
		{"CA not trusted", "[enroll]\nca = \"apki/client-ca\"\npassword_file = \"ca.pw\"\n", "is not in tls.client_ca"},
		{"unknown key", "[enroll]\nca = \"apki/client-ca\"\npassword = \"pw\"\n", "enroll.password: unknown key"},
		{"negative renew cap", "[enroll]\nrenew_max_days = -1\n", "server.toml:8: enroll.renew_max_days: must not be negative"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(tc.text)
			var ce *Error
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an *Error containing %q", err, tc.want)
			}
		})
	}

	// Once the gateway trusts the enrolling CA, it loads.
	bundle, err := os.ReadFile(filepath.Join(dir, "apki/client-ca/bundle.crt"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "pki/client-ca/bundle.crt"), bundle, 0o600)
	s, err := load("[enroll]\nca = \"apki/client-ca\"\npassword_file = \"ca.pw\"\nrenew_max_days = 7\n")
	if err != nil {
		t.Fatal(err)
	}
	if !s.Enroll.Enabled() || s.Enroll.CA != filepath.Join(dir, "apki/client-ca") || s.Enroll.PasswordFile != filepath.Join(dir, "ca.pw") || s.Enroll.RenewMaxDays != 7 {
		t.Errorf("enroll = %+v", s.Enroll)
	}
}
