// Command scaleload is the load side of bench/scale.sh: it measures full
// mutual-TLS handshakes per second against a gateway (twoway or stunnel),
// and holds many idle twoway sessions open, reporting as they come up.
//
// It is a module of its own (with a replace of the twoway module) so that
// the benchmark never becomes part of twoway's build or tests.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/tunnel"
)

func main() {
	mode := flag.String("mode", "hs", "hs: handshakes per second; idle: hold -n sessions open")
	addr := flag.String("addr", "", "gateway address")
	cert := flag.String("cert", "", "client certificate (with chain)")
	key := flag.String("key", "", "client key")
	ca := flag.String("ca", "", "server CA bundle")
	alpn := flag.String("alpn", "", "ALPN protocol to offer (twoway/1 for twoway)")
	workers := flag.Int("c", 4, "concurrent handshakes (hs)")
	dur := flag.Duration("t", 10*time.Second, "how long to measure (hs)")
	n := flag.Int("n", 1000, "sessions to hold (idle)")
	flag.Parse()
	var err error
	switch *mode {
	case "hs":
		err = handshakes(*addr, *cert, *key, *ca, *alpn, *workers, *dur)
	case "idle":
		err = idle(*addr, *cert, *key, *ca, *n)
	default:
		err = fmt.Errorf("unknown mode %q", *mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "scaleload:", err)
		os.Exit(1)
	}
}

// handshakes runs back-to-back full handshakes (no resumption) from
// workers goroutines for d and prints how many completed per second. A
// handshake counts when the client has verified the server and sent its
// own certificate; the connection is then closed.
func handshakes(addr, certFile, keyFile, caFile, alpn string, workers int, d time.Duration) error {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return err
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: pool, ServerName: "127.0.0.1",
		MinVersion: tls.VersionTLS13, ClientSessionCache: nil}
	if alpn != "" {
		cfg.NextProtos = []string{alpn}
	}
	var ok, failed atomic.Int64
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				c, err := tls.Dial("tcp", addr, cfg)
				if err != nil {
					failed.Add(1)
					continue
				}
				// TLS 1.3: our certificate and Finished are on their way;
				// a read lets the server's verdict (an alert, or nothing)
				// arrive before we close, so its work is done.
				_ = c.SetReadDeadline(time.Now().Add(time.Millisecond))
				_, _ = c.Read(make([]byte, 1))
				c.Close()
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	fmt.Printf("handshakes %d failed %d per_second %.0f\n", ok.Load(), failed.Load(), float64(ok.Load())/d.Seconds())
	return nil
}

// idle opens n twoway sessions (one client each, as n laptops would),
// prints "up K SECONDS" as they come up and whenever the count changes, and
// holds them until SIGTERM or SIGINT.
func idle(addr, certFile, keyFile, caFile string, n int) error {
	store, err := pki.NewStore(pki.StoreConfig{CertFile: certFile, KeyFile: keyFile, CABundle: caFile})
	if err != nil {
		return err
	}
	var up atomic.Int64
	changed := make(chan struct{}, 1)
	note := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	logger := slog.New(slog.DiscardHandler)
	var clients []*tunnel.Client
	start := time.Now()
	for range n {
		c, err := tunnel.NewClient(tunnel.ClientConfig{
			Endpoints:    []string{addr},
			Credentials:  store,
			OnSession:    func(tunnel.SessionInfo) { up.Add(1); note() },
			OnDisconnect: func(error) { up.Add(-1); note() },
		}, logger)
		if err != nil {
			return err
		}
		if err := c.Start(context.Background()); err != nil {
			return err
		}
		clients = append(clients, c)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	last := int64(-1)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-sig:
			for _, c := range clients {
				c.Stop()
			}
			return nil
		case <-changed:
		case <-tick.C:
		}
		if k := up.Load(); k != last {
			last = k
			fmt.Printf("up %d %.3f\n", k, time.Since(start).Seconds())
		}
	}
}
