package tunnel

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/twoway/twoway/datagram"
)

// The UDP data path (docs/PROTOCOL.md §8): what both sides share. The TLS
// session stays the control plane; when both sides announce capUDP, VPN
// packets may also travel as datagrams sealed under keys from the session's
// TLS exporter (package datagram). The client decides which path carries
// them (it probes; see udp_client.go) and says so with a path message; the
// gateway accepts packets from either path at any time and sends on the
// one the client last named (udp_gateway.go). Both paths feed the same
// router peer, so policy, anti-spoofing and counters are one.

// capUDP is the hello capability for the UDP data path.
const capUDP = "udp"

// msgPath is the client's word on which path carries the session's
// packets: Path is pathUDP or pathTCP.
const msgPath = "path"

// Path names, in path messages and in status.
const (
	pathTCP = "tcp"
	pathUDP = "udp"
)

// udpHello is what each side's hello carries for the UDP path: the
// receiver index it assigned to the session (datagrams to it carry this)
// and, from the gateway, its UDP port.
type udpHello struct {
	Receiver uint32 `json:"receiver"`
	Port     int    `json:"port,omitempty"`
}

// udpKeys are one side's keys of a session's UDP path. Each direction
// moves to a new epoch on its own: the sender announces the epoch (rekey),
// the receiver installs its key and says so (rekey_ack), and only then
// does the sender seal under it; the receiver keeps the previous key for
// the datagrams still in flight (datagram.Opener).
type udpKeys struct {
	exp          datagram.Exporter
	session      string
	client       bool
	mine, theirs uint32 // receiver indexes: this side's, the peer's

	seal    atomic.Pointer[datagram.Sealer]
	open    *datagram.Opener
	pending atomic.Bool // a rekey of our sending direction awaits its ack

	mu        sync.Mutex
	sendEpoch uint32 // guarded by mu
	recvEpoch uint32 // guarded by mu
}

// udpRekeyAfter is the number of datagrams after which a side rekeys its
// sending direction (tests lower it).
var udpRekeyAfter uint64 = datagram.RekeyAfter

// newUDPKeys derives epoch 0's keys of session from its TLS connection's
// exporter; mine is the receiver index this side assigned, theirs the
// peer's.
func newUDPKeys(exp datagram.Exporter, session string, client bool, mine, theirs uint32) (*udpKeys, error) {
	k := &udpKeys{exp: exp, session: session, client: client, mine: mine, theirs: theirs}
	keys, err := k.derive(0)
	if err != nil {
		return nil, err
	}
	defer clear(keys.Send[:])
	defer clear(keys.Recv[:])
	s, err := datagram.NewSealer(keys, theirs)
	if err != nil {
		return nil, err
	}
	if k.open, err = datagram.NewOpener(keys, mine); err != nil {
		return nil, err
	}
	k.seal.Store(s)
	return k, nil
}

func (k *udpKeys) derive(epoch uint32) (datagram.Keys, error) {
	return datagram.DeriveKeys(k.exp, []byte(k.session), epoch, k.client)
}

func (k *udpKeys) sealer() *datagram.Sealer { return k.seal.Load() }

// startRekey reports, once per rekey, that the sending key has sealed
// enough and which epoch to announce.
func (k *udpKeys) startRekey() (uint32, bool) {
	if k.seal.Load().Sealed() < udpRekeyAfter || !k.pending.CompareAndSwap(false, true) {
		return 0, false
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.sendEpoch + 1, true
}

// peerRekeyed installs the receiving key of the epoch the peer announced;
// only the next epoch is accepted.
func (k *udpKeys) peerRekeyed(epoch uint32) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if epoch != k.recvEpoch+1 {
		return fmt.Errorf("%w: rekey to epoch %d after %d", ErrBadControl, epoch, k.recvEpoch)
	}
	keys, err := k.derive(epoch)
	if err != nil {
		return err
	}
	defer clear(keys.Send[:])
	defer clear(keys.Recv[:])
	if err := k.open.Rekey(keys); err != nil {
		return err
	}
	k.recvEpoch = epoch
	return nil
}

// rekeyAcked moves the sending direction to the epoch the peer can now
// open.
func (k *udpKeys) rekeyAcked(epoch uint32) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.pending.Load() || epoch != k.sendEpoch+1 {
		return fmt.Errorf("%w: rekey_ack for epoch %d, not asked", ErrBadControl, epoch)
	}
	keys, err := k.derive(epoch)
	if err != nil {
		return err
	}
	defer clear(keys.Send[:])
	defer clear(keys.Recv[:])
	s, err := datagram.NewSealer(keys, k.theirs)
	if err != nil {
		return err
	}
	k.seal.Store(s)
	k.sendEpoch = epoch
	k.pending.Store(false)
	return nil
}

// epochs returns the current epochs of both directions.
func (k *udpKeys) epochs() (send, recv uint32) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.sendEpoch, k.recvEpoch
}

