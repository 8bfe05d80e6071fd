//go:build !windows

package service

import (
	"os"
	"os/signal"
	"syscall"

	kservice "github.com/kardianos/service"
)

// notifySignals delivers the signals Run acts on: SIGTERM and SIGINT stop,
// SIGHUP reloads (systemd's ExecReload, `launchctl kill HUP`).
func notifySignals() (<-chan os.Signal, func()) {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, os.Interrupt, syscall.SIGHUP)
	return sigs, func() { signal.Stop(sigs) }
}

// runWaitHonoured: kardianos' Unix backends wait on the RunWait option
// between Start and Stop, so the wait loop ends Run when the daemon dies.
const runWaitHonoured = true

// systemLogger is nil on Unix: systemd and launchd collect stderr.
func systemLogger(kservice.Service) kservice.Logger { return nil }
