package pki_test

import (
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/pki/pkitest"
)

func TestVerifyClient(t *testing.T) {
	h := pkitest.NewHierarchy(t)
	other := pkitest.NewRoot(t, "other root").Sub(t, "other client CA")
	eng := h.ClientCA.Sub(t, "eng CA") // department CA under the client CA
	expiredCA := h.Root.SubWithValidity(t, "old client CA", time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))

	good := h.ClientCA.Client(t, "alice", "eng", "ops")
	revoked := h.ClientCA.Client(t, "mallory")
	engUser := eng.Client(t, "bob", "eng")
	engRevoked := eng.Client(t, "eve")
	crl := h.ClientCA.CRL(t, 1, revoked.Cert)
	engCRL := eng.CRL(t, 1, engRevoked.Cert)
	v := pkitest.Verifier(t, h.ClientBundle(), crl, engCRL)

	// A bundle holding the expired CA, to see a CA's expiry refuse its leaves.
	vOld := pkitest.Verifier(t, append([]*x509.Certificate{expiredCA.Cert}, h.Root.Cert))

	cases := []struct {
		name      string
		v         *pki.Verifier
		chain     []*x509.Certificate
		want      error
		wantCheck string
	}{
		{"valid", v, good.Certs(), nil, ""},
		{"valid via department sub-CA", v, engUser.Certs(), nil, ""},
		{"no certificate", v, nil, pki.ErrNoCertificate, "chain"},
		{"wrong CA", v, other.Client(t, "x").Certs(), pki.ErrUntrusted, "chain"},
		{"sibling CA under the same root", v, h.ServerCA.Client(t, "sneaky").Certs(), pki.ErrUntrusted, "chain"},
		{"root-issued leaf bypassing the client CA", v, h.Root.Client(t, "rootleaf").Certs(), pki.ErrUntrusted, "chain"},
		{"expired", v, h.ClientCA.Issue(t, pkitest.LeafOptions{CommonName: "old", EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}).Certs(), pki.ErrExpired, "validity"},
		{"not yet valid", v, h.ClientCA.Issue(t, pkitest.LeafOptions{CommonName: "future", EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, NotBefore: time.Now().Add(time.Hour), NotAfter: time.Now().Add(48 * time.Hour)}).Certs(), pki.ErrNotYetValid, "validity"},
		{"revoked", v, revoked.Certs(), pki.ErrRevoked, "revocation"},
		{"revoked by sub-CA CRL", v, engRevoked.Certs(), pki.ErrRevoked, "revocation"},
		{"server cert used as client cert", v, h.ClientCA.Server(t, "gw.example").Certs(), pki.ErrWrongUsage, "usage"},
		{"no EKU at all", v, h.ClientCA.Issue(t, pkitest.LeafOptions{CommonName: "noeku"}).Certs(), pki.ErrWrongUsage, "usage"},
		{"any-purpose EKU only", v, h.ClientCA.Issue(t, pkitest.LeafOptions{CommonName: "anyeku", EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}).Certs(), pki.ErrWrongUsage, "usage"},
		{"any-purpose EKU beside clientAuth", v, h.ClientCA.Issue(t, pkitest.LeafOptions{CommonName: "both", EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageAny, x509.ExtKeyUsageClientAuth}}).Certs(), nil, ""},
		{"leaf valid but its CA expired", vOld, expiredCA.Client(t, "carol").Certs(), pki.ErrExpired, "validity"},
		{"intermediate missing from presented chain", v, []*x509.Certificate{engUser.Cert}, pki.ErrUntrusted, "chain"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			id, err := tc.v.Verify(tc.chain, pki.VerifyOptions{Usage: pki.UsageClient})
			if tc.want == nil {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if id.CommonName != tc.chain[0].Subject.CommonName {
					t.Fatalf("identity %q, want %q", id.CommonName, tc.chain[0].Subject.CommonName)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			var ve *pki.VerifyError
			if !errors.As(err, &ve) || ve.Check != tc.wantCheck {
				t.Fatalf("err = %#v, want check %q", err, tc.wantCheck)
			}
		})
	}
}

