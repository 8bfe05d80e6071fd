package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"
)

// Config configures a control server.
type Config struct {
	// Path is the unix socket path or, on Windows, the pipe name; see
	// DefaultPath.
	Path string
	// Mode is the socket's permission bits (0660); ignored on Windows.
	Mode os.FileMode
	// Source answers the requests.
	Source Source
	// Timeout bounds each connection, request and response together (5 s).
	Timeout time.Duration
	// MaxConns bounds connections served at once (16); more wait in the
	// listen queue.
	MaxConns int
}

// Server answers control requests on a local socket.
type Server struct {
	cfg   Config
	log   *slog.Logger
	ln    net.Listener
	slots chan struct{}

	mu    sync.Mutex
	conns map[net.Conn]struct{} // open connections; guarded by mu
	done  bool                  // Stop has begun; guarded by mu
	// unwatch ends Start's watch on its context, so that a stopped
	// server is not kept alive by it; guarded by mu.
	unwatch func() bool

	wg       sync.WaitGroup
	stopOnce sync.Once
	stopped  chan struct{}
	errMu    sync.Mutex
	err      error // first fatal error; guarded by errMu
}

// New checks cfg; nothing listens until Start.
func New(cfg Config, logger *slog.Logger) (*Server, error) {
	if cfg.Path == "" {
		return nil, errors.New("control: no socket path")
	}
	if cfg.Source == nil {
		return nil, errors.New("control: no source")
	}
	if cfg.Mode == 0 {
		cfg.Mode = 0o660
	}
	if cfg.Mode&^0o777 != 0 || cfg.Mode&0o007 != 0 {
		return nil, fmt.Errorf("control: socket mode %#o must not grant others access", cfg.Mode)
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 16
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Server{
		cfg: cfg, log: logger, slots: make(chan struct{}, cfg.MaxConns),
		conns: make(map[net.Conn]struct{}), stopped: make(chan struct{}),
	}, nil
}

// Start creates the socket (replacing a stale one left by a crash) and
// serves in the background. Cancelling ctx stops the server like Stop.
func (s *Server) Start(ctx context.Context) error {
	ln, err := listen(s.cfg.Path, s.cfg.Mode)
	if err != nil {
		return fmt.Errorf("control: %w", err)
	}
	s.ln = ln
	s.log.Debug("control socket listening", "path", s.cfg.Path)
	s.wg.Add(1)
	go func() { defer s.wg.Done(); s.acceptLoop() }()
	// Registered under mu so that a Stop run by the callback (ctx may be
	// done already) finds unwatch set.
	s.mu.Lock()
	s.unwatch = context.AfterFunc(ctx, s.Stop)
	s.mu.Unlock()
	return nil
}

// Path is where the server listens.
func (s *Server) Path() string { return s.cfg.Path }

// Stop closes the socket (removing its file) and every open connection,
// and waits for the server's goroutines. It is idempotent.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		s.mu.Lock()
		s.done = true
		if s.unwatch != nil {
			s.unwatch()
		}
		// Closed first so the accept loop takes the listener's error
		// for the shutdown it is.
		close(s.stopped)
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		if s.ln != nil {
			s.ln.Close() // a unix listener unlinks its socket file
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

func (s *Server) acceptLoop() {
	var backoff time.Duration
	for {
		select {
		case s.slots <- struct{}{}:
		case <-s.stopped:
			return
		}
		c, err := s.ln.Accept()
		if err != nil {
			<-s.slots
			select {
			case <-s.stopped:
				return
			default:
			}
			if !errors.Is(err, net.ErrClosed) {
				// EMFILE and friends pass; back off rather than spin.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("control: accept", "err", err, "retry_in", backoff)
				t := time.NewTimer(backoff)
				select {
				case <-t.C:
				case <-s.stopped:
					t.Stop()
					return
				}
				continue
			}
			s.errMu.Lock()
			if s.err == nil {
				s.err = fmt.Errorf("control: accept: %w", err)
			}
			s.errMu.Unlock()
			go s.Stop()
			return
		}
		backoff = 0
		if !s.track(c) {
			c.Close()
			<-s.slots
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.slots }()
			defer s.untrack(c)
			s.serve(c)
		}()
	}
}

func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.Close()
}

// serve answers the one request on c.
func (s *Server) serve(c net.Conn) {
	_ = c.SetDeadline(time.Now().Add(s.cfg.Timeout))
	resp := s.handle(readRequest(c))
	if err := json.NewEncoder(c).Encode(resp); err != nil && !errors.Is(err, net.ErrClosed) {
		s.log.Debug("control: write response", "err", err)
	}
}

type requestOrError struct {
	req Request
	err error
}

// readRequest decodes one JSON request of at most MaxRequest bytes.
func readRequest(c net.Conn) requestOrError {
	lr := &io.LimitedReader{R: c, N: MaxRequest + 1}
	var req Request
	if err := json.NewDecoder(lr).Decode(&req); err != nil {
		if lr.N <= 0 {
			return requestOrError{err: fmt.Errorf("%w (limit %d bytes)", ErrTooLarge, MaxRequest)}
		}
		return requestOrError{err: fmt.Errorf("bad request: %w", err)}
	}
	return requestOrError{req: req}
}

func (s *Server) handle(r requestOrError) Response {
	if r.err != nil {
		s.log.Debug("control: refused request", "err", r.err)
		return Response{Error: r.err.Error()}
	}
	fs, _ := s.cfg.Source.(FleetSource)
	if r.req.Fleet && fs == nil {
		return Response{Error: fmt.Sprintf("%s --fleet: this daemon is not a fleet gateway", r.req.Op)}
	}
	switch r.req.Op {
	case OpStatus:
		if r.req.Fleet {
			st, err := fs.FleetStatus()
			if err != nil {
				return Response{Error: fmt.Sprintf("status --fleet: %v", err)}
			}
			return Response{OK: true, Status: &st}
		}
		st := s.cfg.Source.Status()
		return Response{OK: true, Status: &st}
	case OpKick:
		if r.req.Identity == "" {
			return Response{Error: "kick: no identity given"}
		}
		kick := s.cfg.Source.Kick
		if r.req.Fleet {
			kick = fs.FleetKick
		}
		n, err := kick(r.req.Identity)
		if err != nil {
			return Response{Error: fmt.Sprintf("kick %s: %v", r.req.Identity, err)}
		}
		s.log.Info("control: kicked identity", "identity", r.req.Identity, "sessions", n, "fleet", r.req.Fleet)
		return Response{OK: true, Kicked: n}
	case "":
		return Response{Error: "bad request: no op"}
	}
	return Response{Error: fmt.Sprintf("unknown op %q", r.req.Op)}
}
