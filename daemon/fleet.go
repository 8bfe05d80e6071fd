package daemon

import (
	"context"
	"crypto/x509"
	"fmt"
	"log/slog"

	"github.com/twoway/twoway/fleet"
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
	return f, nil
}

// watchFleetCRLs applies the fleet's CRLs as they are published: the
// store keeps per issuer the newest of its files and the fleet's, and
// every live session is checked again, so a certificate revoked anywhere
// in the fleet loses its sessions everywhere within moments.
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
