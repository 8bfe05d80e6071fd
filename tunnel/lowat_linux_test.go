package tunnel

import (
	"net"
	"testing"

	"golang.org/x/sys/unix"
)

// TestNotSentLowat: both ends of a session bound the unsent bytes the
// kernel holds (Tuning.NotSentLowat), so that the queue stays where twoway
// manages it.
func TestNotSentLowat(t *testing.T) {
	get := func(c net.Conn) int { return kernelLowat(t, c) }
	for _, tc := range []struct {
		lowat, want int
	}{{0, DefaultTuning().NotSentLowat}, {64 << 10, 64 << 10}} {
		f := newFixture(t)
		cfg := f.serverConfig(nil)
		cfg.Tuning.NotSentLowat = tc.lowat
		srv := startServer(t, cfg)
		cs := connectSession(t, f, srv.Addr().String())
		srv.mu.Lock()
		var gw *serverSession
		for _, ss := range srv.sessions {
			gw = ss
		}
		srv.mu.Unlock()
		if got := get(gw.conn.raw); got != tc.want {
			t.Errorf("gateway (Tuning %d): TCP_NOTSENT_LOWAT %d, want %d", tc.lowat, got, tc.want)
		}
		if got := get(cs.conn.raw); got != DefaultTuning().NotSentLowat {
			t.Errorf("client: TCP_NOTSENT_LOWAT %d, want %d", got, DefaultTuning().NotSentLowat)
		}
	}
}

// checkKernelLowat checks that the kernel has the TCP_NOTSENT_LOWAT that
// mc's pacing last set.
func checkKernelLowat(t *testing.T, mc *muxConn) {
	t.Helper()
	v := kernelLowat(t, mc.raw)
	mc.mu.Lock()
	want := mc.lowat
	mc.mu.Unlock()
	if v != want {
		t.Errorf("kernel TCP_NOTSENT_LOWAT %d, pacing set %d", v, want)
	}
}

// kernelLowat reads c's TCP_NOTSENT_LOWAT.
func kernelLowat(t *testing.T, c net.Conn) int {
	t.Helper()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		v, gerr = unix.GetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT)
	}); err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	return v
}
