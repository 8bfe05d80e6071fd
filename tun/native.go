//go:build linux || darwin || windows

package tun

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	wgtun "golang.zx2c4.com/wireguard/tun"
)

// nativeDevice adapts a wireguard-go tun.Device to Device. It adds what
// wireguard-go leaves to its callers: a uniform offset check, ErrClosed,
// Write safe for concurrent use (wintun's Write has no lock), a packet count
// from Write (Linux returns bytes), draining Events (wireguard-go's Linux
// listener blocks once five events are unread), and the GRO write fallback.
type nativeDevice struct {
	dev  wgtun.Device
	name string

	// gso is the device file for ReadGSO and WriteGSO, when GSO
	// passthrough works on this device (Linux with offloads); else nil.
	gso *os.File

	writeMu sync.Mutex // serialises Write; guards nothing else

	// perPacket makes Write hand packets to the OS one at a time, so the
	// kernel never sees a coalesced superpacket. Set, never cleared, after
	// the kernel refused a GRO write (see Open).
	perPacket atomic.Bool

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
	drained   chan struct{} // closed when the Events drain goroutine returns
}

var _ GSODevice = (*nativeDevice)(nil)

func newNativeDevice(dev wgtun.Device) (*nativeDevice, error) {
	name, err := dev.Name()
	if err != nil {
		dev.Close()
		return nil, fmt.Errorf("tun name: %w", err)
	}
	d := &nativeDevice{dev: dev, name: name, drained: make(chan struct{})}
	go d.drainEvents()
	return d, nil
}

// drainEvents consumes link up/down and MTU events nobody here acts on:
// twoway's Config sets the MTU and the tunnel learns about a dead link from
// its own I/O. It returns when wireguard-go closes the channel in Close.
func (d *nativeDevice) drainEvents() {
	defer close(d.drained)
	for range d.dev.Events() {
	}
}

func (d *nativeDevice) Read(bufs [][]byte, sizes []int, offset int) (int, error) {
	if err := CheckRead(bufs, sizes, offset); err != nil {
		return 0, err
	}
	if d.closed.Load() {
		return 0, ErrClosed
	}
	n, err := d.dev.Read(bufs, sizes, offset)
	if err == nil {
		return n, nil
	}
	// After Close wireguard-go can surface a netlink-listener error
	// instead of the closed file; either way the device is gone.
	if d.closed.Load() || errors.Is(err, os.ErrClosed) {
		return 0, ErrClosed
	}
	if errors.Is(err, wgtun.ErrTooManySegments) {
		return n, ErrTooManySegments
	}
	return n, fmt.Errorf("tun read: %w", err)
}

func (d *nativeDevice) Write(bufs [][]byte, offset int) (int, error) {
	if err := CheckBuffers(bufs, offset); err != nil {
		return 0, err
	}
	// wireguard-go's GRO coalesces up to each buffer's capacity and
	// would write length fields that overflow past 64 KiB; clamp it.
	for i, b := range bufs {
		if len(b)-offset > MaxPacketSize {
			return 0, fmt.Errorf("tun write: %d-byte packet larger than %d", len(b)-offset, MaxPacketSize)
		}
		if cap(b)-offset > MaxPacketSize {
			bufs[i] = b[: len(b) : offset+MaxPacketSize]
		}
	}
	d.writeMu.Lock()
	defer d.writeMu.Unlock()
	if d.closed.Load() {
		return 0, ErrClosed
	}
	if len(bufs) > 1 && d.perPacket.Load() {
		var errs error
		written := 0
		for i := range bufs {
			_, err := d.dev.Write(bufs[i:i+1], offset)
			if err != nil {
				if d.isClosed(err) {
					return written, ErrClosed
				}
				errs = err // keep the last; every packet is independent
				continue
			}
			written++
		}
		if errs != nil {
			return written, fmt.Errorf("tun write: %d of %d packets: %w", len(bufs)-written, len(bufs), errs)
		}
		return written, nil
	}
	n, err := d.dev.Write(bufs, offset)
	if err == nil {
		// Linux reports bytes, darwin and windows packets; all of
		// them only succeed when every packet went out.
		return len(bufs), nil
	}
	if d.isClosed(err) {
		return 0, ErrClosed
	}
	if len(bufs) > 1 && groRefused(err) && d.perPacket.CompareAndSwap(false, true) {
		return 0, fmt.Errorf("tun write: kernel refused a coalesced (GRO) write, some packets of this batch were lost; writing packets one by one from now on: %w", err)
	}
	if !nativeWriteCountsPackets {
		n = 0 // bytes, not packets: all we know is that not all went out
	}
	return n, fmt.Errorf("tun write: %w", err)
}

func (d *nativeDevice) isClosed(err error) bool {
	return d.closed.Load() || errors.Is(err, os.ErrClosed)
}

func (d *nativeDevice) BatchSize() int { return d.dev.BatchSize() }

func (d *nativeDevice) MTU() (int, error) {
	mtu, err := d.dev.MTU()
	if err != nil {
		return 0, fmt.Errorf("tun %s mtu: %w", d.name, err)
	}
	return mtu, nil
}

func (d *nativeDevice) Name() (string, error) { return d.name, nil }

// Close closes the device and waits for the Events drain goroutine, so no
// goroutine of ours outlives a successful Close.
func (d *nativeDevice) Close() error {
	d.closeOnce.Do(func() {
		d.closed.Store(true)
		if err := d.dev.Close(); err != nil {
			// wireguard-go may not have stopped its listeners, and
			// so may never close Events: report instead of hanging.
			d.closeErr = fmt.Errorf("close tun %s: %w", d.name, err)
			return
		}
		<-d.drained
	})
	return d.closeErr
}
