package relay

import (
	"errors"
	"syscall"

	"github.com/quic-go/quic-go"
)

// PeerReset reports whether err, as Relay returns it, says that the peer of
// an endpoint reset its connection rather than that something broke: a TCP
// reset (ECONNRESET, or EPIPE for a write after one, or ENOTCONN for a
// half-close after one: the wait for data may have taken the socket's
// ECONNRESET, so the shutdown that follows finds it no longer
// connected), an error that matches
// syscall.ECONNRESET (a client stream its peer aborted), or a QUIC stream
// the peer reset with ErrorCodeReset (an agent relays its target's reset
// so). Programs such as iperf3 end their connections this way after a
// complete run; such an ending is not a failure an operator must act on.
func PeerReset(err error) bool {
	if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ENOTCONN) {
		return true
	}
	var se *quic.StreamError
	return errors.As(err, &se) && se.Remote && se.ErrorCode == ErrorCodeReset
}
