package tunnel

import (
	"net"
	"sync"
)

// corkConn is the TCP connection as crypto/tls sees it. crypto/tls writes
// every record (at most 16 KiB of payload) with its own Write, so a 64 KiB
// superpacket costs four send syscalls, four TCP pushes and, at the peer,
// up to four wakeups of its reader. While corked, corkConn collects the
// records instead and uncork sends them with one Write: the flusher corks
// around every multi-record batch (muxConn.writeBatch).
//
// Writes from elsewhere (crypto/tls answering a key update from the read
// side, close_notify) are serialized with the flush by mu, so records leave
// in the order crypto/tls produced them.
type corkConn struct {
	net.Conn
	mu     sync.Mutex
	corked bool
	buf    []byte // collected records while corked; from batchPool, so an idle session keeps none
}

func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.corked {
		c.buf = append(c.buf, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// cork starts collecting writes.
func (c *corkConn) cork() {
	c.mu.Lock()
	c.corked = true
	if c.buf == nil {
		c.buf = (*batchPool.Get().(*[]byte))[:0]
	}
	c.mu.Unlock()
}

// uncork writes what was collected in one Write (under the write deadline
// already set on the connection) and stops collecting.
func (c *corkConn) uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.corked = false
	b := c.buf
	c.buf = nil
	if b == nil {
		return nil
	}
	var err error
	if len(b) > 0 {
		_, err = c.Conn.Write(b)
	}
	recycle(b)
	return err
}
