package daemon

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twoway/twoway/control"
	"github.com/twoway/twoway/fleet"
	"github.com/twoway/twoway/policy"
	"github.com/twoway/twoway/tunnel"
)

// startFleet joins the gateway to its fleet ([fleet]): connects to etcd
// and takes the gateway's lease, and shares session ticket keys through
// it (tc.TicketKeys) unless tickets are off. The address store and the
// CRL watch are taken up by the caller and by Start.
func startFleet(s *Server, tc *tunnel.ServerConfig, logger *slog.Logger) (*fleet.Fleet, error) {
	f, err := fleet.New(s.cfg.Fleet.Config(), logger.With("component", "fleet"))
	if err != nil {
		return nil, err
	}
	if err := f.Start(context.Background()); err != nil {
		return nil, err
	}
	if !tc.NoResumption {
		tc.TicketKeys = f.StartTicketKeys(tunnel.RotateTicketKeys, tunnel.KeepTicketKeys)
	}
	// The session registry: every session is filed when it starts and
	// removed when it ends; the refresh writes them all with their bytes.
	f.StartRegistry(func() []fleet.SessionRecord {
		if s.tunnel == nil {
			return nil
		}
		var out []fleet.SessionRecord
		for _, si := range s.tunnel.Sessions() {
			out = append(out, sessionRecord(si))
		}
		return out
	})
	onSession, onEnd := tc.OnSession, tc.OnSessionEnd
	tc.OnSession = func(si tunnel.SessionInfo) {
		if onSession != nil {
			onSession(si)
		}
		f.PutSession(sessionRecord(si))
	}
	tc.OnSessionEnd = func(si tunnel.SessionInfo, err error) {
		if onEnd != nil {
			onEnd(si, err)
		}
		f.DeleteSession(si.ID)
	}
	return f, nil
}

// sessionRecord is a session's entry in the fleet's registry.
func sessionRecord(si tunnel.SessionInfo) fleet.SessionRecord {
	r := fleet.SessionRecord{ID: si.ID, Since: si.Established, BytesIn: si.Stats.BytesIn, BytesOut: si.Stats.BytesOut}
	if si.Peer != nil {
		r.Identity, r.Issuer, r.Serial, r.Groups = si.Peer.Name(), si.Peer.Issuer, si.Peer.Serial, si.Peer.Groups
	}
	if si.Remote != nil {
		r.Remote = si.Remote.String()
	}
	if si.VPN != nil {
		r.Addresses = stringsOf(si.VPN.Addresses)
	}
	return r
}

// FleetStatus is the gateway's status with the sessions of the whole
// fleet, each marked with the gateway holding it.
func (s *Server) FleetStatus() (control.Status, error) {
	if s.fleet == nil {
		return control.Status{}, errNoFleet
	}
	st := s.Status()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	recs, err := s.fleet.Sessions(ctx)
	if err != nil {
		return control.Status{}, err
	}
	st.Sessions = st.Sessions[:0]
	for _, r := range recs {
		cs := control.Session{ID: r.ID, Identity: r.Identity, Groups: r.Groups, Serial: r.Serial, Remote: r.Remote,
			Addresses: r.Addresses, Since: r.Since, BytesIn: r.BytesIn, BytesOut: r.BytesOut, Gateway: r.Gateway}
		st.Sessions = append(st.Sessions, cs)
	}
	return st, nil
}

// FleetKick ends identity's sessions on every gateway of the fleet and
// returns how many ended, over the gateways that answered within a second.
func (s *Server) FleetKick(identity string) (int, error) {
	if s.fleet == nil {
		return 0, errNoFleet
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	counts, err := s.fleet.Kick(ctx, identity, time.Second)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, c := range counts {
		n += c
	}
	s.log.Info("fleet kick", "identity", identity, "sessions", n, "gateways", counts)
	return n, nil
}

// errNoFleet answers --fleet requests to a gateway without [fleet].
var errNoFleet = errors.New("this gateway is not part of a fleet (no [fleet] in its configuration)")

// watchFleetCRLs applies the fleet's CRLs as they are published: the
// store keeps per issuer the newest of its files and the fleet's, and
// every live session is checked again, so a certificate revoked anywhere
// in the fleet loses its sessions everywhere within moments.
func (s *Server) watchFleet() {
	s.fleet.WatchKicks(s.tunnel.Kick)
	s.watchFleetCRLs()
	s.fleet.WatchPolicy(s.applyFleetPolicy)
}

// applyFleetPolicy puts the fleet's policy (doc, JSON) in force, or this
// gateway's own file's when doc is nil, and re-checks live sessions. A
// policy that does not compile is logged and the one in force stays.
func (s *Server) applyFleetPolicy(doc []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if doc == nil {
		if s.fleetPolicy == nil {
			return
		}
		pol, err := s.cfg.CompiledPolicy()
		if err != nil {
			s.log.Error("fleet policy removed, but this gateway's own does not compile; keeping the fleet's", "err", err)
			return
		}
		s.fleetPolicy = nil
		s.log.Info("fleet policy removed; this gateway's own policy is in force again")
		s.tunnel.SetPolicy(pol)
		s.tunnel.Revalidate()
		return
	}
	pol, rules, err := compileFleetPolicy(doc)
	if err != nil {
		s.log.Error("fleet policy refused; the policy in force stays", "err", err)
		return
	}
	s.fleetPolicy = pol
	s.log.Info("fleet policy in force; checking live sessions", "rules", rules)
	s.tunnel.SetPolicy(pol)
	s.tunnel.Revalidate()
}

// compileFleetPolicy decodes and compiles a published policy and says how
// many rules it has.
func compileFleetPolicy(doc []byte) (*policy.Policy, int, error) {
	var cfg policy.Config
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&cfg); err != nil {
		return nil, 0, fmt.Errorf("decode: %w", err)
	}
	if len(cfg.Admit.Identities) == 0 && len(cfg.Admit.Groups) == 0 {
		return nil, 0, errors.New("it admits nobody")
	}
	pol, err := policy.New(cfg)
	return pol, len(cfg.Rules), err
}

func (s *Server) watchFleetCRLs() {
	s.fleet.WatchCRLs(func(crls []*x509.RevocationList) {
		if err := s.store.Publish(crls); err != nil {
			s.log.Warn("fleet CRLs not applied", "err", err)
			return
		}
		if len(crls) > 0 {
			s.log.Info("fleet CRLs applied; checking live sessions", "crls", describeCRLs(crls))
		}
		s.tunnel.Revalidate()
	})
}

// describeCRLs names each CRL by issuer and number, for the log.
func describeCRLs(crls []*x509.RevocationList) []string {
	out := make([]string, len(crls))
	for i, c := range crls {
		out[i] = fmt.Sprintf("%s #%s", c.Issuer.CommonName, c.Number)
	}
	return out
}
