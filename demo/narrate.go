package demo

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/twoway/twoway/pki"
	"github.com/twoway/twoway/tunnel"
)

// printer writes the narration, remembering the first write error so that
// the text can be written without checking every line.
type printer struct {
	w   io.Writer
	err error
}

func (p *printer) printf(format string, a ...any) {
	if p.err == nil {
		_, p.err = fmt.Fprintf(p.w, format, a...)
	}
}

func (p *printer) section(title string) { p.printf("\n%s\n", title) }

// field prints an aligned "key  value" line, and further values on
// continuation lines.
func (p *printer) field(key, value string, more ...string) {
	p.printf("  %-15s %s\n", key, value)
	for _, m := range more {
		p.printf("  %-15s %s\n", "", m)
	}
}

// sub is field for the lines of a lettered item.
func (p *printer) sub(key, value string) { p.printf("     %-12s %s\n", key, value) }

func (l *lab) printSetup(p *printer, rep *Report) {
	rel := func(path string) string { return relPath(rep.Dir, path) }
	f := rep.Files
	p.printf("twoway demo: a gateway and a client that prove who they are to each other (two-way TLS), on loopback.\n")
	p.printf("Everything below is read from the live connection.\n")
	p.section("Setup")
	keep := "removed when the demo ends; --keep keeps it"
	if l.opts.Keep {
		keep = "kept after the demo (--keep)"
	}
	p.field("work dir", fmt.Sprintf("%s (%s)", rep.Dir, keep))
	p.field("PKI", l.rootName+"  (offline root, "+rel(f.PKI)+"/root)",
		"├─ "+l.serverCAName+"  issued the gateway's certificate: 127.0.0.1, localhost, ::1",
		"└─ "+l.clientCAName+"  issued the user's certificate: "+User+", group "+Group)
	p.field("service", "HTTP on "+rep.ServiceAddr+" (stands for a host on the private network)")
	p.field("policy", fmt.Sprintf("admit group %q", Group),
		fmt.Sprintf("rule %q: group %q may reach tcp %s, and nothing else", ruleName, Group, rep.ServiceAddr))
	p.field("gateway", "listening on "+rep.GatewayAddr,
		"its certificate "+rel(f.GatewayCert)+"; accepts clients from "+rel(f.ClientBundle))
	p.field("client", "as "+User+": certificate "+rel(f.UserCert)+"; accepts gateways from "+rel(f.ServerBundle),
		"-L "+rep.ForwardAddr+" -> "+rep.ServiceAddr+" (through the gateway)")
}

