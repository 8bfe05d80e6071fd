//go:build windows

package service

import (
	"os"
	"os/signal"

	kservice "github.com/kardianos/service"
)

// notifySignals: Windows has no reload signal, and a Windows service is
// stopped by the service control manager, not by a signal. The channel
// serves `twoway service run` started from a console.
func notifySignals() (<-chan os.Signal, func()) {
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt)
	return sigs, func() { signal.Stop(sigs) }
}

// runWaitHonoured: kardianos' Windows backend ignores the RunWait option.
const runWaitHonoured = false

// systemLogger returns the event log when running as a Windows service:
// nobody reads a service's stderr there.
func systemLogger(svc kservice.Service) kservice.Logger {
	if kservice.Interactive() {
		return nil
	}
	l, err := svc.SystemLogger(nil)
	if err != nil {
		return nil
	}
	return l
}