// Control messages of the rekey (both directions): rekey announces the
// sender's next epoch, rekey_ack says its key is installed.
const (
	msgRekey    = "rekey"
	msgRekeyAck = "rekey_ack"
)

// rekeyControl handles a rekey or rekey_ack message for keys (nil: the
// session has no UDP path); it reports whether m was one.
func (s *session) rekeyControl(keys *udpKeys, m *controlMsg) bool {
	switch m.Type {
	case msgRekey, msgRekeyAck:
	default:
		return false
	}
	if keys == nil {
		s.log.Debug("rekey message without a UDP path", "type", m.Type)
		return true
	}
	var err error
	if m.Type == msgRekey {
		if err = keys.peerRekeyed(m.Epoch); err == nil {
			err = s.sendControl(&controlMsg{Type: msgRekeyAck, Epoch: m.Epoch})
		}
	} else {
		err = keys.rekeyAcked(m.Epoch)
	}
	if err != nil {
		s.log.Warn("UDP rekey failed", "type", m.Type, "epoch", m.Epoch, "err", err)
		return true
	}
	s.log.Debug("UDP key epoch", "type", m.Type, "epoch", m.Epoch)
	return true
}

// announceRekey sends the rekey message when keys asks for one. It may
// block for up to a second on the control stream.
func (s *session) announceRekey(keys *udpKeys) {
	if epoch, ok := keys.startRekey(); ok {
		if err := s.sendControlTimeout(&controlMsg{Type: msgRekey, Epoch: epoch}, time.Second); err != nil {
			s.log.Debug("rekey message not sent", "err", err)
			keys.pending.Store(false) // try again later
		}
	}
}

// newReceiverIndex picks a random non-zero index (0 marks "none").
func newReceiverIndex() uint32 {
	for {
		var b [4]byte
		_, _ = rand.Read(b[:])
		if r := binary.BigEndian.Uint32(b[:]); r != 0 {
			return r
		}
	}
}

// sealedBatch is a batch of datagrams sealed back to back into one slab.
// Each element of bufs is a slice of the slab whose capacity runs to the
// slab's end: conn.StdNetBind coalesces a run of equal-sized datagrams for
// UDP GSO by appending each to the first one's capacity, which here is
// where each one already lies, so the coalescing copies nothing.
type sealedBatch struct {
	slab []byte
	bufs [][]byte
}

// sealedBatches keeps slabs between batches: a gateway has a writer per
// session, but few of them send at the same moment.
var sealedBatches = sync.Pool{New: func() any { return &sealedBatch{slab: make([]byte, 0, 2*packetBatchBytes)} }}

// seal seals each of pkts as a datagram of type typ.
func (b *sealedBatch) seal(s *datagram.Sealer, typ byte, pkts [][]byte) error {
	need := 0
	for _, p := range pkts {
		need += len(p) + datagram.Overhead
	}
	if cap(b.slab) < need {
		b.slab = make([]byte, 0, need)
	}
	b.slab = b.slab[:0]
	b.bufs = b.bufs[:0]
	for _, p := range pkts {
		start := len(b.slab)
		var err error
		if b.slab, err = s.Seal(b.slab, typ, p); err != nil {
			return err
		}
		b.bufs = append(b.bufs, b.slab[start:len(b.slab)])
	}
	return nil
}

// send hands the batch to bind in chunks of its batch size.
func (b *sealedBatch) send(bind conn.Bind, ep conn.Endpoint) error {
	bufs := b.bufs
	for len(bufs) > 0 {
		n := min(len(bufs), bind.BatchSize())
		if err := bind.Send(bufs[:n], ep); err != nil {
			return err
		}
		bufs = bufs[n:]
	}
	return nil
}

// release returns the batch to the pool.
func (b *sealedBatch) release() {
	clear(b.bufs)
	b.bufs = b.bufs[:0]
	sealedBatches.Put(b)
}

// udpRecvBufs allocates a receive function's buffers: n datagrams of up to
// size bytes, the last two of room for a whole GRO-coalesced read (64 KiB),
// which conn.StdNetBind reads into and splits into the others.
func udpRecvBufs(n, size int) [][]byte {
	bufs := make([][]byte, n)
	for i := range bufs {
		if i >= n-2 {
			bufs[i] = make([]byte, 1<<16)
		} else {
			bufs[i] = make([]byte, size)
		}
	}
	return bufs
}

// udpDatagramMax is the largest datagram either side accepts: a packet of
// the largest MTU plus the record layer's overhead.
func udpDatagramMax(mtu int) int { return mtu + datagram.Overhead }

// errNoUDPPath is the answer of a send with no usable UDP path.
var errNoUDPPath = errors.New("no UDP path")

// probePayload is a probe's payload: a sequence number the reply echoes.
func probePayload(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

// probeSeq reads a probe reply's sequence number.
func probeSeq(p []byte) (uint64, error) {
	if len(p) != 8 {
		return 0, fmt.Errorf("probe reply of %d bytes", len(p))
	}
	return binary.BigEndian.Uint64(p), nil
}
