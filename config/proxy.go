package config

import (
	"github.com/twoway/twoway/proxy"
)

// Proxy is the client's [proxy] table: how it reaches its gateways from a
// network that lets nothing out but an HTTP proxy.
type Proxy struct {
	// URL is the proxy, "http://host:port" (credentials in it are
	// allowed but better kept in PasswordFile). Empty: the environment
	// decides (HTTPS_PROXY, NO_PROXY); "direct": never a proxy.
	URL string `toml:"url"`
	// NoProxy lists the gateways reached directly even with URL set, in
	// NO_PROXY's syntax (names, domain suffixes, addresses, CIDRs,
	// comma-separated).
	NoProxy string `toml:"no_proxy"`
	// User and PasswordFile are the proxy's Basic credentials.
	User         string `toml:"user"`
	PasswordFile string `toml:"password_file"`
	// AllowInsecurePermissions skips the permission check on
	// PasswordFile.
	AllowInsecurePermissions bool `toml:"allow_insecure_permissions"`
}

// ProxyDirect is the [proxy] url that turns the environment's proxy off.
const ProxyDirect = "direct"

func (p *Proxy) validate(src *source) error {
	if p.URL != "" && p.URL != ProxyDirect {
		if _, err := proxy.ParseURL(p.URL); err != nil {
			return src.errf("proxy.url", "%w", err)
		}
	}
	if p.NoProxy != "" && (p.URL == "" || p.URL == ProxyDirect) {
		return src.errf("proxy.no_proxy", "only applies with proxy.url set to a proxy (the environment has NO_PROXY)")
	}
	switch {
	case p.User == "" && p.PasswordFile == "":
		return nil
	case p.User == "":
		return src.err("proxy.user", &UnpairedError{Given: "proxy.password_file", text: "password_file is set, so is a user name"})
	case p.PasswordFile == "":
		return src.err("proxy.password_file", &UnpairedError{Given: "proxy.user", text: "user is set, so is a password file"})
	}
	_, err := checkSecretFile(src, "proxy.password_file", p.PasswordFile, p.AllowInsecurePermissions)
	return err
}
