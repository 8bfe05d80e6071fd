package config

import (
	"encoding/base64"
	"reflect"
	"runtime"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/twoway/twoway/tun"
)

// Client is client.toml, the client's configuration.
type Client struct {
	// Servers are gateway addresses (host:port), tried in order.
	Servers []string `toml:"servers"`
	// ServerName is the name the gateway certificate must carry; default
	// the host of the server being dialed.
	ServerName string `toml:"server_name"`
	// TLS holds the client's credentials and what it trusts.
	TLS ClientTLS `toml:"tls"`
	// Forwards are the port forwards to set up; -L/-R/-D flags add to them.
	Forwards []Forward `toml:"forward"`
	// SOCKS is the authentication of dynamic (-D) forwards.
	SOCKS SOCKS `toml:"socks"`
	// Proxy is the HTTP proxy to reach the gateways through.
	Proxy Proxy `toml:"proxy"`
	// Reconnect paces reconnection attempts.
	Reconnect Reconnect `toml:"reconnect"`
	// VPN configures VPN mode; off unless vpn.enable.
	VPN ClientVPN `toml:"vpn"`
	// Control is the local status socket; Metrics the optional
	// Prometheus endpoint.
	Control Control `toml:"control"`
	Metrics Metrics `toml:"metrics"`
	// Log configures logging.
	Log Log `toml:"log"`
	// User is the account a client started as root drops to once its
	// listeners are open (see RunAs); "root" keeps root.
	User string `toml:"user"`

	src *source
}

// ClientTLS is the [tls] table of client.toml. Paths are absolute after
// loading.
type ClientTLS struct {
	// Cert is the client certificate followed by its issuing chain.
	Cert string `toml:"cert"`
	// Key is the client's private key file, mode 0600, or a key
	// reference such as a pkcs11: URI (see keystore).
	Key string `toml:"key"`
	// KeyPasswordFile holds the password of an encrypted Key (first line).
	KeyPasswordFile string `toml:"key_password_file"`
	// ServerCA is the bundle the gateway certificate must chain to
	// (server-ca/bundle.crt of a twoway PKI).
	ServerCA string `toml:"server_ca"`
	// Pins, if set, are SPKI pins (base64 SHA-256, as `twoway pki inspect`
	// prints; curl's "sha256//" prefix is accepted and removed on load), at
	// least one of which the gateway's key must match.
	Pins []string `toml:"pins"`
	// AllowInsecureKeyPermissions skips the group/other permission check on
	// Key and KeyPasswordFile.
	AllowInsecureKeyPermissions bool `toml:"allow_insecure_key_permissions"`
	// Renew renews Cert automatically over the live session, at two
	// thirds of its lifetime, when the gateway offers it (default true;
	// see package renew). The files Cert and Key are then rewritten.
	Renew *bool `toml:"renew"`
}

// RenewOn reports whether the client renews its certificate.
func (t *ClientTLS) RenewOn() bool { return t.Renew == nil || *t.Renew }

// SOCKS is the [socks] table: with User set, the SOCKS5 listeners of
// dynamic forwards require that user name and the password in
// PasswordFile (RFC 1929) instead of accepting anyone who can reach them.
type SOCKS struct {
	User string `toml:"user"`
	// PasswordFile holds the password (first line); group and others
	// must not be able to read it.
	PasswordFile string `toml:"password_file"`
	// AllowInsecurePermissions skips the permission check on
	// PasswordFile.
	AllowInsecurePermissions bool `toml:"allow_insecure_permissions"`
}

func (s *SOCKS) validate(src *source) error {
	switch {
	case s.User == "" && s.PasswordFile == "":
		return nil
	case s.User == "":
		return src.err("socks.user", &UnpairedError{Given: "socks.password_file", text: "password_file is set, so is a user name"})
	case s.PasswordFile == "":
		return src.err("socks.password_file", &UnpairedError{Given: "socks.user", text: "user is set, so is a password file"})
	case len(s.User) > 255:
		return src.errf("socks.user", "longer than SOCKS5's 255 bytes")
	}
	_, err := checkSecretFile(src, "socks.password_file", s.PasswordFile, s.AllowInsecurePermissions)
	return err
}

// Reconnect is the [reconnect] table: exponential backoff between
// MinBackoff and MaxBackoff, the order servers are tried in, and how soon
// a silent gateway counts as dead.
type Reconnect struct {
	// MinBackoff is the first delay after a lost connection. Default 1s.
	MinBackoff time.Duration `toml:"min_backoff"`
	// MaxBackoff caps the delay. Default 1m.
	MaxBackoff time.Duration `toml:"max_backoff"`
	// Order is OrderInOrder (default) or OrderRandom.
	Order string `toml:"order"`
	// Keepalive is how long the session may be silent before the client
	// pings; DeadPeer how long without hearing anything before it gives
	// the gateway up and moves on. Defaults 10s and 25s.
	Keepalive time.Duration `toml:"keepalive"`
	DeadPeer  time.Duration `toml:"dead_peer"`
}

// Server orders ([reconnect] order).
const (
	// OrderInOrder tries the servers as listed: the first is the
	// preferred gateway, the others its backups.
	OrderInOrder = "in-order"
	// OrderRandom makes each client try them in an order of its own,
	// so that a fleet's clients spread over its gateways.
	OrderRandom = "random"
)

// DefaultClient returns a Client with every default filled in and nothing
// else.
func DefaultClient() *Client {
	return &Client{
		Reconnect: Reconnect{MinBackoff: time.Second, MaxBackoff: time.Minute, Order: OrderInOrder,
			Keepalive: 10 * time.Second, DeadPeer: 25 * time.Second},
		Log: defaultLog(),
	}
}

