// Package metrics serves a daemon's Prometheus metrics on /metrics.
//
// Gauges and cumulative counters are read from the daemon's status
// snapshot at each scrape (the same control.Status that `twoway status`
// shows), so there is one source of truth. Events the snapshot cannot show,
// handshakes and refusals, are counted as they happen through the Observe
// methods, which the daemon calls from its tunnel hooks. The metrics live
// in a registry of their own, never the process-global default one.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/twoway/twoway/control"
	"github.com/twoway/twoway/pki"
)

// DefaultListen is the conventional address of the endpoint: loopback
// only, since the metrics name certificate subjects.
const DefaultListen = "127.0.0.1:9109"

// Source supplies the snapshot each scrape reads; the daemon implements it
// (it is the Status half of control.Source). Status must be safe for
// concurrent use, and its Totals must never decrease.
type Source interface {
	Status() control.Status
}

// Handshake outcomes for ObserveHandshake.
const (
	OutcomeAccepted = "accepted"
	OutcomeRefused  = "refused"
)

// Config configures a metrics server.
type Config struct {
	// Listen is the address to serve on (DefaultListen).
	Listen string
	// Listener, if set, is used instead of Listen (tests). The server
	// closes it on Stop.
	Listener net.Listener
	// Source supplies the snapshot.
	Source Source
	// Now is the clock for seconds-until-expiry (time.Now).
	Now func() time.Time
	// Process adds the Go runtime and process collectors (memory, file
	// descriptors, CPU).
	Process bool
}

// Server is the metrics endpoint.
type Server struct {
	cfg        Config
	log        *slog.Logger
	reg        *prometheus.Registry
	handshakes *prometheus.CounterVec
	revoked    *prometheus.CounterVec
	renewals   *prometheus.CounterVec

	ln       net.Listener
	http     *http.Server
	wg       sync.WaitGroup
	stopOnce sync.Once
	stopped  chan struct{}
	unwatch  atomic.Pointer[func() bool] // stops the context.AfterFunc watching Start's ctx
	errMu    sync.Mutex
	err      error // first fatal error; guarded by errMu
}

// New builds the registry; nothing listens until Start.
func New(cfg Config, logger *slog.Logger) (*Server, error) {
	if cfg.Source == nil {
		return nil, errors.New("metrics: no source")
	}
	if cfg.Listen == "" && cfg.Listener == nil {
		cfg.Listen = DefaultListen
	}
	if cfg.Listener == nil {
		if _, _, err := net.SplitHostPort(cfg.Listen); err != nil {
			return nil, fmt.Errorf("metrics: listen address %q: %w", cfg.Listen, err)
		}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg: cfg, log: logger, reg: prometheus.NewRegistry(), stopped: make(chan struct{}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "twoway_handshakes_total",
			Help: "Connection attempts by outcome; refusals by stage (rate, capacity, tls, verify, alpn, hello, admit) and, for certificate failures, the check that failed.",
		}, []string{"outcome", "stage", "reason"}),
		revoked: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "twoway_sessions_revoked_total",
			Help: "Live sessions closed because a re-check after a reload failed, by reason (the failed check, or policy).",
		}, []string{"reason"}),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "twoway_renewals_total",
			Help: "Client certificate renewals at a gateway (over a session or EST), by outcome: renewed, refused (the client's certificate or request), failed (the gateway's CA).",
		}, []string{"outcome"}),
	}
	// Present from the first scrape, so rate() has a starting point.
	s.handshakes.WithLabelValues(OutcomeAccepted, "", "")
	s.reg.MustRegister(s.handshakes, s.revoked, s.renewals, &snapshotCollector{src: cfg.Source, now: cfg.Now})
	if cfg.Process {
		s.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{
		ErrorLog:            slogAdapter{logger},
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	}))
	s.http = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// Registry is the server's own registry, for tests and for callers that
// add collectors of their own.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// Start listens and serves in the background. Cancelling ctx stops the
// server like Stop.
func (s *Server) Start(ctx context.Context) error {
	ln := s.cfg.Listener
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", s.cfg.Listen); err != nil {
			return fmt.Errorf("metrics: %w", err)
		}
	}
	s.ln = ln
	s.log.Info("metrics listening", "addr", "http://"+ln.Addr().String()+"/metrics")
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.errMu.Lock()
			if s.err == nil {
				s.err = fmt.Errorf("metrics: %w", err)
			}
			s.errMu.Unlock()
			go s.Stop()
		}
	}()
	// Stop ends this watch first thing, so no Stop starts from it after
	// Stop; one already started is itself a call of Stop, which waits
	// for the first. Atomic: with ctx already done, that Stop may run
	// before Start has stored the stop function.
	unwatch := context.AfterFunc(ctx, s.Stop)
	s.unwatch.Store(&unwatch)
	return nil
}