func TestVerifyIdentity(t *testing.T) {
	h := pkitest.NewHierarchy(t)
	l := h.ClientCA.Issue(t, pkitest.LeafOptions{CommonName: "alice", Groups: []string{"eng", "vpn"}, Emails: []string{"alice@example.com"}, EKU: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	id, err := pkitest.Verifier(t, h.ClientBundle()).Verify(l.Certs(), pki.VerifyOptions{Usage: pki.UsageClient})
	if err != nil {
		t.Fatal(err)
	}
	if id.Name() != "alice" || !id.InGroup("eng") || !id.InGroup("vpn") || id.InGroup("ops") {
		t.Fatalf("identity %+v", id)
	}
	if len(id.Emails) != 1 || id.Emails[0] != "alice@example.com" {
		t.Fatalf("emails %v", id.Emails)
	}
	if id.Serial != l.Cert.SerialNumber.Text(16) || id.Fingerprint != pki.Fingerprint(l.Cert) || id.SPKIPin != pki.SPKIPin(l.Cert) {
		t.Fatalf("serial/fingerprint/pin mismatch: %+v", id)
	}
	// The session cannot outlive the earliest expiry in the chain.
	want := l.Cert.NotAfter
	for _, c := range h.ClientBundle() {
		if c.NotAfter.Before(want) {
			want = c.NotAfter
		}
	}
	if !id.ChainNotAfter.Equal(want) {
		t.Fatalf("ChainNotAfter %v, want %v", id.ChainNotAfter, want)
	}
}

func TestVerifyServer(t *testing.T) {
	h := pkitest.NewHierarchy(t)
	srv := h.ServerCA.Server(t, "gw.example.com")
	ipSrv := h.ServerCA.Server(t, "198.18.0.2")
	v := pkitest.Verifier(t, h.ServerBundle())
	pin := pki.SPKIPin(srv.Cert)
	caPin := pki.SPKIPin(h.ServerCA.Cert)

	cases := []struct {
		name  string
		chain []*x509.Certificate
		opts  pki.VerifyOptions
		want  error
	}{
		{"valid", srv.Certs(), pki.VerifyOptions{ServerName: "gw.example.com"}, nil},
		{"valid IP SAN", ipSrv.Certs(), pki.VerifyOptions{ServerName: "198.18.0.2"}, nil},
		{"name mismatch", srv.Certs(), pki.VerifyOptions{ServerName: "evil.example.com"}, pki.ErrNameMismatch},
		{"leaf pin matches", srv.Certs(), pki.VerifyOptions{ServerName: "gw.example.com", Pins: []string{"bogus", pin}}, nil},
		{"CA pin matches", srv.Certs(), pki.VerifyOptions{ServerName: "gw.example.com", Pins: []string{caPin}}, nil},
		{"pin mismatch", srv.Certs(), pki.VerifyOptions{ServerName: "gw.example.com", Pins: []string{pki.SPKIPin(h.ClientCA.Cert)}}, pki.ErrPinMismatch},
		{"client cert used as server cert", h.ServerCA.Client(t, "gw.example.com").Certs(), pki.VerifyOptions{ServerName: "gw.example.com"}, pki.ErrWrongUsage},
		{"server from the client CA", h.ClientCA.Server(t, "gw.example.com").Certs(), pki.VerifyOptions{ServerName: "gw.example.com"}, pki.ErrUntrusted},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.Usage = pki.UsageServer
			_, err := v.Verify(tc.chain, tc.opts)
			if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestVerifyTime(t *testing.T) {
	h := pkitest.NewHierarchy(t)
	l := h.ClientCA.Client(t, "alice")
	v := pkitest.Verifier(t, h.ClientBundle())
	if _, err := v.Verify(l.Certs(), pki.VerifyOptions{Usage: pki.UsageClient, Now: l.Cert.NotAfter.Add(time.Second)}); !errors.Is(err, pki.ErrExpired) {
		t.Fatalf("after NotAfter: %v", err)
	}
	if _, err := v.Verify(l.Certs(), pki.VerifyOptions{Usage: pki.UsageClient, Now: l.Cert.NotBefore.Add(-time.Second)}); !errors.Is(err, pki.ErrNotYetValid) {
		t.Fatalf("before NotBefore: %v", err)
	}
}

func TestNewVerifierRejects(t *testing.T) {
	h := pkitest.NewHierarchy(t)
	leaf := h.ClientCA.Client(t, "alice")
	if _, err := pki.NewVerifier(nil, nil); err == nil {
		t.Fatal("empty bundle accepted")
	}
	if _, err := pki.NewVerifier([]*x509.Certificate{leaf.Cert}, nil); err == nil {
		t.Fatal("leaf certificate accepted as CA")
	}
	// A CRL claiming to be the client CA's but signed by another key.
	impostor := &pkitest.CA{Cert: h.ClientCA.Cert, Key: h.ServerCA.Key}
	forged := impostor.CRL(t, 1, leaf.Cert)
	if _, err := pki.NewVerifier(h.ClientBundle(), []*x509.RevocationList{forged}); err == nil {
		t.Fatal("CRL with a bad signature accepted")
	}
}

func TestVerifyBundleWithoutRoot(t *testing.T) {
	// Trusting only the client CA (no root in the bundle) still works.
	h := pkitest.NewHierarchy(t)
	v := pkitest.Verifier(t, []*x509.Certificate{h.ClientCA.Cert})
	if _, err := v.Verify(h.ClientCA.Client(t, "a").Certs(), pki.VerifyOptions{Usage: pki.UsageClient}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(h.ServerCA.Client(t, "b").Certs(), pki.VerifyOptions{Usage: pki.UsageClient}); !errors.Is(err, pki.ErrUntrusted) {
		t.Fatalf("sibling: %v", err)
	}
}

func TestVerifyErrorMessage(t *testing.T) {
	h := pkitest.NewHierarchy(t)
	l := h.ServerCA.Client(t, "sneaky")
	_, err := pkitest.Verifier(t, h.ClientBundle()).Verify(l.Certs(), pki.VerifyOptions{Usage: pki.UsageClient})
	msg := err.Error()
	for _, want := range []string{"chain", "sneaky", "test server CA", "test client CA"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q lacks %q", msg, want)
		}
	}
}

// TestVerifyKeepsChain: the identity carries the path Verify accepted, so
// that nobody has to check its signatures a second time to show it.
func TestVerifyKeepsChain(t *testing.T) {
	h := pkitest.NewHierarchy(t)
	eng := h.ClientCA.Sub(t, "eng CA")
	bob := eng.Client(t, "bob", "eng")
	v := pkitest.Verifier(t, h.ClientBundle())
	// bob presents only his leaf and the eng CA; the rest comes from the bundle.
	id, err := v.Verify(bob.Certs(), pki.VerifyOptions{Usage: pki.UsageClient})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range id.Chain {
		names = append(names, c.Subject.CommonName)
	}
	if got := strings.Join(names, " <- "); got != "bob <- eng CA <- test client CA <- test root" {
		t.Fatalf("chain %s", got)
	}
}

func TestDaysLeft(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   time.Duration
		want int
	}{
		{30 * 24 * time.Hour, 30},
		{30*24*time.Hour - time.Second, 29},
		{time.Hour, 0},
		{0, 0},
		{-time.Hour, -1},
		{-24 * time.Hour, -1},
		{-25 * time.Hour, -2},
	} {
		if got := pki.DaysLeft(now.Add(tc.in), now); got != tc.want {
			t.Errorf("DaysLeft(now%+v) = %d, want %d", tc.in, got, tc.want)
		}
	}
}
