package tunnel

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.zx2c4.com/wireguard/conn"

	"github.com/twoway/twoway/datagram"
	"github.com/twoway/twoway/internal/ratelog"
	"github.com/twoway/twoway/tun"
)

// The client's half of the UDP data path (udp.go has the shared part).
// The client decides the path: once the packets stream is up it probes the
// gateway's UDP port; the first answer moves its packets to UDP (and a
// path message tells the gateway to follow), and when probes go
// unanswered it moves them back to the packets stream, which stays open
// for this, and keeps probing to return. The session, its address and its
// streams are untouched by either move.

// Probe timing. While on UDP with traffic, a probe every udpProbeBusy;
// udpDeadAfter without an answer (and at least udpDeadProbes probes sent
// since the last answer) moves the packets back to TCP. On TCP, a probe
// every udpProbeSearch looks for UDP to come back. An idle UDP path is
// probed every udpProbeIdle, which also keeps NAT bindings open.
const (
	udpProbeTick   = 100 * time.Millisecond
	udpProbeBusy   = 250 * time.Millisecond
	udpProbeIdle   = 10 * time.Second
	udpProbeSearch = time.Second
	udpBusyFor     = 5 * time.Second
	udpDeadAfter   = time.Second
	udpDeadProbes  = 3
)

// udpPath is one session's UDP path at the client.
type udpPath struct {
	cs     *clientSession
	bind   conn.Bind
	ep     conn.Endpoint // the gateway's UDP address
	keys   *udpKeys
	active atomic.Bool  // packets go over UDP now
	busy   atomic.Int64 // when packets last moved (unix ns)
	seq    atomic.Uint64
	answer atomic.Int64  // when the last probe answer arrived (unix ns)
	kick   chan struct{} // an answer arrived
	// exhausted: the key has sealed all it may (datagram.RejectAfter);
	// the packets stay on the stream for the rest of the session.
	exhausted atomic.Bool
	clock     bool // send clock probes (pathclock.go): the gateway answers them, and they are on
	meter     pathMeter
	stop      chan struct{}
	wg        sync.WaitGroup
	errLog    ratelog.Limiter
}

// udpTarget is the gateway's UDP address for session cs, or invalid when
// the session has no UDP path. The gateway's host is the endpoint's, not
// the TCP connection's peer, which may be an HTTP proxy.
func (c *Client) udpTarget(cs *clientSession) netip.AddrPort {
	if cs.udpKeys == nil {
		return netip.AddrPort{}
	}
	host, _, _ := net.SplitHostPort(cs.endpoint)
	var tcpPeer netip.Addr
	if ta, ok := cs.conn.RemoteAddr().(*net.TCPAddr); ok {
		tcpPeer = ta.AddrPort().Addr().Unmap()
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		ctx, cancel := context.WithTimeout(c.ctx, c.cfg.DialTimeout)
		defer cancel()
		addrs, lerr := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if lerr != nil || len(addrs) == 0 {
			cs.log.Warn("no UDP path: cannot resolve the gateway", "host", host, "err", lerr)
			return netip.AddrPort{}
		}
		addr = addrs[0]
		for _, a := range addrs {
			if a.Unmap() == tcpPeer {
				addr = a // the address the TLS connection reached
			}
		}
	}
	return netip.AddrPortFrom(addr.Unmap(), uint16(cs.udpHello.Port))
}