func (l *lab) printHandshake(p *printer, rep *Report) {
	if h := rep.Hello; h == nil {
		p.section("1. ClientHello: not recorded")
	} else {
		p.section(fmt.Sprintf("1. ClientHello: what the client offered, as the gateway received it (%d bytes, in clear)", h.Size))
		versions := joinMap(h.Versions, tls.VersionName)
		if len(h.Versions) == 1 {
			versions += " only"
		}
		p.field("TLS versions", versions)
		p.field("ALPN", orNone(strings.Join(h.ALPN, ", ")))
		if h.ServerName == "" {
			p.field("SNI", "none: the client dialed an IP address, and TLS never sends those as SNI")
		} else {
			p.field("SNI", h.ServerName)
		}
		p.field("cipher suites", joinMap(h.CipherSuites, tls.CipherSuiteName))
		p.field("key exchange", joinMap(h.Groups, tls.CurveID.String))
	}

	rel := func(path string) string { return relPath(rep.Dir, path) }
	c := rep.Client
	p.section("2. The gateway proves who it is; the client checks")
	printChain(p, c.PeerChain, c.VerifiedChain, l.clientCreds.Verifier(), "the client's CA bundle "+rel(l.files.ServerBundle))
	if len(c.PeerChain) > 0 {
		leaf := c.PeerChain[0]
		dialed, _, _ := net.SplitHostPort(rep.GatewayAddr)
		verdict := "matches"
		if leaf.VerifyHostname(dialed) != nil {
			verdict = "does NOT match"
		}
		p.field("name", fmt.Sprintf("%s (the address dialed) %s the certificate's names: %s", dialed, verdict, strings.Join(certNames(leaf), ", ")))
		printLeaf(p, leaf)
	}

	g := rep.Gateway
	p.section("3. The client proves who it is; the gateway checks")
	printChain(p, g.PeerChain, g.VerifiedChain, l.gatewayCreds.Verifier(), "the gateway's client-CA bundle "+rel(l.files.ClientBundle))
	if len(g.PeerChain) > 0 {
		printLeaf(p, g.PeerChain[0])
	}
	if id := g.Peer; id != nil {
		p.field("identity", id.Name()+"  (what policy and every log line about this session use)")
		p.field("groups", orNone(strings.Join(id.Groups, ", ")))
		p.field("session until", day(id.ChainNotAfter)+" at most: the earliest expiry in the verified chain")
	}

	p.section("4. What the two sides agreed")
	agree := "both sides report the same"
	if c.TLS.Version != g.TLS.Version || c.TLS.CipherSuite != g.TLS.CipherSuite {
		agree = fmt.Sprintf("the client reports %s with %s!", tls.VersionName(c.TLS.Version), tls.CipherSuiteName(c.TLS.CipherSuite))
	}
	p.field("TLS", fmt.Sprintf("%s, cipher suite %s", tls.VersionName(g.TLS.Version), tls.CipherSuiteName(g.TLS.CipherSuite)),
		fmt.Sprintf("key exchange %s (%s)", g.TLS.CurveID, agree))
	p.field("ALPN", orNone(g.TLS.NegotiatedProtocol))
	if g.TLS.DidResume {
		p.field("resumed", "yes: the certificates came from the session ticket and were checked again just now")
	} else {
		p.field("resumed", "no: a full handshake, so both certificates were checked just now",
			"a reconnect resumes with the ticket the gateway just issued; the certificates inside are checked again all the same")
	}
	p.field("twoway hello", fmt.Sprintf("protocol version %d, session %s", g.Version, g.ID),
		fmt.Sprintf("client software %q, gateway software %q", g.PeerSoftware, c.PeerSoftware))

	p.section("5. What the policy granted")
	p.field("admitted by", rep.Admission.Rule)
	if s := c.Self; s != nil {
		p.field("you are", fmt.Sprintf("%s, groups %s, issued by %s, serial %s  (the gateway's hello to the client)",
			s.Name, orNone(strings.Join(s.Groups, ", ")), s.Issuer, s.Serial))
	}
	if len(c.Grants) == 0 {
		p.field("grants", "nothing")
	} else {
		p.field("grants", c.Grants[0], c.Grants[1:]...)
	}
	pr := c.Params
	p.field("limits", fmt.Sprintf("%d streams, %d remote listeners, %s stream window, dial timeout %s",
		pr.MaxStreams, pr.MaxListeners, sizeText(int64(pr.StreamWindow)), time.Duration(pr.DialTimeout)*time.Millisecond))
}

// printChain shows a presented chain, the path the verifier accepted and
// why it is trusted: the anchor and the issuing CA from the bundle.
func printChain(p *printer, presented, verified []*x509.Certificate, ver *pki.Verifier, bundle string) {
	p.field("presented", chainText(presented)+"  (leaf first, as sent)")
	p.field("verified path", chainText(verified))
	if len(verified) < 2 || ver == nil {
		return
	}
	cas := ver.CAs()
	anchor := verified[len(verified)-1]
	where := "is in " + bundle
	if !inBundle(anchor, cas) {
		where = "is NOT in " + bundle
	}
	why := []string{}
	for _, c := range verified[1 : len(verified)-1] {
		if inBundle(c, cas) {
			why = append(why, "and the path passes through "+name(c)+", the issuing CA that bundle requires")
			break
		}
	}
	p.field("trusted", name(anchor)+" "+where, why...)
}

// printLeaf shows what a leaf certificate is valid for and how to pin it.
func printLeaf(p *printer, leaf *x509.Certificate) {
	p.field("key usage", strings.Join(ekuNames(leaf), ", "))
	p.field("valid until", fmt.Sprintf("%s (%d days)", day(leaf.NotAfter), int(time.Until(leaf.NotAfter).Hours()/24)))
	p.field("serial", leaf.SerialNumber.Text(16))
	p.field("sha256", pki.Fingerprint(leaf))
}

