// Package tuntest is an in-memory tun.Device for tests, plus builders and a
// parser for the IPv4/IPv6 TCP, UDP and ICMP packets that go through it.
//
// A test plays the kernel: it sends packets on Inbound (what the tunnel then
// Reads, as if routed into the TUN) and receives what the tunnel Wrote from
// Outbound.
package tuntest

import (
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/twoway/twoway/tun"
)

// Options shapes a Device; zero values pick the defaults.
type Options struct {
	Name      string // default "tuntest0"
	MTU       int    // default 1420
	BatchSize int    // default tun.MaxBatchSize (128), like Linux with offloads
	Queue     int    // capacity of Inbound and Outbound; default 1024
	// GSO makes the device a tun.GSODevice that can pass superpackets
	// through. Every item on Inbound and Outbound then starts with a
	// tun.GSOLen-byte descriptor (see GSOPacket); Read refuses an
	// inbound superpacket with ErrNeedsSplit, as this fake cannot cut it.
	GSO bool
}

// Device is an in-memory tun.Device. Read and Write follow the tun.Device
// contract exactly (offset at least tun.Offset, batches up to BatchSize,
// ErrClosed after Close) so that code passing here also passes on a real
// device. Unlike the real device it reports a concurrent Read as an error, to
// catch a broken one-reader rule in tests.
type Device struct {
	// Inbound carries packets into the device: each one sent here is
	// returned by a later Read, in order. Read copies it, so the sender
	// may reuse the slice once Read returned it. Close does not close
	// Inbound; a test may close it, after which Read returns ErrClosed.
	Inbound chan []byte

	// Outbound carries a copy of every packet written, in order. A test
	// that cares about allocations hands each one back with Recycle.
	Outbound chan []byte

	name  string
	mtu   int
	batch int
	gso   bool

	free chan []byte // recycled Outbound buffers

	readMu  sync.Mutex // held by the one Read in progress
	writeMu sync.Mutex // serialises Write so each batch stays in order

	done      chan struct{}
	closeOnce sync.Once
}

var _ tun.Device = (*Device)(nil)

// Errors specific to the fake.
var (
	// ErrConcurrentRead is returned when Read is called while another
	// Read is in progress, which the tun.Device contract forbids.
	ErrConcurrentRead = errors.New("tuntest: concurrent Read")

	// ErrNeedsSplit is returned by Read on a GSO device for an inbound
	// superpacket: a real device would cut it into packets, this fake
	// drops it, so that a test sees which read path the code took.
	ErrNeedsSplit = errors.New("tuntest: superpacket read without ReadGSO")
)

var _ tun.GSODevice = (*Device)(nil)

// GSOPacket is pkt with descriptor g in front: the form of an item on a GSO
// device's Inbound and Outbound.
func GSOPacket(pkt []byte, g tun.GSO) []byte {
	b := make([]byte, tun.GSOLen+len(pkt))
	tun.PutGSO(b, tun.GSOLen, g)
	copy(b[tun.GSOLen:], pkt)
	return b
}

// New returns an open Device.
func New(opts Options) *Device {
	if opts.Name == "" {
		opts.Name = "tuntest0"
	}
	if opts.MTU == 0 {
		opts.MTU = 1420
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = tun.MaxBatchSize
	}
	if opts.Queue <= 0 {
		opts.Queue = 1024
	}
	return &Device{
		Inbound:  make(chan []byte, opts.Queue),
		Outbound: make(chan []byte, opts.Queue),
		name:     opts.Name,
		mtu:      opts.MTU,
		batch:    opts.BatchSize,
		gso:      opts.GSO,
		free:     make(chan []byte, opts.Queue),
		done:     make(chan struct{}),
	}
}

// Inject sends pkt on Inbound, or returns tun.ErrClosed once the device is
// closed instead of blocking on a full queue.
func (d *Device) Inject(pkt []byte) error {
	select {
	case <-d.done:
		return tun.ErrClosed
	default:
	}
	select {
	case d.Inbound <- pkt:
		return nil
	case <-d.done:
		return tun.ErrClosed
	}
}

// Recycle hands a packet received from Outbound back for reuse by Write, so
// a steady flow does not allocate. Optional.
func (d *Device) Recycle(pkt []byte) {
	select {
	case d.free <- pkt[:0]:
	default: // full: let the GC have it
	}
}

// Read blocks until a packet is on Inbound, then returns it together with
// whatever else is queued, up to min(len(bufs), BatchSize()) packets.
// A packet that does not fit its buffer is dropped and reported with
// io.ErrShortBuffer after the packets read so far.
func (d *Device) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if err := tun.CheckRead(bufs, sizes, offset); err != nil {
		return 0, err
	}
	if !d.readMu.TryLock() {
		return 0, ErrConcurrentRead
	}
	defer d.readMu.Unlock()
	if d.closed() {
		return 0, tun.ErrClosed
	}
	var first []byte
	select {
	case p, ok := <-d.Inbound:
		if !ok {
			return 0, tun.ErrClosed
		}
		first = p
	case <-d.done:
		return 0, tun.ErrClosed
	}
	n, err := d.put(bufs, sizes, offset, 0, first)
	if err != nil {
		return n, err
	}
	limit := min(len(bufs), d.batch)
	for n < limit {
		select {
		case p, ok := <-d.Inbound:
			if !ok {
				return n, nil // the next Read reports the closure
			}
			if n, err = d.put(bufs, sizes, offset, n, p); err != nil {
				return n, err
			}
		default:
			return n, nil
		}
	}
	return n, nil
}

