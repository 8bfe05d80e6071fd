//go:build linux || darwin || windows

package tun

import (
	"errors"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

// fakeWG is a wireguard-go tun.Device scripted by the test, to drive the
// adapter's error handling without a kernel.
type fakeWG struct {
	mu       sync.Mutex
	writes   [][]int // packet lengths of each Write call
	writeErr func(bufs [][]byte) error
	readErr  error
	readN    int
	events   chan wgtun.Event
	closed   bool
}

// einval is how a kernel refuses a coalesced write.
var einval error = syscall.EINVAL

func newFakeWG() *fakeWG { return &fakeWG{events: make(chan wgtun.Event)} }

func (f *fakeWG) File() *os.File { return nil }
func (f *fakeWG) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	return f.readN, f.readErr
}

func (f *fakeWG) Write(bufs [][]byte, offset int) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var lens []int
	bytes := 0
	for _, b := range bufs {
		lens = append(lens, len(b)-offset)
		bytes += len(b) - offset
	}
	f.writes = append(f.writes, lens)
	if f.writeErr != nil {
		if err := f.writeErr(bufs); err != nil {
			return 0, err
		}
	}
	return bytes, nil // bytes, as wireguard-go's Linux device reports
}

func (f *fakeWG) MTU() (int, error)          { return 1400, nil }
func (f *fakeWG) Name() (string, error)      { return "fake0", nil }
func (f *fakeWG) Events() <-chan wgtun.Event { return f.events }
func (f *fakeWG) BatchSize() int             { return 128 }
func (f *fakeWG) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.closed {
		f.closed = true
		close(f.events)
	}
	return nil
}

func (f *fakeWG) takeWrites() [][]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := f.writes
	f.writes = nil
	return w
}

func packets(n int) [][]byte {
	bufs := make([][]byte, n)
	for i := range bufs {
		b := make([]byte, BufferSize)
		bufs[i] = b[:Offset+100+i]
	}
	return bufs
}

func TestNativeWriteCountsPackets(t *testing.T) {
	f := newFakeWG()
	d, err := newNativeDevice(f)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if n, err := d.Write(packets(3), Offset); n != 3 || err != nil {
		t.Fatalf("Write = %d, %v; want 3 packets (not bytes)", n, err)
	}
	if _, err := d.Write(packets(1), Offset-1); !errors.Is(err, ErrOffset) {
		t.Fatalf("Write with small offset = %v", err)
	}
}

// TestNativeGRORefusalFallsBackToSinglePackets: a kernel that refuses a
// coalesced write with EINVAL gets packets one by one from then on.
func TestNativeGRORefusalFallsBackToSinglePackets(t *testing.T) {
	if !groRefused(einval) {
		t.Skip("no write coalescing on this OS")
	}
	f := newFakeWG()
	f.writeErr = func(bufs [][]byte) error {
		if len(bufs) > 1 {
			return einval
		}
		return nil
	}
	d, err := newNativeDevice(f)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	n, err := d.Write(packets(4), Offset)
	if err == nil || !errors.Is(err, einval) || n != 0 {
		t.Fatalf("first Write = %d, %v; want the refusal reported", n, err)
	}
	if w := f.takeWrites(); len(w) != 1 || len(w[0]) != 4 {
		t.Fatalf("writes %v", w)
	}
	n, err = d.Write(packets(4), Offset)
	if err != nil || n != 4 {
		t.Fatalf("second Write = %d, %v", n, err)
	}
	if w := f.takeWrites(); len(w) != 4 || len(w[0]) != 1 || w[3][0] != 103 {
		t.Fatalf("writes after fallback %v, want 4 single-packet writes in order", w)
	}
}

func TestNativeErrorsMapped(t *testing.T) {
	f := newFakeWG()
	d, err := newNativeDevice(f)
	if err != nil {
		t.Fatal(err)
	}
	bufs := packets(4)
	sizes := make([]int, 4)

	f.readN, f.readErr = 2, wgtun.ErrTooManySegments
	if n, err := d.Read(bufs, sizes, Offset); n != 2 || !errors.Is(err, ErrTooManySegments) {
		t.Fatalf("Read = %d, %v; want 2 packets and ErrTooManySegments", n, err)
	}
	f.readN, f.readErr = 0, &os.PathError{Op: "read", Path: "/dev/net/tun", Err: os.ErrClosed}
	if _, err := d.Read(bufs, sizes, Offset); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read of closed file = %v; want ErrClosed", err)
	}
	if _, err := d.Read(bufs, sizes[:1], Offset); err == nil {
		t.Fatal("Read with short sizes succeeded")
	}

	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	// After Close any error from below is ErrClosed; so are later calls.
	f.readN, f.readErr = 0, errors.New("netlink socket closed")
	if _, err := d.Read(bufs, sizes, Offset); !errors.Is(err, ErrClosed) {
		t.Fatalf("Read after Close = %v", err)
	}
	if _, err := d.Write(bufs, Offset); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Write after Close = %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close = %v", err)
	}
}

// TestNativeDrainsEvents: wireguard-go's event listener blocks once its
// channel is full; the adapter must keep consuming, and stop with Close.
func TestNativeDrainsEvents(t *testing.T) {
	f := newFakeWG()
	d, err := newNativeDevice(f)
	if err != nil {
		t.Fatal(err)
	}
	for range 20 { // unbuffered: each send needs the drain goroutine
		f.events <- wgtun.EventUp
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.drained:
	default:
		t.Fatal("Close returned before the drain goroutine ended")
	}
}

// TestNativeClampsCapacity: wireguard-go's GRO grows packets up to the
// buffer's capacity, so capacity past 64 KiB must not reach it.
func TestNativeClampsCapacity(t *testing.T) {
	f := newFakeWG()
	var caps []int
	f.writeErr = func(bufs [][]byte) error {
		for _, b := range bufs {
			caps = append(caps, cap(b))
		}
		return nil
	}
	d, err := newNativeDevice(f)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	big := make([]byte, 2*BufferSize)
	bufs := [][]byte{big[:Offset+40], make([]byte, Offset+40, BufferSize)}
	if _, err := d.Write(bufs, Offset); err != nil {
		t.Fatal(err)
	}
	if caps[0] != BufferSize || caps[1] != BufferSize {
		t.Fatalf("capacities seen by wireguard-go %v, want %d", caps, BufferSize)
	}
	if _, err := d.Write([][]byte{big[:Offset+MaxPacketSize+1]}, Offset); err == nil {
		t.Fatal("Write of an oversized packet succeeded")
	}
}
