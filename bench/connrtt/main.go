// Command connrtt measures what a short TCP connection costs through a path:
// N times it connects, sends one byte, waits for the byte to come back and
// closes, and prints the median, 90th percentile and mean of those times.
// Through a forwarder this is the forwarder's whole per-connection setup
// (accept, tunnel handshake or stream open, its dial of the target) plus one
// round trip. With -serve it is the echo server at the far end.
//
// It is a module of its own (like the lab's tcprr) so that the benchmark
// tool never becomes part of the twoway module's build or tests.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"time"
)

func main() {
	serve := flag.String("serve", "", "run the echo server on this address (host:port; port 0 picks one)")
	addr := flag.String("addr", "", "address to connect to (client)")
	n := flag.Int("n", 200, "connections to measure (client)")
	wait := flag.Duration("wait", 10*time.Second, "how long the first, unmeasured connection may keep retrying while the path comes up (client)")
	flag.Parse()
	var err error
	switch {
	case *serve != "":
		err = runServer(*serve)
	case *addr != "" && *n > 0:
		err = runClient(*addr, *n, *wait)
	default:
		err = errors.New("need -serve ADDR, or -addr ADDR with -n > 0")
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "connrtt:", err)
		os.Exit(1)
	}
}

// runServer echoes every connection until killed. It prints "ready ADDR"
// once listening, so a script that asked for port 0 learns the port without
// racing for a free one.
func runServer(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Printf("ready %s\n", ln.Addr())
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			_, _ = io.Copy(c, c)
		}()
	}
}

// once is one measured connection: dial, one byte there and back.
func once(addr string) (time.Duration, error) {
	start := time.Now()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(start.Add(10 * time.Second))
	if _, err := c.Write([]byte{'x'}); err != nil {
		return 0, fmt.Errorf("write: %w", err)
	}
	var b [1]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return 0, fmt.Errorf("read echo: %w", err)
	}
	return time.Since(start), nil
}

func runClient(addr string, n int, wait time.Duration) error {
	// The first connection is a warm-up and a readiness probe: a forwarder
	// may be listening before its tunnel is up.
	deadline := time.Now().Add(wait)
	for {
		_, err := once(addr)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not echoing after %s: %w", addr, wait, err)
		}
		time.Sleep(50 * time.Millisecond) // retry pacing, not synchronisation
	}
	times := make([]time.Duration, 0, n)
	start := time.Now()
	for i := range n {
		d, err := once(addr)
		if err != nil {
			return fmt.Errorf("connection %d of %d: %w", i+1, n, err)
		}
		times = append(times, d)
	}
	total := time.Since(start)
	slices.Sort(times)
	var sum time.Duration
	for _, d := range times {
		sum += d
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	fmt.Printf("RESULT n %d median_ms %.3f p90_ms %.3f mean_ms %.3f max_ms %.3f conns_per_s %.0f\n",
		n, ms(times[(n-1)/2]), ms(times[(n-1)*9/10]), ms(sum/time.Duration(n)), ms(times[n-1]),
		float64(n)/total.Seconds())
	return nil
}
