// Package datagram is the record layer of twoway's UDP data path: it seals
// VPN packets into UDP datagrams and opens them, with keys derived from the
// session's mutual-TLS 1.3 connection (its exporter, RFC 8446 §7.5). The TLS
// session stays the control plane: it authenticates both sides, and whoever
// holds its keys is who the gateway verified, so a datagram that opens under
// a session's key carries that session's identity. Nothing here parses a
// datagram's payload before it has been authenticated.
//
// A datagram is a 16-byte header followed by the AEAD ciphertext of the
// payload (AES-256-GCM; the header is the additional data):
//
//	0      1      2      4            8                        16
//	| type | phase| zero | receiver   | counter (big endian)   | ciphertext+tag
//
// receiver is the index the receiving side assigned to the session (it
// finds the session's Opener by it, as WireGuard's transport messages do);
// counter is the sender's per-key packet number; receiver and counter
// together are the 12-byte nonce, which therefore never repeats under a key; phase is the low byte of the key epoch,
// so that a rekey (a new epoch, announced over the control stream) can
// overlap with packets still in flight under the old key. A sliding window
// of windowSize counters drops replays and packets too old to tell (RFC
// 6479); reordering within the window is accepted.
package datagram

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// Datagram types. Only these are sealed or opened; a type is authenticated
// with the rest of the header.
const (
	// TypeData carries one IP packet.
	TypeData byte = 1
	// TypeProbe asks the other side to answer with TypeProbeReply: it
	// checks the path (and keeps NAT bindings open). Its payload is
	// echoed back.
	TypeProbe byte = 2
	// TypeProbeReply answers a TypeProbe.
	TypeProbeReply byte = 3
	// TypeClock carries its sender's clock (8 bytes, nanoseconds on a
	// monotonic clock of the sender's choosing) and asks for
	// TypeClockReply: the sender learns from the replies how long its
	// datagrams take to arrive, up to a constant (the clocks' offset),
	// and so how much queue builds on the path in its direction.
	TypeClock byte = 4
	// TypeClockReply echoes a TypeClock's payload followed by the
	// receiver's clock (8 bytes) when it arrived.
	TypeClockReply byte = 5
)

// HeaderLen is the length of the clear header; Overhead is what a datagram
// adds to its payload.
const (
	HeaderLen = 16
	tagLen    = 16
	Overhead  = HeaderLen + tagLen
)

// KeyLen is the length of one direction's key (AES-256).
const KeyLen = 32

// RekeyAfter is the number of datagrams after which a sender should move to
// a new epoch; RejectAfter is where it must: AES-GCM's bounds for a key
// (RFC 8446 §5.5 allows 2^24.5 full-size records), with room for the rekey
// to complete.
const (
	RekeyAfter  = 1 << 24
	RejectAfter = RekeyAfter + 1<<22
)

// Errors Open and Seal return. Every failure to open is one of these; the
// caller counts and drops, never looks further.
var (
	ErrShort     = errors.New("datagram: too short")
	ErrType      = errors.New("datagram: unknown type or reserved bits set")
	ErrReceiver  = errors.New("datagram: not for this session")
	ErrPhase     = errors.New("datagram: unknown key phase")
	ErrAuth      = errors.New("datagram: authentication failed")
	ErrReplay    = errors.New("datagram: replayed or too old")
	ErrExhausted = errors.New("datagram: key used up; rekey")
)

// exporterLabel names twoway's use of the TLS exporter; another use of the
// same session (with another label) gets independent keys.
const exporterLabel = "EXPORTER-twoway-udp-v1"

// Exporter is tls.ConnectionState.ExportKeyingMaterial.
type Exporter func(label string, context []byte, length int) ([]byte, error)

// Keys are a session's keys for one epoch, seen from one side.
type Keys struct {
	Send, Recv [KeyLen]byte
	Epoch      uint32
}

// DeriveKeys derives the keys of epoch for the session whose TLS connection
// exp belongs to. Both sides call it with the same session id and epoch;
// client says which side this is, so that each side's Send is the other's
// Recv.
func DeriveKeys(exp Exporter, session []byte, epoch uint32, client bool) (Keys, error) {
	ctx := make([]byte, 0, len(session)+4)
	ctx = binary.BigEndian.AppendUint32(append(ctx, session...), epoch)
	m, err := exp(exporterLabel, ctx, 2*KeyLen)
	if err != nil {
		return Keys{}, fmt.Errorf("datagram: exporting keys: %w", err)
	}
	k := Keys{Epoch: epoch}
	c2s, s2c := m[:KeyLen], m[KeyLen:]
	if client {
		copy(k.Send[:], c2s)
		copy(k.Recv[:], s2c)
	} else {
		copy(k.Send[:], s2c)
		copy(k.Recv[:], c2s)
	}
	clear(m)
	return k, nil
}

func newAEAD(key *[KeyLen]byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key[:])
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// Receiver returns the receiver index of a datagram, for finding its
// session's Opener; it says nothing about whether the datagram is genuine.
func Receiver(p []byte) (uint32, bool) {
	if len(p) < Overhead {
		return 0, false
	}
	return binary.BigEndian.Uint32(p[4:8]), true
}

// Sealer seals datagrams for one direction of one session under one key.
// Seal is safe for concurrent use.
type Sealer struct {
	aead     cipher.AEAD
	receiver uint32
	phase    byte
	next     atomic.Uint64 // the next counter
}

// NewSealer returns a sealer with k's send key, for the peer's receiver
// index.
func NewSealer(k Keys, receiver uint32) (*Sealer, error) {
	a, err := newAEAD(&k.Send)
	if err != nil {
		return nil, err
	}
	return &Sealer{aead: a, receiver: receiver, phase: byte(k.Epoch)}, nil
}