// Addr is where the server listens (after Start).
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Stop lets scrapes in progress finish for up to two seconds, then closes
// everything. It is idempotent.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		if unwatch := s.unwatch.Load(); unwatch != nil {
			(*unwatch)()
		}
		close(s.stopped)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := s.http.Shutdown(ctx); err != nil {
			s.http.Close()
		}
		if s.ln != nil {
			s.ln.Close() // Shutdown closes it only if Serve had begun
		}
		s.wg.Wait()
	})
}

// Wait blocks until the server has stopped and returns the first fatal
// error, if any.
func (s *Server) Wait() error {
	<-s.stopped
	s.wg.Wait()
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.err
}

// ObserveHandshake counts one connection attempt. outcome is
// OutcomeAccepted or OutcomeRefused; stage and reason are empty for an
// accepted one. Safe for concurrent use and cheap: call it from the
// tunnel's hooks.
func (s *Server) ObserveHandshake(outcome, stage, reason string) {
	s.handshakes.WithLabelValues(outcome, stage, reason).Inc()
}

// ObserveAccepted counts an established session (tunnel OnSession).
func (s *Server) ObserveAccepted() { s.ObserveHandshake(OutcomeAccepted, "", "") }

// ObserveRefusal counts a refusal with its stage and error as the tunnel
// reports them (tunnel OnRefuse: r.Stage, r.Err). A "revalidate" refusal
// is a live session closed after a reload and is counted in
// twoway_sessions_revoked_total instead.
func (s *Server) ObserveRefusal(stage string, err error) {
	reason := Reason(err)
	if stage == "revalidate" {
		if reason == "" {
			reason = "policy"
		}
		s.revoked.WithLabelValues(reason).Inc()
		return
	}
	s.ObserveHandshake(OutcomeRefused, stage, reason)
}

// ObserveRenewal counts a certificate renewal by its outcome
// (tunnel.RenewOutcome.Outcome).
func (s *Server) ObserveRenewal(outcome string) { s.renewals.WithLabelValues(outcome).Inc() }

// Reason is the label for a refusal error: the certificate check that
// failed ("chain", "validity", "usage", "revocation", "name", "pin") or ""
// for anything else, so the label's values stay few.
func Reason(err error) string {
	var ve *pki.VerifyError
	if errors.As(err, &ve) {
		return ve.Check
	}
	return ""
}

// snapshotCollector exports a control.Status as gauges and counters. One
// Status call per scrape.
type snapshotCollector struct {
	src Source
	now func() time.Time
}

var (
	descInfo = prometheus.NewDesc("twoway_info",
		"Always 1; the labels say what is running.", []string{"role", "version"}, nil)
	descStart = prometheus.NewDesc("twoway_start_time_seconds",
		"When the daemon started, in seconds since the Unix epoch.", nil, nil)
	descSessions = prometheus.NewDesc("twoway_sessions",
		"Established sessions.", nil, nil)
	descBytes = prometheus.NewDesc("twoway_bytes_total",
		"Bytes carried for peers; in is received from them, out sent to them.", []string{"direction"}, nil)
	descPackets = prometheus.NewDesc("twoway_packets_total",
		"VPN packets carried for peers; in is received from them, out sent to them.", []string{"direction"}, nil)
	descDropped = prometheus.NewDesc("twoway_packets_dropped_total",
		"VPN packets dropped, by reason (policy, spoof, queue, ...).", []string{"reason"}, nil)
	descMarked = prometheus.NewDesc("twoway_packets_ecn_marked_total",
		"VPN packets the packet queues (a gateway's per client, a client's outbound) marked CE (ECN) instead of dropping them.", nil, nil)
	descUDP = prometheus.NewDesc("twoway_udp_datagrams_total",
		"Datagrams of the VPN's UDP path: sent (out) and received and authenticated (in).", []string{"direction"}, nil)
	descUDPDropped = prometheus.NewDesc("twoway_udp_dropped_total",
		"Datagrams refused before or in authentication, by reason.", []string{"reason"}, nil)
	descUDPRoamed = prometheus.NewDesc("twoway_udp_roamed_total",
		"Times a gateway followed a client's authenticated UDP datagrams to a new address.", nil, nil)
	descStreamsOpen = prometheus.NewDesc("twoway_streams_open",
		"Data streams open now, over all sessions.", nil, nil)
	descStreamsOpened = prometheus.NewDesc("twoway_streams_opened_total",
		"Data streams opened since start.", nil, nil)
	descPolicyClosed = prometheus.NewDesc("twoway_policy_closed_total",
		"Remote listeners and forwarded streams closed because a reloaded policy no longer allowed them.", nil, nil)
	descExpiry = prometheus.NewDesc("twoway_certificate_expiry_seconds",
		"Seconds until a certificate the daemon depends on expires (negative once expired); which is own, chain or ca.",
		[]string{"which", "subject", "serial"}, nil)
	descFleetUp = prometheus.NewDesc("twoway_fleet_etcd_reachable",
		"1 while the fleet's etcd renews this gateway's lease and answers its requests, else 0 (fleet gateways only).", []string{"gateway"}, nil)
	descFleetUnreachable = prometheus.NewDesc("twoway_fleet_store_unreachable_total",
		"VPN address requests met while etcd was unreachable, by what [fleet] store_unreachable made of them (refused, served_cached).", []string{"outcome"}, nil)
	descCRLNext = prometheus.NewDesc("twoway_crl_next_update_seconds",
		"Seconds until a revocation list in use is due to be replaced (negative once stale).",
		[]string{"issuer", "number"}, nil)
)

