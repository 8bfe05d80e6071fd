package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/twoway/twoway/authority"
	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/policy"
)

// DefaultListen is the gateway's default listen address. Port 8443 rather
// than 443: it needs no privileges, and 443 is often taken by a web server
// on the same host. Set listen = ":443" when the gateway owns the host.
const DefaultListen = ":8443"

// Server is server.toml, the gateway's configuration.
type Server struct {
	// Listen is host:port for the TLS listener. Default DefaultListen.
	Listen string `toml:"listen"`
	// TLS holds the gateway's credentials and what it trusts.
	TLS ServerTLS `toml:"tls"`
	// Limits protects the gateway from floods and runaway clients.
	Limits Limits `toml:"limits"`
	// Policy says who may connect and what they may reach.
	Policy policy.Config `toml:"policy"`
	// Log configures logging.
	Log Log `toml:"log"`

	// VPN configures VPN mode; off unless vpn.enable.
	VPN ServerVPN `toml:"vpn"`
	// Enroll lets laptops enroll with a one-time token; off without ca.
	Enroll ServerEnroll `toml:"enroll"`
	// Fleet joins the gateway to a fleet sharing its state through etcd;
	// off without endpoints.
	Fleet ServerFleet `toml:"fleet"`

	// Control is the local status/kick socket; Metrics the optional
	// Prometheus endpoint.
	Control Control `toml:"control"`
	Metrics Metrics `toml:"metrics"`

	// User is the account a gateway started as root drops to once its
	// listeners are open (see RunAs); "root" keeps root.
	User string `toml:"user"`

	src *source
	// compiled is Policy as the last successful Validate compiled it.
	compiled *policy.Policy
}

// ServerTLS is the [tls] table of server.toml. Paths are absolute after
// loading.
type ServerTLS struct {
	// Cert is the gateway certificate followed by its issuing chain.
	Cert string `toml:"cert"`
	// Key is the gateway's private key file, mode 0600, or a key
	// reference such as a pkcs11: URI (see keystore).
	Key string `toml:"key"`
	// KeyPasswordFile holds the password of an encrypted Key (first line).
	KeyPasswordFile string `toml:"key_password_file"`
	// ClientCA is the bundle client certificates must chain to
	// (client-ca/bundle.crt of a twoway PKI).
	ClientCA string `toml:"client_ca"`
	// CRLs are revocation lists for the CAs in ClientCA, PEM or DER.
	CRLs []string `toml:"crls"`
	// CRLStale is what a CRL past its next update means: CRLStaleWarn
	// (the default: keep using it, warn) or CRLStaleReject (refuse every
	// client it covers until a fresh one is loaded).
	CRLStale string `toml:"crl_stale"`
	// SessionTickets lets clients resume their TLS session on reconnect
	// (default true); the certificate inside a ticket is checked against
	// the current CA bundle and CRLs all the same.
	SessionTickets bool `toml:"session_tickets"`
	// AllowInsecureKeyPermissions skips the group/other permission check on
	// Key and KeyPasswordFile.
	AllowInsecureKeyPermissions bool `toml:"allow_insecure_key_permissions"`
}

// ServerEnroll is the [enroll] table of server.toml: the online issuing
// CA that signs the certificates of laptops enrolling with a token (see
// `twoway pki token create`). Paths are absolute after loading.
type ServerEnroll struct {
	// CA is the CA directory (ca.crt, ca.key, bundle.crt, db.json), e.g.
	// pki/client-ca or a sub-CA made for enrollment. Its certificate
	// must be in tls.client_ca, or the gateway would refuse what it
	// issues. Empty: no enrollment.
	CA string `toml:"ca"`
	// PasswordFile holds the password of an encrypted CA key (first
	// line).
	PasswordFile string `toml:"password_file"`
	// AllowInsecurePermissions skips the group/other permission check on
	// the CA key and PasswordFile.
	AllowInsecurePermissions bool `toml:"allow_insecure_permissions"`
	// RenewMaxDays caps the lifetime of renewed certificates, which is
	// otherwise the lifetime of the certificate being renewed; 0: no cap.
	// The gateway renews the certificates of CA only (over a session or
	// EST), and only while enrollment is on.
	RenewMaxDays int `toml:"renew_max_days"`
}

// Enabled reports whether the gateway serves enrollments.
func (e *ServerEnroll) Enabled() bool { return e.CA != "" }