// Seal appends the datagram carrying payload, of type typ, to dst and
// returns it. After RekeyAfter datagrams it still seals but NeedsRekey
// reports true; after RejectAfter it fails with ErrExhausted.
func (s *Sealer) Seal(dst []byte, typ byte, payload []byte) ([]byte, error) {
	n := s.next.Add(1) - 1
	if n >= RejectAfter {
		return dst, ErrExhausted
	}
	start := len(dst)
	dst = append(dst, typ, s.phase, 0, 0)
	dst = binary.BigEndian.AppendUint32(dst, s.receiver)
	dst = binary.BigEndian.AppendUint64(dst, n)
	hdr := dst[start:]
	return s.aead.Seal(dst, hdr[4:HeaderLen], payload, hdr), nil
}

// NeedsRekey reports whether the sealer has used its key for RekeyAfter
// datagrams.
func (s *Sealer) NeedsRekey() bool { return s.next.Load() >= RekeyAfter }

// Sealed is the number of datagrams sealed (or attempted) under the key.
func (s *Sealer) Sealed() uint64 { return s.next.Load() }

// Opener opens datagrams for one direction of one session. It holds the
// current key and, after a rekey, the previous one until Retire, so that
// datagrams sealed before the peer switched still open. Open is safe for
// concurrent use.
type Opener struct {
	receiver uint32
	mu       sync.Mutex
	keys     [2]*openKey // current, previous (nil if none); guarded by mu
}

type openKey struct {
	aead  cipher.AEAD
	phase byte
	win   window // guarded by Opener.mu
}

// NewOpener returns an opener for datagrams addressed to receiver, with
// k's receive key.
func NewOpener(k Keys, receiver uint32) (*Opener, error) {
	o := &Opener{receiver: receiver}
	if err := o.Rekey(k); err != nil {
		return nil, err
	}
	return o, nil
}

// Rekey makes k's receive key the current one; the current one becomes the
// previous one, which still opens until the next Rekey or Retire.
func (o *Opener) Rekey(k Keys) error {
	a, err := newAEAD(&k.Recv)
	if err != nil {
		return err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.keys[1], o.keys[0] = o.keys[0], &openKey{aead: a, phase: byte(k.Epoch)}
	return nil
}

// Retire drops the previous key.
func (o *Opener) Retire() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.keys[1] = nil
}

// Open authenticates and decrypts the datagram p, appending the payload to
// dst. It returns the datagram's type and the payload (a slice of the
// result). A datagram that fails any check changes nothing.
func (o *Opener) Open(dst, p []byte) (typ byte, payload []byte, err error) {
	if len(p) < Overhead {
		return 0, dst, ErrShort
	}
	hdr := p[:HeaderLen]
	typ = hdr[0]
	if typ < TypeData || typ > TypeClockReply || hdr[2] != 0 || hdr[3] != 0 {
		return 0, dst, ErrType
	}
	if binary.BigEndian.Uint32(hdr[4:8]) != o.receiver {
		return 0, dst, ErrReceiver
	}
	n := binary.BigEndian.Uint64(hdr[8:16])
	o.mu.Lock()
	k := o.keys[0]
	if k.phase != hdr[1] {
		k = o.keys[1]
	}
	if k == nil || k.phase != hdr[1] {
		o.mu.Unlock()
		return 0, dst, ErrPhase
	}
	fresh := k.win.fresh(n)
	o.mu.Unlock()
	// The cheap check first, so a flood of replays costs no decryption;
	// the window only moves once the datagram has proved genuine.
	if !fresh || n >= RejectAfter {
		return 0, dst, ErrReplay
	}
	start := len(dst)
	out, err := k.aead.Open(dst, hdr[4:HeaderLen], p[HeaderLen:], hdr)
	if err != nil {
		return 0, dst, ErrAuth
	}
	o.mu.Lock()
	ok := k.win.mark(n)
	o.mu.Unlock()
	if !ok { // the same datagram, opened concurrently
		return 0, out[:start], ErrReplay
	}
	return typ, out[start:], nil
}

// windowSize is how far behind the newest counter a datagram may arrive
// and still be accepted: reordering on real paths (Wi-Fi retries, ECMP,
// several sender threads) stays well inside it.
const windowSize = 8192

const windowWords = windowSize / 64

// window is an anti-replay window over counters (RFC 6479): a ring of
// bitmap words, the newest counter top, and a datagram fresh when it is
// newer than top or inside the window and not yet seen.
type window struct {
	top   uint64 // the highest counter marked plus one; 0 = none yet
	words [windowWords]uint64
}

// fresh reports whether n may still be accepted.
func (w *window) fresh(n uint64) bool {
	if n >= w.top {
		return true
	}
	if w.top-n > windowSize-64 {
		// Beyond what the ring still remembers (its oldest word may be
		// reused by the next advance).
		return false
	}
	return w.words[(n/64)%windowWords]&(1<<(n%64)) == 0
}

// mark records n as seen; it reports false if n was not fresh.
func (w *window) mark(n uint64) bool {
	if !w.fresh(n) {
		return false
	}
	if n >= w.top {
		// Clear the words the window moves over, then advance.
		cur := uint64(0)
		if w.top > 0 {
			cur = (w.top - 1) / 64
		}
		want := n / 64
		if w.top == 0 {
			w.words[want%windowWords] = 0
		} else {
			for i := cur + 1; i <= want && i <= cur+windowWords; i++ {
				w.words[i%windowWords] = 0
			}
		}
		w.top = n + 1
	}
	w.words[(n/64)%windowWords] |= 1 << (n % 64)
	return true
}