// clientDoc is what client.toml decodes into: forwards are decoded one by
// one so errors can name the element.
type clientDoc struct {
	Client
	Forwards []toml.Primitive `toml:"forward"`
}

// LoadClient reads, resolves and validates a client configuration.
func LoadClient(path string) (*Client, error) {
	doc := &clientDoc{Client: *DefaultClient()}
	src, err := decode(path, doc, reflect.TypeFor[Client](), func(d *decoder) error {
		fwds, err := decodeArray(d, "forward", doc.Forwards, func() Forward { return Forward{} })
		doc.Client.Forwards = fwds
		return err
	})
	if err != nil {
		return nil, err
	}
	c := &doc.Client
	c.src = src
	c.TLS.Cert = src.resolve(c.TLS.Cert)
	c.TLS.Key = src.resolveKey(c.TLS.Key)
	c.TLS.KeyPasswordFile = src.resolve(c.TLS.KeyPasswordFile)
	c.TLS.ServerCA = src.resolve(c.TLS.ServerCA)
	c.SOCKS.PasswordFile = src.resolve(c.SOCKS.PasswordFile)
	c.Proxy.PasswordFile = src.resolve(c.Proxy.PasswordFile)
	for i, p := range c.TLS.Pins {
		c.TLS.Pins[i] = strings.TrimPrefix(p, "sha256//")
	}
	for i := range c.Forwards {
		c.Forwards[i].normalize()
	}
	c.VPN.resolve(src)
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Validate checks everything that can be checked without connecting:
// addresses, forwards, pins, backoff, and that every file exists, parses
// and, for secrets, is not readable by others. The first problem is
// returned as an *Error. Call it again after adding forwards from the
// command line.
func (c *Client) Validate() error {
	src := c.src
	if len(c.Servers) == 0 {
		return src.errf("servers", `%w: list at least one gateway, e.g. servers = ["gw.example.com:8443"]`, ErrRequired)
	}
	for i, s := range c.Servers {
		if err := checkDial(src, indexPath("servers", i), s); err != nil {
			return err
		}
	}
	if c.ServerName != "" && !validHost(c.ServerName) {
		return src.errf("server_name", "invalid name %q", c.ServerName)
	}
	if err := c.TLS.validate(src); err != nil {
		return err
	}
	listens := map[string]int{}
	for i := range c.Forwards {
		f := &c.Forwards[i]
		key := indexPath("forward", i)
		if err := f.validate(src, key); err != nil {
			return err
		}
		// Two listeners on one address would fail at runtime; say so now.
		// Port 0 picks a fresh port each time, so it cannot clash.
		side := "client"
		if f.Type == ForwardRemote {
			side = "gateway"
		}
		if listenPort(f.ListenAddr()) != 0 {
			id := side + " " + f.ListenAddr()
			if j, dup := listens[id]; dup {
				return src.err(key, &ListenReusedError{Addr: f.ListenAddr(), Other: j})
			}
			listens[id] = i
		}
	}
	if err := c.SOCKS.validate(src); err != nil {
		return err
	}
	if err := c.Proxy.validate(src); err != nil {
		return err
	}
	if err := checkDuration(src, "reconnect.min_backoff", c.Reconnect.MinBackoff, 10*time.Millisecond, 0); err != nil {
		return err
	}
	if c.Reconnect.MaxBackoff < c.Reconnect.MinBackoff {
		return src.errf("reconnect.max_backoff", "%v is shorter than min_backoff (%v)", c.Reconnect.MaxBackoff, c.Reconnect.MinBackoff)
	}
	switch c.Reconnect.Order {
	case OrderInOrder, OrderRandom:
	default:
		return src.errf("reconnect.order", "%q: want %q or %q", c.Reconnect.Order, OrderInOrder, OrderRandom)
	}
	if err := checkDuration(src, "reconnect.keepalive", c.Reconnect.Keepalive, 100*time.Millisecond, 0); err != nil {
		return err
	}
	if c.Reconnect.DeadPeer <= c.Reconnect.Keepalive {
		return src.errf("reconnect.dead_peer", "%v must be longer than keepalive (%v): the gateway needs time to answer a ping", c.Reconnect.DeadPeer, c.Reconnect.Keepalive)
	}
	if c.VPN.Enable && c.VPN.TUN != "" {
		if err := tun.ValidateName(runtime.GOOS, c.VPN.TUN); err != nil {
			return src.err("vpn.tun", err)
		}
	}
	if err := c.VPN.validate(src); err != nil {
		return err
	}
	if err := validateOps(src, &c.Control, &c.Metrics); err != nil {
		return err
	}
	if err := validateUser(src, c.User, c.VPN.Enable); err != nil {
		return err
	}
	return c.Log.validate(src)
}

func (t *ClientTLS) validate(src *source) error {
	if err := checkOwnCredentials(src, t.Cert, t.Key, t.KeyPasswordFile, t.AllowInsecureKeyPermissions); err != nil {
		return err
	}
	if _, err := checkCertificates(src, "tls.server_ca", t.ServerCA); err != nil {
		return err
	}
	for i, p := range t.Pins {
		sum, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(p, "sha256//"))
		if err != nil || len(sum) != 32 {
			return src.errf(indexPath("tls.pins", i), "invalid pin %q: want the base64 SHA-256 of a public key (44 characters)", p)
		}
	}
	return nil
}