func (c *snapshotCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descInfo, descStart, descSessions, descBytes, descPackets,
		descDropped, descMarked, descUDP, descUDPDropped, descUDPRoamed, descStreamsOpen, descStreamsOpened, descPolicyClosed, descExpiry, descCRLNext,
		descFleetUp, descFleetUnreachable} {
		ch <- d
	}
}

func (c *snapshotCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.src.Status()
	now := c.now()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(descInfo, 1, string(st.Role), st.Version)
	if !st.Started.IsZero() {
		gauge(descStart, float64(st.Started.UnixNano())/1e9)
	}
	gauge(descSessions, float64(len(st.Sessions)))
	streams := 0
	for _, s := range st.Sessions {
		streams += s.Streams
	}
	gauge(descStreamsOpen, float64(streams))
	t := st.Totals
	counter(descBytes, t.BytesIn, "in")
	counter(descBytes, t.BytesOut, "out")
	counter(descPackets, t.PacketsIn, "in")
	counter(descPackets, t.PacketsOut, "out")
	counter(descStreamsOpened, t.StreamsOpened)
	counter(descPolicyClosed, t.PolicyClosed)
	for reason, n := range t.Dropped {
		counter(descDropped, n, reason)
	}
	counter(descMarked, t.ECNMarked)
	counter(descUDP, t.UDPIn, "in")
	counter(descUDP, t.UDPOut, "out")
	for reason, n := range t.UDPDropped {
		counter(descUDPDropped, n, reason)
	}
	counter(descUDPRoamed, t.UDPRoamed)
	if f := st.Fleet; f != nil {
		up := 0.0
		if f.Reachable {
			up = 1
		}
		gauge(descFleetUp, up, f.Name)
		counter(descFleetUnreachable, f.Refused, "refused")
		counter(descFleetUnreachable, f.ServedCached, "served_cached")
	}
	// A registry rejects a scrape with duplicate series, and the same CA
	// can be listed twice (presented chain and bundle).
	seen := make(map[[3]string]bool, len(st.Certificates))
	for _, cert := range st.Certificates {
		key := [3]string{cert.Which, cert.Subject, cert.Serial}
		if seen[key] {
			continue
		}
		seen[key] = true
		gauge(descExpiry, cert.NotAfter.Sub(now).Seconds(), key[:]...)
	}
	seenCRL := make(map[[2]string]bool, len(st.CRLs))
	for _, crl := range st.CRLs {
		key := [2]string{crl.Issuer, crl.Number}
		if crl.NextUpdate.IsZero() || seenCRL[key] {
			continue
		}
		seenCRL[key] = true
		gauge(descCRLNext, crl.NextUpdate.Sub(now).Seconds(), key[:]...)
	}
}

// slogAdapter lets promhttp report errors through the daemon's logger.
type slogAdapter struct{ log *slog.Logger }

func (a slogAdapter) Println(v ...any) {
	a.log.Warn("metrics: " + fmt.Sprint(v...))
}
