package tunnel

import (
	"sync/atomic"
	"time"
)

// SessionStats are one session's counters at a moment.
type SessionStats struct {
	// BytesIn and BytesOut count TLS payload bytes read from and written
	// to the peer: forwarded data, VPN packets and protocol overhead.
	BytesIn, BytesOut uint64
	// PacketsIn and PacketsOut count VPN packets received from and sent
	// to the peer.
	PacketsIn, PacketsOut uint64
	// Streams is the number of streams open now (control stream included);
	// StreamsOpened counts data streams since the session began.
	Streams       int
	StreamsOpened uint64
	// RTT is the last measured keepalive round trip; zero until measured.
	RTT time.Duration
	// Path is what carries the session's VPN packets now: "udp" or
	// "tcp" (the packets stream); empty without VPN.
	Path string
	// PathQueue is how long this side's UDP datagrams last waited in
	// queues on the path (clock probes, pathclock.go); zero when not
	// measured in the last second (idle, on TCP, or probes off).
	PathQueue time.Duration
}

// counters are a session's live statistics; all fields are atomics so the
// data path never takes a lock to count.
type counters struct {
	pktsIn, pktsOut atomic.Uint64
	streamsOpened   atomic.Uint64
	rtt             atomic.Int64 // nanoseconds
	pathQueue       atomic.Int64 // nanoseconds; see SessionStats.PathQueue
	pathQueueAt     atomic.Int64 // clockNow of that measurement
}

// setPathQueue records a measurement of the path's queue at now.
func (c *counters) setPathQueue(d time.Duration, now int64) {
	c.pathQueue.Store(int64(d))
	c.pathQueueAt.Store(now)
}

// stats snapshots the session's counters.
func (s *session) stats() SessionStats {
	st := SessionStats{
		BytesIn:       s.conn.rx.Load(),
		BytesOut:      s.conn.tx.Load(),
		PacketsIn:     s.ctr.pktsIn.Load(),
		PacketsOut:    s.ctr.pktsOut.Load(),
		StreamsOpened: s.ctr.streamsOpened.Load(),
		RTT:           time.Duration(s.ctr.rtt.Load()),
	}
	if s.info.VPN != nil {
		st.Path = pathTCP
		if s.udpOn.Load() {
			st.Path = pathUDP
			if at := s.ctr.pathQueueAt.Load(); at != 0 && clockNow()-at < int64(time.Second) {
				st.PathQueue = time.Duration(s.ctr.pathQueue.Load())
			}
		}
	}
	if !s.mux.IsClosed() {
		st.Streams = s.mux.NumStreams()
	}
	return st
}

// ping measures the round trip to the peer and records it.
func (s *session) ping() {
	if d, err := s.mux.Ping(); err == nil {
		s.ctr.rtt.Store(int64(d))
	}
}

// Totals are a gateway's cumulative counters over every session, ended
// ones included.
type Totals struct {
	Sessions      uint64 // established since start
	BytesIn       uint64
	BytesOut      uint64
	PacketsIn     uint64
	PacketsOut    uint64
	StreamsOpened uint64
	// PolicyClosed counts remote listeners and forwarded streams closed
	// because a reloaded policy no longer allowed them.
	PolicyClosed uint64
}

// serverTotals accumulates the counters of ended sessions.
type serverTotals struct {
	sessions, bytesIn, bytesOut, pktsIn, pktsOut, streams atomic.Uint64
	policyClosed                                          atomic.Uint64
}

func (t *serverTotals) add(st SessionStats) {
	t.bytesIn.Add(st.BytesIn)
	t.bytesOut.Add(st.BytesOut)
	t.pktsIn.Add(st.PacketsIn)
	t.pktsOut.Add(st.PacketsOut)
	t.streams.Add(st.StreamsOpened)
}

// Totals returns the gateway's counters: ended sessions plus live ones.
func (s *Server) Totals() Totals {
	s.mu.Lock()
	live := make([]SessionStats, 0, len(s.sessions))
	for _, ss := range s.sessions {
		live = append(live, ss.stats())
	}
	s.mu.Unlock()
	t := Totals{
		Sessions:      s.totals.sessions.Load(),
		BytesIn:       s.totals.bytesIn.Load(),
		BytesOut:      s.totals.bytesOut.Load(),
		PacketsIn:     s.totals.pktsIn.Load(),
		PacketsOut:    s.totals.pktsOut.Load(),
		StreamsOpened: s.totals.streams.Load(),
		PolicyClosed:  s.totals.policyClosed.Load(),
	}
	for _, st := range live {
		t.BytesIn += st.BytesIn
		t.BytesOut += st.BytesOut
		t.PacketsIn += st.PacketsIn
		t.PacketsOut += st.PacketsOut
		t.StreamsOpened += st.StreamsOpened
	}
	return t
}

// Stats returns the counters of the client's current session, and false
// when it has none.
func (c *Client) Stats() (SessionStats, bool) {
	c.mu.Lock()
	cur := c.cur
	c.mu.Unlock()
	if cur == nil {
		return SessionStats{}, false
	}
	return cur.stats(), true
}

// UDPStats are the client's UDP path counters over all its sessions.
func (c *Client) UDPStats() UDPStats { return c.udpCtr.stats() }

// QueueStats are the counters of a client's queue of outbound VPN
// packets, kept over all its sessions.
type QueueStats struct {
	// Dropped counts packets dropped for room or by CoDel, Marked those
	// CoDel marked CE (ECN) instead of dropping.
	Dropped, Marked uint64
}

// QueueStats returns the counters of the client's outbound packet queue;
// zero without VPN.
func (c *Client) QueueStats() QueueStats {
	if c.outq == nil {
		return QueueStats{}
	}
	return QueueStats{Dropped: c.outq.Dropped(), Marked: c.outq.Marked()}
}
