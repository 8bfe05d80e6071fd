package control

import (
	"crypto/x509"
	"time"

	"github.com/twoway/twoway/config"
	"github.com/twoway/twoway/pki"
)

// Which certificate a Certificate entry describes.
const (
	// CertOwn is the daemon's own leaf certificate.
	CertOwn = "own"
	// CertChain is an intermediate the daemon presents with its leaf.
	CertChain = "chain"
	// CertCA is a certificate from the CA bundle the daemon verifies peers
	// against.
	CertCA = "ca"
)

// Status is a snapshot of a running daemon, the answer to a status request.
// Counters are cumulative since the daemon started and never go down, so
// the metrics endpoint can export them as Prometheus counters.
type Status struct {
	Role    config.Role `json:"role"` // the daemon answering: server or client
	Version string      `json:"version"`
	PID     int         `json:"pid,omitempty"`
	Started time.Time   `json:"started"`
	// Now is when the snapshot was taken; Uptime is Now - Started.
	Now time.Time `json:"now"`
	// Listen is where a gateway accepts clients.
	Listen []string `json:"listen,omitempty"`
	// Endpoint is the gateway a client is connected to (or last tried).
	Endpoint string `json:"endpoint,omitempty"`
	// Certificates are the daemon's own certificate, the chain it presents
	// and the CA bundle it trusts, with their expiry.
	Certificates []Certificate `json:"certificates,omitempty"`
	// CRLs are the revocation lists a gateway checks clients against.
	CRLs []CRL `json:"crls,omitempty"`
	// Sessions are the established sessions: every connected client at a
	// gateway, at most one at a client.
	Sessions []Session `json:"sessions"`
	// Forwards are a client's configured forwards.
	Forwards []Forward `json:"forwards,omitempty"`
	// KeptVPN is the VPN configuration a client with [vpn] persist keeps
	// in place while it has no session: packets for the tunnel are dropped
	// until one is back.
	KeptVPN *KeptVPN `json:"kept_vpn,omitempty"`
	// Totals are daemon-wide counters, including sessions that have ended.
	Totals Totals `json:"totals"`
	// Fleet is a fleet gateway's link to the fleet's etcd.
	Fleet *Fleet `json:"fleet,omitempty"`
	// Renewal is a client's automatic certificate renewal; nil when off.
	Renewal *Renewal `json:"renewal,omitempty"`
}

// Renewal is the state of a client's certificate renewal (package renew).
type Renewal struct {
	// Next is when the next attempt is due.
	Next time.Time `json:"next"`
	// LastAttempt, LastOutcome ("renewed", "failed") and LastError
	// describe the last attempt; empty before the first.
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	LastOutcome string    `json:"last_outcome,omitempty"`
	LastError   string    `json:"last_error,omitempty"`
	// Failures counts failed attempts since the last success.
	Failures int `json:"failures,omitempty"`
}

// Fleet is a gateway's view of its fleet's store.
type Fleet struct {
	Name      string   `json:"name"`
	Endpoints []string `json:"endpoints"`
	// Reachable: etcd renewed the gateway's lease within its TTL.
	Reachable   bool      `json:"reachable"`
	LastContact time.Time `json:"last_contact,omitzero"`
	// While etcd is away ([fleet] store_unreachable): VPN address
	// requests refused and served from cache, cached grants not yet
	// written back, and releases (sessions that ended) not yet written.
	Refused         uint64 `json:"refused,omitempty"`
	ServedCached    uint64 `json:"served_cached,omitempty"`
	Pending         int    `json:"pending,omitempty"`
	PendingReleases int    `json:"pending_releases,omitempty"`
}

// KeptVPN is a device configuration kept between sessions.
type KeptVPN struct {
	Addresses []string `json:"addresses"`
	Routes    []string `json:"routes"`
}

// Uptime is how long the daemon had been running when the snapshot was
// taken.
func (s Status) Uptime() time.Duration {
	if s.Started.IsZero() || s.Now.IsZero() {
		return 0
	}
	return s.Now.Sub(s.Started)
}