func printExchange(p *printer, rep *Report) {
	ex := rep.Exchange
	p.section("6. Data through the tunnel")
	p.field("request", ex.Request+"  (into the client's -L listener)")
	p.field("path", "client "+rep.ForwardAddr+" -> a yamux stream in the TLS session -> gateway "+rep.GatewayAddr+" -> service "+rep.ServiceAddr)
	lines := strings.Split(strings.TrimRight(ex.Body, "\n"), "\n")
	for i, ln := range lines {
		lines[i] = "| " + ln
	}
	p.field("answer", fmt.Sprintf("%s in %s", ex.Status, ex.Duration.Round(10*time.Microsecond)), lines...)
}

func printRefusals(p *printer, rep *Report) {
	p.section("7. Clients the gateway turns away (each also claims to be " + User + ")")
	for i, a := range rep.Refusals {
		p.printf("  %c) %s\n", 'a'+i, a.Name)
		if a.Presented == nil {
			p.sub("asked for", "a certificate from "+orNone(strings.Join(a.AcceptableCAs, "; ")))
			p.sub("sent", "nothing")
		} else {
			id := pki.IdentityFromCert(a.Presented)
			p.sub("sent", fmt.Sprintf("%s (groups %s), issued by %s", id.Name(), orNone(strings.Join(id.Groups, ", ")), id.Issuer))
		}
		r := a.Refusal
		p.sub("gateway", refusalHead(r))
		if r.Err != nil {
			p.sub("", r.Err.Error())
		}
		p.sub("client saw", a.ClientSaw)
	}
}

// refusalHead is where a refusal happened and whom the gateway saw: the
// fields of its log line other than the error.
func refusalHead(r tunnel.Refusal) string {
	s := "stage " + r.Stage
	var ve *pki.VerifyError
	if errors.As(r.Err, &ve) {
		s += ", check " + ve.Check
	}
	switch {
	case r.Identity != nil:
		s += fmt.Sprintf("; verified %s from %s", r.Identity.Name(), r.Identity.Issuer)
	case r.Presented != nil:
		s += fmt.Sprintf("; presented %s from %s (unverified)", r.Presented.Name(), r.Presented.Issuer)
	default:
		s += "; no certificate presented"
	}
	return s
}

// refusalText is a refusal on one line.
func refusalText(r tunnel.Refusal) string {
	if r.Err == nil {
		return refusalHead(r)
	}
	return refusalHead(r) + ": " + r.Err.Error()
}

func (l *lab) printTryIt(p *printer, rep *Report) {
	f := rep.Files
	prog := l.opts.Program
	q := shellQuote
	port := suggestPort()
	stop := "Ctrl-C stops it and deletes " + rep.Dir
	if l.opts.Keep {
		stop = "Ctrl-C stops it; --keep keeps " + rep.Dir
	}
	p.section("Try it yourself (the demo keeps running; " + stop + ")")
	p.printf("  through the demo client's forward:\n")
	p.printf("    curl http://%s/\n", rep.ForwardAddr)
	p.printf("    curl -d 'hi' http://%s/\n", rep.ForwardAddr)
	p.printf("  your own client, as %s, forwarding local port %s to the service:\n", User, port)
	p.printf("    %s forward --server %s --cert %s --key %s --ca %s -L 127.0.0.1:%s:%s\n",
		prog, rep.GatewayAddr, q(f.UserCert), q(f.UserKey), q(f.ServerBundle), port, rep.ServiceAddr)
	p.printf("  look at the gateway as a TLS client does (a probe speaks no twoway after the handshake,\n")
	p.printf("  so even an accepted one is logged at stage hello); then as the impostor:\n")
	p.printf("    %s probe %s --alpn %s --ca %s --cert %s --key %s\n", prog, rep.GatewayAddr, tunnel.ALPN, q(f.ServerBundle), q(f.UserCert), q(f.UserKey))
	p.printf("    %s probe %s --alpn %s --ca %s --cert %s --key %s\n", prog, rep.GatewayAddr, tunnel.ALPN, q(f.ServerBundle), q(f.ImpostorCert), q(f.ImpostorKey))
	p.printf("  read the certificates:\n")
	p.printf("    %s pki inspect %s\n", prog, q(f.UserCert))
	p.printf("    %s pki inspect %s\n", prog, q(f.GatewayCert))
	p.printf("\nWhat the gateway sees from now on:\n")
}

