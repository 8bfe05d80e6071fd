package tuntest

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/twoway/twoway/tun"
)

func newBufs(n int) ([][]byte, []int) {
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = make([]byte, tun.BufferSize)
	}
	return bufs, make([]int, n)
}

// writeBufs lays packets out as a tunnel would: tun.Offset bytes of headroom,
// then the packet, in buffers with the capacity of a whole pooled buffer.
func writeBufs(pkts ...[]byte) [][]byte {
	bufs := make([][]byte, len(pkts))
	for i, p := range pkts {
		b := make([]byte, tun.BufferSize)
		copy(b[tun.Offset:], p)
		bufs[i] = b[:tun.Offset+len(p)]
	}
	return bufs
}

func testPackets(n int) [][]byte {
	src := netip.MustParseAddrPort("198.18.0.2:4000")
	dst := netip.MustParseAddrPort("198.18.1.1:53")
	pkts := make([][]byte, n)
	for i := range pkts {
		pkts[i] = UDP(src, dst, []byte{byte(i), 'x', 'y'})
	}
	return pkts
}

func TestReadReturnsQueuedPacketsAsOneBatch(t *testing.T) {
	d := New(Options{BatchSize: 4})
	defer d.Close()
	pkts := testPackets(6)
	for _, p := range pkts {
		d.Inbound <- p
	}
	bufs, sizes := newBufs(8)

	// BatchSize caps the batch even with more buffers.
	n, err := d.Read(bufs, sizes, tun.Offset)
	if err != nil || n != 4 {
		t.Fatalf("Read = %d, %v; want 4 packets", n, err)
	}
	for i := range n {
		if got := bufs[i][tun.Offset : tun.Offset+sizes[i]]; !bytes.Equal(got, pkts[i]) {
			t.Errorf("packet %d = %x, want %x", i, got, pkts[i])
		}
	}
	// The headroom is left alone.
	if !bytes.Equal(bufs[0][:tun.Offset], make([]byte, tun.Offset)) {
		t.Errorf("Read wrote into the headroom")
	}
	// Fewer buffers cap it too; a larger offset is honoured.
	n, err = d.Read(bufs[:1], sizes, tun.Offset+4)
	if err != nil || n != 1 || !bytes.Equal(bufs[0][tun.Offset+4:tun.Offset+4+sizes[0]], pkts[4]) {
		t.Fatalf("Read(1 buffer, offset+4) = %d, %v", n, err)
	}
	// Read takes what is queued and does not wait for a full batch.
	n, err = d.Read(bufs, sizes, tun.Offset)
	if err != nil || n != 1 || !bytes.Equal(bufs[0][tun.Offset:tun.Offset+sizes[0]], pkts[5]) {
		t.Fatalf("Read(last) = %d, %v", n, err)
	}
}

func TestWriteCopiesEachPacketInOrder(t *testing.T) {
	d := New(Options{})
	defer d.Close()
	pkts := testPackets(3)
	bufs := writeBufs(pkts...)
	n, err := d.Write(bufs, tun.Offset)
	if err != nil || n != 3 {
		t.Fatalf("Write = %d, %v", n, err)
	}
	// Copies: changing the caller's buffers afterwards changes nothing.
	for _, b := range bufs {
		clear(b)
	}
	for i := range pkts {
		if got := <-d.Outbound; !bytes.Equal(got, pkts[i]) {
			t.Errorf("packet %d = %x, want %x", i, got, pkts[i])
		}
	}
}

func TestOffsetAndBufferRules(t *testing.T) {
	d := New(Options{})
	defer d.Close()
	bufs, sizes := newBufs(2)
	if _, err := d.Read(bufs, sizes, tun.Offset-1); !errors.Is(err, tun.ErrOffset) {
		t.Errorf("Read with small offset: %v, want ErrOffset", err)
	}
	if _, err := d.Write(writeBufs(testPackets(1)...), 4); !errors.Is(err, tun.ErrOffset) {
		t.Errorf("Write with small offset: %v, want ErrOffset", err)
	}
	if _, err := d.Write([][]byte{make([]byte, tun.Offset)}, tun.Offset); !errors.Is(err, tun.ErrOffset) {
		t.Errorf("Write of an empty packet: %v, want ErrOffset", err)
	}
	if _, err := d.Read(bufs, sizes[:1], tun.Offset); err == nil {
		t.Errorf("Read with len(sizes) < len(bufs) succeeded")
	}
	// A packet larger than its buffer is dropped and reported.
	d.Inbound <- make([]byte, 100)
	small := [][]byte{make([]byte, tun.Offset+50)}
	if n, err := d.Read(small, sizes, tun.Offset); n != 0 || !errors.Is(err, io.ErrShortBuffer) {
		t.Errorf("Read of oversized packet = %d, %v; want io.ErrShortBuffer", n, err)
	}
}

