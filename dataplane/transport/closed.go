package transport

import (
	"errors"

	"github.com/quic-go/quic-go"

	"github.com/outposthq/outpost/dataplane"
)

// CloseCode is the QUIC application error code of every close that carries a
// dataplane.CloseReason (DESIGN.md §3).
const CloseCode quic.ApplicationErrorCode = 0

// Close closes conn with CloseCode and reason. Closing an already closed
// connection does nothing. The error is quic-go's; it is nil in practice.
func Close(conn *quic.Conn, reason dataplane.CloseReason) error {
	return conn.CloseWithError(CloseCode, string(reason))
}

// CloseReasonOf returns the reason of the application close that err
// carries (wrapped or not), and whether the peer sent it (remote) rather
// than this end. ok is false when err carries no application close with
// CloseCode. The reason is returned as sent: it may be one the dataplane
// package does not name.
func CloseReasonOf(err error) (reason dataplane.CloseReason, remote, ok bool) {
	var appErr *quic.ApplicationError
	if !errors.As(err, &appErr) || appErr.ErrorCode != CloseCode {
		return "", false, false
	}
	return dataplane.CloseReason(appErr.ErrorMessage), appErr.Remote, true
}

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
