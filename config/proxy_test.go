package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestClientProxy(t *testing.T) {
	tests := []struct {
		name string
		text string
		want string // empty: loads
	}{
		{"proxy", clientHead + clientTLS + "[proxy]\nurl = \"http://proxy.corp.example:3128\"\nno_proxy = \"corp.example\"\nuser = \"alice\"\npassword_file = \"proxy.pass\"\n", ""},
		{"direct", clientHead + clientTLS + "[proxy]\nurl = \"direct\"\n", ""},
		{"https proxy", clientHead + clientTLS + "[proxy]\nurl = \"https://proxy:3128\" #<-\n",
			`proxy.url: proxy URL "https://proxy:3128": scheme must be http (the TLS session to the gateway is inside)`},
		{"no_proxy alone", clientHead + clientTLS + "[proxy]\nno_proxy = \"corp.example\" #<-\n",
			`proxy.no_proxy: only applies with proxy.url set to a proxy (the environment has NO_PROXY)`},
		{"user alone", clientHead + clientTLS + "[proxy] #<-\nurl = \"http://p:3128\"\nuser = \"alice\"\n",
			`proxy.password_file: required: user is set, so is a password file`},
		{"password readable", clientHead + clientTLS + "[proxy]\nuser = \"alice\"\npassword_file = \"open.pass\" #<-\n",
			`proxy.password_file: secret file DIR/open.pass is readable by group/others (mode 0644); chmod 600 it or set proxy.allow_insecure_permissions = true`},
	}
	dir := t.TempDir()
	writeFixture(t, dir)
	os.WriteFile(filepath.Join(dir, "proxy.pass"), []byte("pw\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "open.pass"), []byte("pw\n"), 0o644)
	t.Chdir(dir)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			os.WriteFile("client.toml", []byte(tt.text), 0o644)
			c, err := LoadClient("client.toml")
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if c.Proxy.PasswordFile != "" && !filepath.IsAbs(c.Proxy.PasswordFile) {
					t.Errorf("password_file not resolved: %s", c.Proxy.PasswordFile)
				}
				return
			}
			want := fmt.Sprintf("client.toml:%d: %s", marked(t, tt.text), strings.ReplaceAll(tt.want, "DIR/", dir+string(filepath.Separator)))
			if err == nil || err.Error() != want {
				t.Errorf("got  %v\nwant %s", err, want)
			}
		})
	}
}