// Session describes one established session. "In" is what this daemon
// received from the peer, "Out" what it sent.
type Session struct {
	// Gateway is the fleet gateway holding the session (status --fleet).
	Gateway  string   `json:"gateway,omitempty"`
	ID       string   `json:"id"`
	Identity string   `json:"identity"` // the peer's name (pki.Identity.Name)
	Groups   []string `json:"groups,omitempty"`
	Serial   string   `json:"serial,omitempty"` // the peer certificate's serial, hex
	Remote   string   `json:"remote,omitempty"`
	// Addresses are the tunnel addresses assigned in VPN mode.
	Addresses []string `json:"addresses,omitempty"`
	// GSO: VPN superpackets pass through whole on this session.
	GSO bool `json:"gso,omitempty"`
	// Path is what carries the VPN packets now: "udp" or "tcp".
	Path string `json:"path,omitempty"`
	// PathQueueMillis is how long this side's UDP datagrams last waited
	// in queues on the path; absent when not measured lately.
	PathQueueMillis float64 `json:"path_queue_ms,omitempty"`
	// Resumed: the TLS session was resumed from a ticket (the
	// certificates in it were verified again all the same).
	Resumed    bool      `json:"resumed,omitempty"`
	BytesIn    uint64    `json:"bytes_in"`
	BytesOut   uint64    `json:"bytes_out"`
	PacketsIn  uint64    `json:"packets_in"`
	PacketsOut uint64    `json:"packets_out"`
	Streams    int       `json:"streams"` // data streams open now
	RTTMillis  float64   `json:"rtt_ms,omitempty"`
	Since      time.Time `json:"since"`
	Reconnects int       `json:"reconnects,omitempty"` // client: sessions before this one
	LastError  string    `json:"last_error,omitempty"`
	// CertNotAfter is when the peer's certificate expires, CANotAfter when
	// the earliest CA in its verified chain does; the days are whole days
	// left at Status.Now, negative once expired.
	CertNotAfter time.Time `json:"cert_not_after"`
	CertDaysLeft int       `json:"cert_days_left"`
	CANotAfter   time.Time `json:"ca_not_after,omitzero"`
	CADaysLeft   int       `json:"ca_days_left"`
}

