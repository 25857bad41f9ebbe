//go:build linux || darwin || freebsd || netbsd || openbsd

package relay

import (
	"errors"
	"syscall"
)

// tcpWaits tells whether TCPEndpoint.WaitRead works on this platform.
const tcpWaits = true

// WaitRead blocks until the connection has data, its end or an error to
// read, without reading it (ReadWaiter): it peeks at one byte without
// blocking and otherwise waits in the runtime's network poller, as a Read
// does. The read deadline and Abort end the wait. Only the goroutine that
// reads may call it.
func (e *TCPEndpoint) WaitRead() error {
	if e.raw == nil {
		raw, err := e.conn.SyscallConn()
		if err != nil {
			return err
		}
		var peek [1]byte
		e.raw, e.ready = raw, func(fd uintptr) bool {
			for {
				_, _, err := syscall.Recvfrom(int(fd), peek[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
				switch {
				case errors.Is(err, syscall.EINTR):
					continue
				case errors.Is(err, syscall.EAGAIN):
					return false // nothing yet: wait for the poller
				case err != nil:
					// The socket's error (ECONNRESET) is reported once:
					// the Read that follows must return it, not EOF.
					e.peekErr = err
				}
				return true
			}
		}
	}
	return e.raw.Read(e.ready)
}