// watch prints what happens on the gateway and the demo client until ctx
// is cancelled.
func (l *lab) watch(ctx context.Context, p *printer) {
	e := l.ev
	var reported int64
	line := func(who, format string, a ...any) {
		p.printf("  %s %-8s %s\n", time.Now().Format("15:04:05"), who, fmt.Sprintf(format, a...))
		if d := e.dropped.Load(); d > reported {
			p.printf("  (%d events were not shown)\n", d-reported)
			reported = d
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case i := <-e.gatewayUp:
			line("gateway", "session %s from %s: %s, %s, %s", i.ID, i.Remote, peerText(i.Peer),
				tls.VersionName(i.TLS.Version), tls.CipherSuiteName(i.TLS.CipherSuite))
		case s := <-e.sessionEnd:
			line("gateway", "session %s from %s ended: %v", s.info.ID, s.info.Remote, s.err)
		case r := <-e.refused:
			line("gateway", "refused %v: %s", r.Remote, refusalText(r))
		case err := <-e.clientDown:
			line("client", "lost its session (%v); reconnecting", err)
		case i := <-e.clientUp:
			line("client", "connected, session %s", i.ID)
		}
	}
}

func peerText(id *pki.Identity) string {
	if id == nil {
		return "unknown"
	}
	return fmt.Sprintf("%s (groups %s, issued by %s)", id.Name(), orNone(strings.Join(id.Groups, ", ")), id.Issuer)
}

// suggestPort is a loopback port that is free right now, for the printed
// forward command; it is only a suggestion.
func suggestPort() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "8080"
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// relPath shortens a path in the work directory for display.
func relPath(dir, path string) string {
	if r, err := filepath.Rel(dir, path); err == nil {
		return r
	}
	return path
}

func chainText(chain []*x509.Certificate) string {
	if len(chain) == 0 {
		return "nothing"
	}
	names := make([]string, len(chain))
	for i, c := range chain {
		names[i] = name(c)
	}
	return strings.Join(names, " <- ")
}

func name(c *x509.Certificate) string {
	if c.Subject.CommonName != "" {
		return c.Subject.CommonName
	}
	return c.Subject.String()
}

func inBundle(c *x509.Certificate, cas []*x509.Certificate) bool {
	for _, ca := range cas {
		if c.Equal(ca) {
			return true
		}
	}
	return false
}

func certNames(c *x509.Certificate) []string {
	names := append([]string(nil), c.DNSNames...)
	for _, ip := range c.IPAddresses {
		names = append(names, ip.String())
	}
	return names
}

func ekuNames(c *x509.Certificate) []string {
	var out []string
	for _, u := range c.ExtKeyUsage {
		switch u {
		case x509.ExtKeyUsageServerAuth:
			out = append(out, "serverAuth (may act as a TLS server)")
		case x509.ExtKeyUsageClientAuth:
			out = append(out, "clientAuth (may act as a TLS client)")
		default:
			out = append(out, fmt.Sprintf("EKU %d", u))
		}
	}
	if len(out) == 0 {
		return []string{"any (no extended key usage)"}
	}
	return out
}

// sizeText renders a byte count in the largest binary unit that divides it.
func sizeText(n int64) string {
	for _, u := range []struct {
		shift uint
		name  string
	}{{30, "GiB"}, {20, "MiB"}, {10, "KiB"}} {
		if n > 0 && n%(1<<u.shift) == 0 {
			return fmt.Sprintf("%d %s", n>>u.shift, u.name)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}

func day(t time.Time) string { return t.UTC().Format("2006-01-02") }

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

func joinMap[T any](xs []T, f func(T) string) string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = f(x)
	}
	return orNone(strings.Join(out, ", "))
}

// shellQuote quotes a path for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:@+=,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
