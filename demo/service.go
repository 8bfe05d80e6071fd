package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"time"
)

// service is the "internal" HTTP service the demo reaches through the
// gateway. It says who connected to it (the gateway, dialing on the
// client's behalf) and echoes a request body.
type service struct {
	ln   net.Listener
	srv  *http.Server
	done chan struct{} // closed when Serve has returned
}

// maxEcho bounds the request body the service reads and echoes.
const maxEcho = 4096

func startService() (*service, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &service{ln: ln, done: make(chan struct{})}
	s.srv = &http.Server{
		Handler:           http.HandlerFunc(s.serve),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln) // ErrServerClosed after close
	}()
	return s, nil
}

func (s *service) addr() string { return s.ln.Addr().String() }

func (s *service) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, maxEcho))
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintf(w, "hello from the twoway demo service at %s\n", s.addr())
	fmt.Fprintf(w, "this connection came from %s: the gateway, dialing on the client's behalf\n", r.RemoteAddr)
	if len(body) > 0 {
		fmt.Fprintf(w, "you sent: %s\n", strings.TrimRight(string(body), "\n"))
	}
}

// close stops the service and closes its connections.
func (s *service) close() {
	_ = s.srv.Close()
	<-s.done
}

// exchangeBody is what the demo sends through the forward.
const exchangeBody = "hello through the tunnel"

// exchange posts a message to the service through the forward at addr.
func (s *service) exchange(ctx context.Context, addr string, timeout time.Duration) (Exchange, error) {
	url := "http://" + addr + "/"
	ex := Exchange{Request: fmt.Sprintf("POST %s %q", url, exchangeBody)}
	// Its own transport without keep-alive or proxy: one connection,
	// straight to the forward, closed when done.
	tr := &http.Transport{DisableKeepAlives: true, Proxy: nil}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(exchangeBody))
	if err != nil {
		return ex, err
	}
	start := time.Now()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return ex, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 2*maxEcho))
	ex.Duration = time.Since(start)
	if err != nil {
		return ex, err
	}
	ex.Status, ex.Body = resp.Status, string(body)
	if resp.StatusCode != http.StatusOK {
		return ex, errors.New("service answered " + resp.Status)
	}
	return ex, nil
}
