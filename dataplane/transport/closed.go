package transport

import (
	"errors"

	"github.com/quic-go/quic-go"
)

// ConnectionClosed reports whether err, returned by a stream operation,
// means the whole connection ended (closed by either side with an
// application error, or idle) rather than the stream failing on its own.
// A stream read can report the connection's end before the connection's
// context is done.
func ConnectionClosed(err error) bool {
	var (
		appErr  *quic.ApplicationError
		idleErr *quic.IdleTimeoutError
	)
	return errors.As(err, &appErr) || errors.As(err, &idleErr)
}
