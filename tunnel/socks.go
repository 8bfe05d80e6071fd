package tunnel

import (
	"errors"
	"net"
	"net/netip"

	"github.com/twoway/twoway/socks5"
)

// serveSOCKS serves one -D connection: SOCKS5 negotiation here, the dial
// at the gateway, the gateway's answer translated into the SOCKS reply.
func (c *Client) serveSOCKS(f Forward, conn net.Conn) {
	req, err := socks5.Accept(conn, socks5.Options{Authenticate: c.cfg.SOCKSAuth, Timeout: c.cfg.HandshakeTimeout})
	if err != nil {
		// Accept has already answered a client that spoke SOCKS5.
		c.log.Debug("SOCKS request refused", "forward", f.String(), "from", conn.RemoteAddr().String(), "err", err)
		conn.Close()
		return
	}
	host := req.Host
	if host == "" {
		host = req.Addr.String()
	}
	cs, st, rep, err := c.open(host, req.Port)
	if err != nil {
		c.log.Info("SOCKS connect refused", "forward", f.String(), "target", req.Address(), "err", err)
		_ = req.Reply(socksReply(err), netip.AddrPort{})
		conn.Close()
		return
	}
	defer cs.streamDone()
	// The gateway's side of the connection, as RFC 1928 asks for
	// BND.ADDR; zero if it did not say.
	bound, _ := netip.ParseAddrPort(rep.Bound)
	if err := req.Reply(socks5.ReplySucceeded, bound); err != nil {
		cs.resetStream(st) // the gateway's connection to the target goes too
		conn.Close()
		return
	}
	cs.proxy(st, conn)
}

// socksReply maps why a connect failed to the nearest SOCKS5 reply.
func socksReply(err error) socks5.ReplyCode {
	var se *StreamError
	if errors.As(err, &se) {
		switch se.Code {
		case CodeDenied:
			return socks5.ReplyNotAllowed
		case CodeRefused:
			return socks5.ReplyConnectionRefused
		case CodeUnreachable, CodeNotFound:
			return socks5.ReplyHostUnreachable
		case CodeTimeout:
			return socks5.ReplyTTLExpired
		}
		return socks5.ReplyGeneralFailure
	}
	if errors.Is(err, ErrUnreachable) { // no session to the gateway
		return socks5.ReplyNetworkUnreachable
	}
	return socks5.ReplyFor(err)
}
