package tun

import (
	"os/exec"
)

var lookPath = exec.LookPath

// resolvedCommands returns the resolvectl calls that give dev cfg's DNS under
// systemd-resolved, and the one that undoes them. "~." makes dev's servers
// the default route for every query (full tunnel, or no search domains);
// otherwise only names under the search domains go to them (split DNS).
// The settings are per link, so they also vanish with the interface.
func resolvedCommands(dev string, cfg Config) (do []Command, undo *Command) {
	if len(cfg.DNS) == 0 {
		return nil, nil
	}
	dns := Command{Name: "resolvectl", Args: []string{"dns", dev}}
	for _, s := range cfg.DNS {
		dns.Args = append(dns.Args, s.String())
	}
	domain := Command{Name: "resolvectl", Args: append([]string{"domain", dev}, cfg.dnsDomains()...)}
	if cfg.dnsGetsAll() {
		domain.Args = append(domain.Args, "~.")
	}
	do = []Command{dns, domain}
	return do, &Command{Name: "resolvectl", Args: []string{"revert", dev}}
}

// resolvedPlan turns resolvedCommands into planned commands; the undo is
// best-effort because resolved drops the link's settings when the link goes.
func resolvedPlan(dev string, cfg Config) []plannedCommand {
	do, undo := resolvedCommands(dev, cfg)
	var out []plannedCommand
	for i, c := range do {
		pc := plannedCommand{Do: c}
		if i == 0 {
			pc.Undo, pc.BestEffort = undo, true
		}
		out = append(out, pc)
	}
	return out
}