// put copies p into bufs[n] and returns the new count.
func (d *Device) put(bufs [][]byte, sizes []int, offset, n int, p []byte) (int, error) {
	if d.gso {
		if len(p) < tun.GSOLen || tun.GetGSO(p, tun.GSOLen).Kind != tun.GSONone {
			return n, ErrNeedsSplit
		}
		p = p[tun.GSOLen:]
	}
	dst := bufs[n][offset:]
	if len(p) > len(dst) {
		return n, fmt.Errorf("tuntest: %d-byte packet does not fit a %d-byte buffer: %w", len(p), len(dst), io.ErrShortBuffer)
	}
	sizes[n] = copy(dst, p)
	return n + 1, nil
}

// Write sends a copy of each bufs[i][offset:] on Outbound, blocking while
// Outbound is full. It returns the number of packets sent.
func (d *Device) Write(bufs [][]byte, offset int) (int, error) {
	if err := d.beginWrite(bufs, offset); err != nil {
		return 0, err
	}
	defer d.writeMu.Unlock()
	for i, b := range bufs {
		p := b[offset:]
		if len(p) > tun.MaxPacketSize {
			return i, fmt.Errorf("tuntest: %d-byte packet larger than %d", len(p), tun.MaxPacketSize)
		}
		c := d.buffer(len(p) + tun.GSOLen)
		if d.gso {
			c = append(c, byte(tun.GSONone), 0, 0)
		}
		c = append(c, p...)
		select {
		case d.Outbound <- c:
		case <-d.done:
			return i, tun.ErrClosed
		}
	}
	return len(bufs), nil
}

// CanGSO reports Options.GSO.
func (d *Device) CanGSO() bool { return d.gso }

// ReadGSO blocks until an item is on Inbound and returns its packet with its
// descriptor in front.
func (d *Device) ReadGSO(buf []byte, offset int) (int, error) {
	if !d.gso {
		return 0, tun.ErrUnsupported
	}
	if offset < tun.Offset || len(buf) < offset+tun.MaxPacketSize {
		return 0, tun.ErrOffset
	}
	if !d.readMu.TryLock() {
		return 0, ErrConcurrentRead
	}
	defer d.readMu.Unlock()
	if d.closed() {
		return 0, tun.ErrClosed
	}
	select {
	case p, ok := <-d.Inbound:
		if !ok {
			return 0, tun.ErrClosed
		}
		if len(p) <= tun.GSOLen {
			return 0, fmt.Errorf("tuntest: inbound item of %d bytes has no packet after its descriptor", len(p))
		}
		return copy(buf[offset-tun.GSOLen:], p) - tun.GSOLen, nil
	case <-d.done:
		return 0, tun.ErrClosed
	}
}

// WriteGSO checks each packet's descriptor as the kernel would
// (tun.CheckGSO) and sends descriptor and packet on Outbound. A packet that
// fails the check is not sent; the error reports the last such one.
func (d *Device) WriteGSO(bufs [][]byte, offset int) (int, error) {
	if !d.gso {
		return 0, tun.ErrUnsupported
	}
	if err := d.beginWrite(bufs, offset); err != nil {
		return 0, err
	}
	defer d.writeMu.Unlock()
	var errs error
	written := 0
	for _, b := range bufs {
		p := b[offset:]
		if err := tun.CheckGSO(p, tun.GetGSO(b, offset)); err != nil {
			errs = err
			continue
		}
		c := append(d.buffer(len(p)+tun.GSOLen), b[offset-tun.GSOLen:]...)
		select {
		case d.Outbound <- c:
			written++
		case <-d.done:
			return written, tun.ErrClosed
		}
	}
	if errs != nil {
		return written, fmt.Errorf("tuntest: %d of %d packets: %w", len(bufs)-written, len(bufs), errs)
	}
	return written, nil
}

// beginWrite checks the buffers and takes writeMu, which the caller
// releases; on error it holds nothing.
func (d *Device) beginWrite(bufs [][]byte, offset int) error {
	if err := tun.CheckBuffers(bufs, offset); err != nil {
		return err
	}
	d.writeMu.Lock()
	if d.closed() {
		d.writeMu.Unlock()
		return tun.ErrClosed
	}
	return nil
}

// buffer returns an empty slice with room for n bytes, recycled if possible.
func (d *Device) buffer(n int) []byte {
	for {
		select {
		case b := <-d.free:
			if cap(b) >= n {
				return b[:0]
			}
			// Too small for this packet: drop it and try the next.
		default:
			return make([]byte, 0, max(n, 2048))
		}
	}
}

// BatchSize returns the batch size from Options.
func (d *Device) BatchSize() int { return d.batch }

// MTU returns the MTU from Options.
func (d *Device) MTU() (int, error) { return d.mtu, nil }

// Name returns the name from Options.
func (d *Device) Name() (string, error) { return d.name, nil }

// Close unblocks Read and Write with tun.ErrClosed. Idempotent.
func (d *Device) Close() error {
	d.closeOnce.Do(func() { close(d.done) })
	return nil
}

// Closed is closed when Close has been called, for tests that wait for the
// code under test to close its device.
func (d *Device) Closed() <-chan struct{} { return d.done }

func (d *Device) closed() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}
