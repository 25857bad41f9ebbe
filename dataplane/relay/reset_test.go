package relay

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
	"testing"

	"github.com/quic-go/quic-go"
)

// resetLike is an error that matches syscall.ECONNRESET, as a client
// stream its peer aborted does.
type resetLike struct{}

func (resetLike) Error() string        { return "reset by the peer" }
func (resetLike) Is(target error) bool { return target == syscall.ECONNRESET }

func TestPeerReset(t *testing.T) {
	opErr := &net.OpError{Op: "read", Net: "tcp", Err: &os.SyscallError{Syscall: "read", Err: syscall.ECONNRESET}}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&Error{Side: SideA, Op: "read", Err: opErr}, true},
		{&Error{Side: SideB, Op: "write", Err: fmt.Errorf("write: %w", syscall.EPIPE)}, true},
		{&Error{Side: SideA, Op: "read", Err: resetLike{}}, true},
		{&Error{Side: SideB, Op: "read", Err: &quic.StreamError{ErrorCode: ErrorCodeReset, Remote: true}}, true},
		{&Error{Side: SideB, Op: "read", Err: &quic.StreamError{ErrorCode: ErrorCodeCanceled, Remote: true}}, false},
		{&Error{Side: SideB, Op: "read", Err: &quic.StreamError{ErrorCode: ErrorCodeReset}}, false},
		{&Error{Side: SideB, Op: "read", Err: &quic.ApplicationError{ErrorCode: 0, Remote: true}}, false},
		{&Error{Side: SideA, Op: "close write", Err: errors.New("closed")}, false},
		{&Error{Side: SideA, Op: "close write", Err: &net.OpError{Op: "close", Net: "tcp", Err: &os.SyscallError{Syscall: "shutdown", Err: syscall.ENOTCONN}}}, true},
		{io.ErrUnexpectedEOF, false},
		{nil, false},
	} {
		if got := PeerReset(tc.err); got != tc.want {
			t.Errorf("PeerReset(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