// startUDP opens the session's UDP socket and starts probing; nil when
// that fails (logged: the packets stay on the stream).
func (c *Client) startUDP(cs *clientSession, target netip.AddrPort) *udpPath {
	if !target.IsValid() {
		return nil
	}
	var bind conn.Bind
	if f := c.cfg.VPN.UDPBind; f != nil {
		bind = f()
	} else {
		bind = conn.NewStdNetBind()
	}
	fns, _, err := bind.Open(0)
	if err != nil {
		cs.log.Warn("no UDP path: cannot open a UDP socket", "err", err)
		return nil
	}
	ep, err := bind.ParseEndpoint(target.String())
	if err != nil {
		_ = bind.Close()
		cs.log.Warn("no UDP path", "err", err)
		return nil
	}
	u := &udpPath{cs: cs, bind: bind, ep: ep, keys: cs.udpKeys, kick: make(chan struct{}, 1), stop: make(chan struct{}),
		clock: cs.peerCaps[capClock] && !c.cfg.VPN.LocalQueueOnly}
	for _, fn := range fns {
		u.wg.Add(1)
		go func() { defer u.wg.Done(); u.receive(fn, c.cfg.VPN.Device, cs.info.VPN.MTU) }()
	}
	u.wg.Add(1)
	go func() { defer u.wg.Done(); u.probeLoop() }()
	return u
}

// close stops the path and waits for its goroutines.
func (u *udpPath) close() {
	if u == nil {
		return
	}
	close(u.stop)
	_ = u.bind.Close()
	u.wg.Wait()
}

// probeLoop sends probes and moves the packets between the paths.
func (u *udpPath) probeLoop() {
	t := time.NewTicker(udpProbeTick)
	defer t.Stop()
	var sent time.Time // the last probe
	unanswered := 0    // probes since the last answer
	lastAnswer := int64(0)
	for {
		select {
		case <-u.stop:
			return
		case <-u.kick:
		case <-t.C:
		}
		now := time.Now()
		u.cs.announceRekey(u.keys)
		if u.exhausted.Load() {
			if u.active.Load() {
				u.switchTo(pathTCP)
			}
			continue
		}
		if a := u.answer.Load(); a != lastAnswer {
			lastAnswer, unanswered = a, 0
			if !u.active.Load() {
				u.switchTo(pathUDP)
			}
		}
		on := u.active.Load()
		if on && unanswered >= udpDeadProbes && now.Sub(time.Unix(0, lastAnswer)) > udpDeadAfter {
			u.switchTo(pathTCP)
			on = false
		}
		every := udpProbeSearch
		if on {
			every = udpProbeIdle
			if now.UnixNano()-u.busy.Load() < int64(udpBusyFor) {
				every = udpProbeBusy
			}
		}
		if now.Sub(sent) >= every {
			sent = now
			unanswered++
			u.probe(now)
		}
	}
}

// switchTo moves the packets to path and tells the gateway.
func (u *udpPath) switchTo(path string) {
	on := path == pathUDP
	u.active.Store(on)
	u.cs.udpOn.Store(on)
	u.cs.log.Info("VPN packets path", "path", path, "gateway_udp", u.ep.DstToString())
	if err := u.cs.sendControlTimeout(&controlMsg{Type: msgPath, Path: path}, time.Second); err != nil {
		u.cs.log.Debug("path message not sent", "err", err)
	}
}

func (u *udpPath) probe(now time.Time) {
	d, err := u.keys.sealer().Seal(make([]byte, 0, datagram.Overhead+8), datagram.TypeProbe, probePayload(u.seq.Add(1)))
	if err == nil {
		err = u.bind.Send([][]byte{d}, u.ep)
	}
	if err == nil {
		u.cs.client.udpCtr.out.Add(1)
	}
	if err != nil {
		if n, ok := u.errLog.Allow(now, 1, packetErrorLogEvery); ok {
			u.cs.log.Debug("UDP probe not sent", "err", err, "suppressed", n)
		}
	}
}

// sendControl sends one sealed datagram that carries no packet.
func (u *udpPath) sendControl(d []byte) {
	if err := u.bind.Send([][]byte{d}, u.ep); err == nil {
		u.cs.client.udpCtr.out.Add(1)
	}
}

