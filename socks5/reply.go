package socks5

import (
	"context"
	"errors"
	"net"
	"os"
	"syscall"
)

// ReplyFor chooses the reply code for the outcome of a dial: nil is
// success, a *ReplyError or ErrNotAllowed says so itself, and common
// network errors map to the nearest RFC 1928 code. Anything else is a
// general failure.
func ReplyFor(err error) ReplyCode {
	if err == nil {
		return ReplySucceeded
	}
	var re *ReplyError
	if errors.As(err, &re) {
		return re.Code
	}
	var dnsErr *net.DNSError
	switch {
	case errors.Is(err, ErrNotAllowed):
		return ReplyNotAllowed
	case errors.Is(err, syscall.ECONNREFUSED):
		return ReplyConnectionRefused
	case errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.ENETDOWN):
		return ReplyNetworkUnreachable
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.EHOSTDOWN), errors.As(err, &dnsErr):
		return ReplyHostUnreachable
	case isTimeout(err):
		// RFC 1928 leaves the mapping open. A connect timeout is the
		// nearest thing to a TTL running out, and it tells the user the
		// host did not answer, which "refused" or "unreachable" would not.
		return ReplyTTLExpired
	}
	return ReplyGeneralFailure
}

func isTimeout(err error) bool {
	if errors.Is(err, syscall.ETIMEDOUT) || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