func TestCloseUnblocksReadAndWrite(t *testing.T) {
	d := New(Options{Queue: 1})
	bufs, sizes := newBufs(1)
	readErr := make(chan error)
	go func() {
		_, err := d.Read(bufs, sizes, tun.Offset)
		readErr <- err
	}()
	// Fill Outbound so the second Write blocks.
	pkt := writeBufs(testPackets(1)...)
	if _, err := d.Write(pkt, tun.Offset); err != nil {
		t.Fatal(err)
	}
	writeErr := make(chan error)
	go func() {
		_, err := d.Write(pkt, tun.Offset)
		writeErr <- err
	}()

	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	for name, ch := range map[string]chan error{"Read": readErr, "Write": writeErr} {
		err := <-ch
		if !errors.Is(err, tun.ErrClosed) || !errors.Is(err, os.ErrClosed) || !errors.Is(err, net.ErrClosed) {
			t.Errorf("%s after Close: %v; want ErrClosed matching os.ErrClosed and net.ErrClosed", name, err)
		}
	}
	if _, err := d.Read(bufs, sizes, tun.Offset); !errors.Is(err, tun.ErrClosed) {
		t.Errorf("Read on closed device: %v", err)
	}
	if err := d.Inject(testPackets(1)[0]); !errors.Is(err, tun.ErrClosed) {
		t.Errorf("Inject on closed device: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	select {
	case <-d.Closed():
	default:
		t.Error("Closed() not closed after Close")
	}
}

func TestClosedInboundEndsRead(t *testing.T) {
	d := New(Options{})
	d.Inbound <- testPackets(1)[0]
	close(d.Inbound)
	bufs, sizes := newBufs(4)
	if n, err := d.Read(bufs, sizes, tun.Offset); n != 1 || err != nil {
		t.Fatalf("Read = %d, %v; want the queued packet first", n, err)
	}
	if _, err := d.Read(bufs, sizes, tun.Offset); !errors.Is(err, tun.ErrClosed) {
		t.Fatalf("Read after Inbound closed: %v", err)
	}
}

func TestConcurrentReadIsReported(t *testing.T) {
	d := New(Options{})
	defer d.Close()
	bufs, sizes := newBufs(1)
	// Hold the lock a blocked Read holds, as a Read in progress would.
	d.readMu.Lock()
	_, err := d.Read(bufs, sizes, tun.Offset)
	d.readMu.Unlock()
	if !errors.Is(err, ErrConcurrentRead) {
		t.Fatalf("Read during another Read: %v, want ErrConcurrentRead", err)
	}
	d.Inbound <- testPackets(1)[0]
	if n, err := d.Read(bufs, sizes, tun.Offset); n != 1 || err != nil {
		t.Fatalf("Read afterwards = %d, %v", n, err)
	}
}

// TestNoAllocationsPerPacket shows the steady state of a batched flow through
// the fake allocates nothing: Read copies into the caller's buffers and Write
// reuses recycled ones.
func TestNoAllocationsPerPacket(t *testing.T) {
	const batch = 16
	d := New(Options{BatchSize: batch})
	defer d.Close()
	pkts := testPackets(batch)
	rbufs, sizes := newBufs(batch)
	wbufs := writeBufs(pkts...)
	var got int
	allocs := testing.AllocsPerRun(200, func() {
		for _, p := range pkts {
			d.Inbound <- p
		}
		n, err := d.Read(rbufs, sizes, tun.Offset)
		if err != nil || n != batch {
			t.Fatalf("Read = %d, %v", n, err)
		}
		if n, err := d.Write(wbufs, tun.Offset); err != nil || n != batch {
			t.Fatalf("Write = %d, %v", n, err)
		}
		for range batch {
			p := <-d.Outbound
			got += len(p)
			d.Recycle(p)
		}
	})
	if allocs != 0 {
		t.Errorf("%.1f allocations per batch of %d packets, want 0", allocs, batch)
	}
	if got == 0 {
		t.Error("no packets went through")
	}
}