func (e *ServerEnroll) resolve(src *source) {
	e.CA = src.resolve(e.CA)
	e.PasswordFile = src.resolve(e.PasswordFile)
}

func (e *ServerEnroll) validate(src *source, clientCA string) error {
	if e.RenewMaxDays < 0 {
		return src.errf("enroll.renew_max_days", "must not be negative (0: no cap), not %d", e.RenewMaxDays)
	}
	if !e.Enabled() {
		if e.PasswordFile != "" {
			return src.err("enroll.ca", &UnpairedError{Given: "enroll.password_file", text: "enroll.password_file is set but enroll.ca is not"})
		}
		return nil
	}
	if fi, err := os.Stat(e.CA); err != nil {
		return src.err("enroll.ca", fileError(e.CA, err))
	} else if !fi.IsDir() {
		return src.errf("enroll.ca", "%s is not a directory: name the CA's directory (holding %s and %s)", e.CA, authority.CACertFile, authority.CAKeyFile)
	}
	certs, err := checkCertificates(src, "enroll.ca", filepath.Join(e.CA, authority.CACertFile))
	if err != nil {
		return err
	}
	if err := checkKeyPairFor(src, "enroll.ca", filepath.Join(e.CA, authority.CAKeyFile), certs[0], e.PasswordFile, "enroll.password_file", e.AllowInsecurePermissions); err != nil {
		return err
	}
	if e.PasswordFile != "" {
		if _, err := checkSecretFile(src, "enroll.password_file", e.PasswordFile, e.AllowInsecurePermissions); err != nil {
			return err
		}
	}
	if _, err := checkReadable(src, "enroll.ca", filepath.Join(e.CA, authority.DBFile)); err != nil {
		return err
	}
	trusted, err := pki.LoadCertificates(clientCA)
	if err != nil {
		return src.errf("enroll.ca", "tls.client_ca: %v", err)
	}
	if !slices.ContainsFunc(trusted, certs[0].Equal) {
		return src.errf("enroll.ca", "%s is not in tls.client_ca (%s): the gateway would refuse the certificates it enrolls", e.CA, clientCA)
	}
	return nil
}

// Values of ServerTLS.CRLStale.
const (
	CRLStaleWarn   = "warn"
	CRLStaleReject = "reject"
)

// Limits is the [limits] table of server.toml.
type Limits struct {
	// HandshakeTimeout bounds the TLS handshake and the hello. Default 10s.
	HandshakeTimeout time.Duration `toml:"handshake_timeout"`
	// MaxSessions caps concurrent client sessions. Default 10000.
	MaxSessions int `toml:"max_sessions"`
	// MaxHandshakes caps TLS handshakes in progress at once; when all are
	// taken, the oldest connection that has not sent its ClientHello is
	// closed to make room. Default 256.
	MaxHandshakes int `toml:"max_handshakes"`
	// MaxSessionsPerIdentity caps concurrent sessions of one identity
	// (issuer and name); a new session beyond it replaces the oldest.
	// 0 means no limit. Default 4.
	MaxSessionsPerIdentity int `toml:"max_sessions_per_identity"`
	// ReceiveBudgetMiB bounds what one session's client may have in flight
	// to the gateway or buffered there unread, over all its streams, in
	// MiB; ReceiveBudgetTotalMiB bounds the sum over sessions. Defaults
	// 64 and 1024.
	ReceiveBudgetMiB      int `toml:"receive_budget_mib"`
	ReceiveBudgetTotalMiB int `toml:"receive_budget_total_mib"`
	// MaxStreamsPerSession caps concurrent streams (forwarded connections)
	// per session. Default 256.
	MaxStreamsPerSession int `toml:"max_streams_per_session"`
	// HandshakeRate is the sustained rate of failed handshakes allowed
	// per source (IPv4 address, IPv6 /64), per second; past it the source
	// may run only two handshakes at once. Successful handshakes are not
	// counted. 0 disables the limit. Default 5.
	HandshakeRate float64 `toml:"handshake_rate"`
	// HandshakeBurst is how many failed handshakes a source may have
	// before HandshakeRate applies. Default 20.
	HandshakeBurst int `toml:"handshake_burst"`
	// KeepaliveInterval is how long a silent session waits before it
	// pings, so dead peers and silently dropped NAT mappings are noticed.
	// Default 10s.
	KeepaliveInterval time.Duration `toml:"keepalive_interval"`
	// DeadPeerTimeout ends a session from which nothing at all has arrived
	// for this long. It must exceed KeepaliveInterval. Default 25s.
	DeadPeerTimeout time.Duration `toml:"dead_peer_timeout"`
}

