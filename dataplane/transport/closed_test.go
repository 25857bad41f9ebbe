package transport

import (
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/quic-go/quic-go"
)

func TestConnectionClosed(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&quic.ApplicationError{Remote: true, ErrorMessage: "shutdown"}, true},
		{fmt.Errorf("read control frame: %w", &quic.ApplicationError{ErrorMessage: "agent-deleted"}), true},
		{&quic.IdleTimeoutError{}, true},
		{&quic.StreamError{StreamID: 4, ErrorCode: 1}, false},
		{io.EOF, false},
		{errors.New("other"), false},
	} {
		if got := ConnectionClosed(tc.err); got != tc.want {
			t.Errorf("ConnectionClosed(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