// send sends pkts over UDP if that is the path now; an error means the
// caller sends them on the packets stream.
func (u *udpPath) send(pkts [][]byte) error {
	if u == nil || !u.active.Load() {
		return errNoUDPPath
	}
	u.busy.Store(time.Now().UnixNano())
	b := sealedBatches.Get().(*sealedBatch)
	defer b.release()
	err := b.seal(u.keys.sealer(), datagram.TypeData, pkts)
	if errors.Is(err, datagram.ErrExhausted) {
		// The session's key has sealed as much as AES-GCM allows;
		// the rest of the session stays on the stream.
		if !u.exhausted.Swap(true) {
			u.cs.log.Info("UDP key used up; VPN packets stay on the TLS connection for the rest of this session")
		}
	}
	if err == nil {
		err = b.send(u.bind, u.ep)
	}
	if err == nil {
		u.cs.client.udpCtr.out.Add(uint64(len(pkts)))
		if u.clock {
			if now := clockNow(); u.meter.due(now) {
				if d, cerr := sealClock(u.keys.sealer(), now); cerr == nil {
					u.sendControl(d)
				}
			}
		}
	}
	if err != nil {
		if n, ok := u.errLog.Allow(time.Now(), 1, packetErrorLogEvery); ok {
			u.cs.log.Warn("sending UDP", "err", err, "suppressed", n)
		}
		return err
	}
	u.cs.announceRekey(u.keys)
	return nil
}

// receive reads datagrams with fn until the socket closes: packets go to
// the device, probe answers to probeLoop. Only what authenticates under
// the session's key is looked at.
func (u *udpPath) receive(fn conn.ReceiveFunc, dev tun.Device, mtu int) {
	bs := u.bind.BatchSize()
	bufs := udpRecvBufs(bs, udpDatagramMax(max(mtu, tun.MinMTU)))
	sizes := make([]int, bs)
	eps := make([]conn.Endpoint, bs)
	var b packetBatch
	for {
		n, err := fn(bufs, sizes, eps)
		now := clockNow()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			select {
			case <-u.stop:
				return
			case <-time.After(10 * time.Millisecond): // a socket error that repeats must not spin
			}
			continue
		}
		clear(eps[:n])
		ctr := &u.cs.client.udpCtr
		for i := range n {
			pb := packetBufs.Get().(*packetBuf)
			typ, pl, err := u.keys.open.Open(pb.b[:tun.Offset], bufs[i][:sizes[i]])
			if err != nil {
				ctr.dropped[udpDropReason(err)].Add(1)
			} else {
				ctr.in.Add(1)
			}
			if err != nil || typ != datagram.TypeData {
				packetBufs.Put(pb)
				switch {
				case err != nil:
				case typ == datagram.TypeClock:
					if d, ok := sealClockReply(u.keys.sealer(), pl, now); ok {
						u.sendControl(d)
					}
				case typ == datagram.TypeClockReply:
					if d, ok := u.meter.answer(pl, now); ok {
						u.cs.ctr.setPathQueue(d, now)
						u.cs.client.outq.SetPathDelay(d)
					}
				}
				if err == nil && typ == datagram.TypeProbeReply {
					if _, perr := probeSeq(pl); perr == nil {
						u.answer.Store(time.Now().UnixNano())
						select {
						case u.kick <- struct{}{}:
						default:
						}
					}
				}
				continue
			}
			b.held = append(b.held, pb)
			b.pkts = append(b.pkts, pb.b[:tun.Offset+len(pl)])
		}
		if len(b.pkts) > 0 {
			u.busy.Store(time.Now().UnixNano())
			u.cs.ctr.pktsIn.Add(uint64(len(b.pkts)))
			if _, werr := dev.Write(b.pkts, tun.Offset); werr != nil && !errors.Is(werr, tun.ErrClosed) {
				if k, ok := u.errLog.Allow(time.Now(), 1, packetErrorLogEvery); ok {
					u.cs.log.Warn("writing to the TUN device", "err", werr, "suppressed", k)
				}
			}
		}
		b.release()
	}
}
