package service

import (
	"encoding/xml"
	"fmt"
	"strings"
)

// LaunchdLogDir is where the launchd daemon's output goes on macOS.
const LaunchdLogDir = "/var/log/twoway"

// LaunchdPlistPath is where a system daemon's plist lives on macOS.
func LaunchdPlistPath(name string) string { return "/Library/LaunchDaemons/" + name + ".plist" }

// LaunchdPlist renders the launchd property list for c (after
// WithDefaults): a system daemon started at boot, restarted when it exits
// with an error (KeepAlive/SuccessfulExit=false) at most every 2 seconds,
// with stdout and stderr in LaunchdLogDir. It runs as root: utun devices
// and routes need it. Like SystemdUnit it is pure; `twoway service install`
// hands it to kardianos/service as the LaunchdConfig.
func LaunchdPlist(c Config) (string, error) {
	if err := c.complete(); err != nil {
		return "", err
	}
	for _, p := range []string{c.Executable, c.ConfigPath} {
		if !strings.HasPrefix(p, "/") {
			return "", fmt.Errorf("launchd plist: %q is not an absolute path", p)
		}
	}
	var b strings.Builder
	w := func(s string) { b.WriteString(s + "\n") }
	str := func(indent, s string) { w(indent + "<string>" + xmlEscape(s) + "</string>") }
	key := func(k string) { w("\t<key>" + k + "</key>") }

	w(`<?xml version="1.0" encoding="UTF-8"?>`)
	w(`<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">`)
	w(`<plist version="1.0">`)
	w(`<dict>`)
	key("Label")
	str("\t", c.Name)
	key("ProgramArguments")
	w("\t<array>")
	str("\t\t", c.Executable)
	for _, a := range c.Arguments() {
		str("\t\t", a)
	}
	w("\t</array>")
	key("RunAtLoad")
	w("\t<true/>")
	// Restart after a crash or a fatal error, not after a clean stop.
	key("KeepAlive")
	w("\t<dict>")
	w("\t\t<key>SuccessfulExit</key>")
	w("\t\t<false/>")
	w("\t</dict>")
	key("ThrottleInterval")
	w("\t<integer>2</integer>")
	// launchd waits this long after SIGTERM before SIGKILL; the gateway
	// drains streams for up to 30 s.
	key("ExitTimeOut")
	w("\t<integer>45</integer>")
	key("StandardOutPath")
	str("\t", LaunchdLogDir+"/"+c.Name+".out.log")
	key("StandardErrorPath")
	str("\t", LaunchdLogDir+"/"+c.Name+".err.log")
	w(`</dict>`)
	w(`</plist>`)
	return b.String(), nil
}

func xmlEscape(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s)) // writes to a strings.Builder cannot fail
	return b.String()
}