// Certificate is one certificate whose expiry a daemon depends on.
type Certificate struct {
	Which    string    `json:"which"` // CertOwn, CertChain or CertCA
	Subject  string    `json:"subject"`
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"not_after"`
	DaysLeft int       `json:"days_left"`
}

// CRL is one revocation list in use. Stale means its next update has
// passed: its issuer promised a newer list by then.
type CRL struct {
	Issuer     string    `json:"issuer"`
	Number     string    `json:"number,omitempty"` // decimal
	ThisUpdate time.Time `json:"this_update"`
	NextUpdate time.Time `json:"next_update,omitzero"` // zero: none given
	Revoked    int       `json:"revoked"`              // entries
	Stale      bool      `json:"stale"`
}

// CRLOf describes crl at now.
func CRLOf(crl *x509.RevocationList, now time.Time) CRL {
	c := CRL{
		Issuer: crl.Issuer.CommonName, ThisUpdate: crl.ThisUpdate, NextUpdate: crl.NextUpdate,
		Revoked: len(crl.RevokedCertificateEntries),
		Stale:   !crl.NextUpdate.IsZero() && now.After(crl.NextUpdate),
	}
	if c.Issuer == "" {
		c.Issuer = crl.Issuer.String()
	}
	if crl.Number != nil {
		c.Number = crl.Number.String()
	}
	return c
}

// Forward is one of a client's forwards.
type Forward struct {
	Kind   string `json:"kind"` // "local", "remote" or "dynamic"
	Listen string `json:"listen"`
	Target string `json:"target,omitempty"`
	// Bound is where it actually listens: the local address for -L and
	// -D, the gateway's answer for -R.
	Bound string `json:"bound,omitempty"`
	// State is "listening", "pending" (waiting for the gateway) or
	// "failed" (see Error).
	State string `json:"state"`
	Error string `json:"error,omitempty"`
}

// Forward states.
const (
	ForwardListening = "listening"
	ForwardPending   = "pending"
	ForwardFailed    = "failed"
)

// Totals are cumulative daemon-wide counters.
type Totals struct {
	BytesIn       uint64 `json:"bytes_in"`
	BytesOut      uint64 `json:"bytes_out"`
	PacketsIn     uint64 `json:"packets_in"`
	PacketsOut    uint64 `json:"packets_out"`
	StreamsOpened uint64 `json:"streams_opened"`
	// PolicyClosed counts remote listeners and forwarded streams closed
	// because a reloaded policy no longer allowed them.
	PolicyClosed uint64 `json:"policy_closed,omitempty"`
	// ECNMarked counts VPN packets the gateway's queues marked CE (ECN)
	// instead of dropping them (see README, "No flow of a client slows
	// down its others").
	ECNMarked uint64 `json:"ecn_marked,omitempty"`
	// Dropped counts packets the VPN router dropped, by reason ("policy",
	// "spoof", "queue", ...).
	Dropped map[string]uint64 `json:"dropped,omitempty"`
	// UDPIn and UDPOut count authenticated datagrams received and
	// datagrams sent on the UDP data path; UDPDropped counts datagrams
	// dropped before or in authentication, by reason ("auth", "replay",
	// "unknown-session", ...); UDPRoamed counts changes of a client's
	// UDP address.
	UDPIn      uint64            `json:"udp_in,omitempty"`
	UDPOut     uint64            `json:"udp_out,omitempty"`
	UDPDropped map[string]uint64 `json:"udp_dropped,omitempty"`
	UDPRoamed  uint64            `json:"udp_roamed,omitempty"`
}

// NewSession fills the identity part of a Session from the peer's verified
// identity: name, groups, serial and the expiry of its certificate and of
// its chain.
func NewSession(id string, peer *pki.Identity, now time.Time) Session {
	s := Session{ID: id}
	if peer == nil {
		return s
	}
	s.Identity = peer.Name()
	s.Groups = append([]string(nil), peer.Groups...)
	s.Serial = peer.Serial
	s.CertNotAfter = peer.NotAfter
	s.CertDaysLeft = pki.DaysLeft(peer.NotAfter, now)
	return s
}

// SetChain records the earliest expiry among the CA certificates of a
// verified chain (leaf first; the leaf itself is skipped).
func (s *Session) SetChain(verified []*x509.Certificate, now time.Time) {
	var earliest time.Time
	for i, c := range verified {
		if i == 0 {
			continue
		}
		if earliest.IsZero() || c.NotAfter.Before(earliest) {
			earliest = c.NotAfter
		}
	}
	if earliest.IsZero() {
		return
	}
	s.CANotAfter = earliest
	s.CADaysLeft = pki.DaysLeft(earliest, now)
}

// Certificates describes certs as the given kind (CertOwn, CertChain,
// CertCA) with their days left at now.
func Certificates(which string, certs []*x509.Certificate, now time.Time) []Certificate {
	out := make([]Certificate, 0, len(certs))
	for _, c := range certs {
		if c != nil {
			out = append(out, CertificateOf(which, c, now))
		}
	}
	return out
}

// CertificateOf describes one certificate as the given kind with its days
// left at now.
func CertificateOf(which string, c *x509.Certificate, now time.Time) Certificate {
	return Certificate{
		Which:    which,
		Subject:  subjectName(c),
		Serial:   c.SerialNumber.Text(16),
		NotAfter: c.NotAfter,
		DaysLeft: pki.DaysLeft(c.NotAfter, now),
	}
}

func subjectName(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return c.Subject.CommonName
	}
	return c.Subject.String()
}