// DefaultServer returns a Server with every default filled in and nothing
// else: no credentials and an empty policy.
func DefaultServer() *Server {
	return &Server{
		Listen: DefaultListen,
		TLS:    ServerTLS{SessionTickets: true},
		Limits: Limits{
			HandshakeTimeout:       10 * time.Second,
			MaxSessions:            10000,
			MaxHandshakes:          256,
			MaxSessionsPerIdentity: 4,
			ReceiveBudgetMiB:       64,
			ReceiveBudgetTotalMiB:  1024,
			MaxStreamsPerSession:   256,
			HandshakeRate:          5,
			HandshakeBurst:         20,
			KeepaliveInterval:      10 * time.Second,
			DeadPeerTimeout:        25 * time.Second,
		},
		Log: defaultLog(),
	}
}

// serverDoc is what server.toml decodes into: Server, except that policy
// rules are decoded one by one (see decodeArray).
type serverDoc struct {
	Server
	Policy struct {
		Admit policy.Admission  `toml:"admit"`
		Rules []toml.Primitive  `toml:"rule"`
		CAs   []policy.CAGroups `toml:"ca"`
	} `toml:"policy"`
}

// LoadServer reads, resolves and validates a server configuration.
func LoadServer(path string) (*Server, error) {
	doc := &serverDoc{Server: *DefaultServer()}
	src, err := decode(path, doc, reflect.TypeFor[Server](), func(d *decoder) error {
		rules, err := decodeArray(d, "policy.rule", doc.Policy.Rules, func() policy.Rule { return policy.Rule{} })
		doc.Server.Policy = policy.Config{Admit: doc.Policy.Admit, Rules: rules, CAs: doc.Policy.CAs}
		return err
	})
	if err != nil {
		return nil, err
	}
	s := &doc.Server
	s.src = src
	s.TLS.Cert = src.resolve(s.TLS.Cert)
	s.TLS.Key = src.resolveKey(s.TLS.Key)
	s.TLS.KeyPasswordFile = src.resolve(s.TLS.KeyPasswordFile)
	s.TLS.ClientCA = src.resolve(s.TLS.ClientCA)
	for i := range s.TLS.CRLs {
		s.TLS.CRLs[i] = src.resolve(s.TLS.CRLs[i])
	}
	s.VPN.resolve(src)
	s.Fleet.resolve(src)
	s.Enroll.resolve(src)
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return s, nil
}

// Validate checks everything that can be checked without binding a socket:
// addresses, limits, the policy, and that every file exists, parses and, for
// secrets, is not readable by others. The first problem is returned as an
// *Error.
func (s *Server) Validate() error {
	src := s.src
	s.compiled = nil // set again once everything is valid
	if err := checkListen(src, "listen", s.Listen); err != nil {
		return err
	}
	if err := s.TLS.validate(src); err != nil {
		return err
	}
	if err := s.Limits.validate(src); err != nil {
		return err
	}
	pol, err := compilePolicy(src, s.Policy)
	if err != nil {
		return err
	}
	if err := s.Enroll.validate(src, s.TLS.ClientCA); err != nil {
		return err
	}
	if err := s.VPN.validate(src); err != nil {
		return err
	}
	if err := s.Fleet.validate(src); err != nil {
		return err
	}
	if err := validateOps(src, &s.Control, &s.Metrics); err != nil {
		return err
	}
	if err := validateUser(src, s.User, s.VPN.Enable); err != nil {
		return err
	}
	if err := s.Log.validate(src); err != nil {
		return err
	}
	s.compiled = pol
	return nil
}

