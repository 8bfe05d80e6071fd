package tunnel

import (
	"crypto/rand"
	"sync"
	"time"
)

// Session resumption. A gateway hands each client a TLS 1.3 session
// ticket, encrypted with a key only gateways hold; a client that
// reconnects (after a network change, or to another gateway of a fleet
// that shares the keys) presents it and skips the certificate exchange
// and signatures of a full handshake, which is what a gateway's CPU spends
// most on when thousands of clients arrive at once after a failover.
// Resumption always uses a fresh (EC)DHE exchange (crypto/tls offers only
// psk_dhe_ke), so forward secrecy is kept.
//
// What resumption must not skip is judgement: crypto/tls restores the
// certificates from the ticket and calls VerifyConnection with them, on
// both sides, so the client certificate is checked against the current
// CA bundle and CRLs (and the gateway's against the client's pins and
// name) exactly as in a full handshake, and the policy admits the identity
// after the handshake as always. A ticket outlives neither its key
// (KeepTicketKeys x RotateTicketKeys) nor the certificate inside it.

// TicketKeys supplies the keys that encrypt session tickets.
// Implementations are safe for concurrent use.
type TicketKeys interface {
	// TicketKeys returns the keys in use, newest first: the first
	// encrypts new tickets, every one decrypts. None: no resumption.
	TicketKeys() [][32]byte
}

// Ticket key rotation of LocalTicketKeys: a new key every hour, each kept
// for eight, so a ticket can be used for at most 8 hours and a stolen
// key (from a memory dump, say) opens at most 8 hours of tickets.
const (
	RotateTicketKeys = time.Hour
	KeepTicketKeys   = 8
)

// LocalTicketKeys are ticket keys made and rotated in memory by one
// gateway: its clients resume with it, and a restart forgets them. A
// fleet shares its keys through its store instead (fleet package).
type LocalTicketKeys struct {
	every time.Duration
	keep  int
	now   func() time.Time

	mu      sync.Mutex
	keys    [][32]byte // newest first; guarded by mu
	rotated time.Time  // when keys[0] was made; guarded by mu
}

// NewLocalTicketKeys returns keys that rotate every RotateTicketKeys and
// are kept for KeepTicketKeys rotations.
func NewLocalTicketKeys() *LocalTicketKeys {
	return &LocalTicketKeys{every: RotateTicketKeys, keep: KeepTicketKeys, now: time.Now}
}

// TicketKeys implements TicketKeys, rotating first when the newest key is
// due to be replaced.
func (k *LocalTicketKeys) TicketKeys() [][32]byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	if len(k.keys) == 0 || now.Sub(k.rotated) >= k.every {
		var key [32]byte
		_, _ = rand.Read(key[:]) // crypto/rand.Read does not fail
		k.keys = append([][32]byte{key}, k.keys...)
		if len(k.keys) > k.keep {
			clear(k.keys[k.keep:])
			k.keys = k.keys[:k.keep]
		}
		k.rotated = now
	}
	return append([][32]byte(nil), k.keys...)
}

// clientTicketCache is how many gateways' tickets a client keeps: one
// per name it dials, so a handful.
const clientTicketCache = 16
