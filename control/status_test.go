package control

import (
	"crypto/x509"
	"testing"
	"time"

	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/pki/pkitest"
)

func TestNewSessionAndChain(t *testing.T) {
	now := time.Now()
	root := pkitest.NewRoot(t, "root")
	ca := root.SubWithValidity(t, "client CA", now.Add(-time.Hour), now.Add(20*24*time.Hour+time.Hour))
	leaf := ca.Issue(t, pkitest.LeafOptions{CommonName: "alice", Groups: []string{"eng"}, NotAfter: now.Add(3*24*time.Hour + time.Hour)})
	id := pki.IdentityFromCert(leaf.Cert)
	s := NewSession("s1", &id, now)
	s.SetChain(append([]*x509.Certificate{leaf.Cert}, ca.Chain()...), now)
	if s.Identity != "alice" || len(s.Groups) != 1 || s.Groups[0] != "eng" || s.Serial != id.Serial {
		t.Fatalf("identity fields: %+v", s)
	}
	if s.CertDaysLeft != 3 || !s.CertNotAfter.Equal(leaf.Cert.NotAfter) {
		t.Fatalf("cert days %d (%v), want 3", s.CertDaysLeft, s.CertNotAfter)
	}
	// The client CA expires before the root: it is the chain's limit.
	if s.CADaysLeft != 20 || !s.CANotAfter.Equal(ca.Cert.NotAfter) {
		t.Fatalf("CA days %d (%v), want 20 from the client CA", s.CADaysLeft, s.CANotAfter)
	}
	certs := Certificates(CertCA, ca.Chain(), now)
	if len(certs) != 2 || certs[0].Subject != "client CA" || certs[0].DaysLeft != 20 || certs[1].Subject != "root" {
		t.Fatalf("Certificates: %+v", certs)
	}
}