func (t *ServerTLS) validate(src *source) error {
	if err := checkOwnCredentials(src, t.Cert, t.Key, t.KeyPasswordFile, t.AllowInsecureKeyPermissions); err != nil {
		return err
	}
	if _, err := checkCertificates(src, "tls.client_ca", t.ClientCA); err != nil {
		return err
	}
	switch t.CRLStale {
	case "", CRLStaleWarn, CRLStaleReject:
	default:
		return src.errf("tls.crl_stale", "%q: must be %q or %q", t.CRLStale, CRLStaleWarn, CRLStaleReject)
	}
	for i, p := range t.CRLs {
		key := indexPath("tls.crls", i)
		data, err := checkReadable(src, key, p)
		if err != nil {
			return err
		}
		crl, err := pki.ParseCRL(data)
		if err != nil {
			return src.errf(key, "%s: %v", p, err)
		}
		if err := pki.CheckCRLScope(crl); err != nil {
			return src.errf(key, "%s: %w", p, err)
		}
	}
	return nil
}

func (l *Limits) validate(src *source) error {
	if err := checkDuration(src, "limits.handshake_timeout", l.HandshakeTimeout, time.Second, 5*time.Minute); err != nil {
		return err
	}
	switch {
	case l.MaxSessions < 1:
		return src.errf("limits.max_sessions", "%d: must be at least 1", l.MaxSessions)
	case l.ReceiveBudgetMiB < 1:
		return src.errf("limits.receive_budget_mib", "%d: must be at least 1", l.ReceiveBudgetMiB)
	case l.ReceiveBudgetTotalMiB < l.ReceiveBudgetMiB:
		return src.errf("limits.receive_budget_total_mib", "%d: must be at least receive_budget_mib (%d)", l.ReceiveBudgetTotalMiB, l.ReceiveBudgetMiB)
	case l.MaxHandshakes < 1:
		return src.errf("limits.max_handshakes", "%d: must be at least 1", l.MaxHandshakes)
	case l.MaxSessionsPerIdentity < 0:
		return src.errf("limits.max_sessions_per_identity", "%d: must not be negative (0 means no limit)", l.MaxSessionsPerIdentity)
	case l.MaxStreamsPerSession < 1 || l.MaxStreamsPerSession > 65535:
		return src.errf("limits.max_streams_per_session", "%d: must be 1-65535", l.MaxStreamsPerSession)
	case l.HandshakeRate < 0:
		return src.errf("limits.handshake_rate", "%v: must not be negative (0 disables the limit)", l.HandshakeRate)
	case l.HandshakeRate > 0 && l.HandshakeBurst < 1:
		return src.errf("limits.handshake_burst", "%d: must be at least 1 when handshake_rate is set", l.HandshakeBurst)
	}
	if err := checkDuration(src, "limits.keepalive_interval", l.KeepaliveInterval, time.Second, 10*time.Minute); err != nil {
		return err
	}
	if err := checkDuration(src, "limits.dead_peer_timeout", l.DeadPeerTimeout, 2*time.Second, time.Hour); err != nil {
		return err
	}
	if l.DeadPeerTimeout <= l.KeepaliveInterval {
		return src.errf("limits.dead_peer_timeout", "%v: must be longer than keepalive_interval (%v)", l.DeadPeerTimeout, l.KeepaliveInterval)
	}
	return nil
}

// CompiledPolicy returns Policy compiled: the policy Validate (and so
// LoadServer) compiled, so that the daemon does not compile it again, or a
// fresh compilation for a Server that was never validated.
func (s *Server) CompiledPolicy() (*policy.Policy, error) {
	if s.compiled != nil {
		return s.compiled, nil
	}
	return policy.New(s.Policy)
}

// compilePolicy compiles the policy and places its errors on the entry at
// fault.
func compilePolicy(src *source, cfg policy.Config) (*policy.Policy, error) {
	if len(cfg.Admit.Identities) == 0 && len(cfg.Admit.Groups) == 0 {
		return nil, src.errf("policy.admit", `nobody is admitted: list identities or groups ("*" admits every verified identity)`)
	}
	pol, err := policy.New(cfg)
	var ce *policy.ConfigError
	if !errors.As(err, &ce) {
		return pol, err
	}
	key := "policy.admit." + ce.Field
	if ce.Rule >= 0 {
		key = indexPath("policy.rule", ce.Rule) + "." + ce.Field
	}
	if ce.Rule == -2 {
		e := src.err(indexPath("policy.ca", ce.Entry)+"."+ce.Field, ce.Err)
		return nil, e
	}
	e := src.err(key, ce.Err)
	if src != nil && ce.Entry >= 0 {
		e.Line = src.layout.line(indexPath(key, ce.Entry))
	}
	return nil, e
}
