package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/outposthq/outpost/dataplane"
)

// allReasons is every close reason the dataplane package names.
var allReasons = []dataplane.CloseReason{
	dataplane.CloseShutdown,
	dataplane.CloseAgentDeleted,
	dataplane.CloseAgentNotAccepted,
	dataplane.CloseConnectionSuperseded,
	dataplane.CloseCertRenewed,
	dataplane.CloseProtocolError,
	dataplane.CloseGatewayFull,
	dataplane.CloseGatewayUnavailable,
}

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

func TestCloseReasonOf(t *testing.T) {
	type want struct {
		reason     dataplane.CloseReason
		remote, ok bool
	}
	type closeCase struct {
		name string
		err  error
		want want
	}
	cases := []closeCase{
		{"nil", nil, want{}},
		{"EOF", io.EOF, want{}},
		{"idle timeout", &quic.IdleTimeoutError{}, want{}},
		{"stream reset", &quic.StreamError{StreamID: 4, ErrorCode: 0}, want{}},
		{"other code", &quic.ApplicationError{ErrorCode: 1, ErrorMessage: "shutdown"}, want{}},
		{"unnamed reason", &quic.ApplicationError{Remote: true, ErrorMessage: "bye"}, want{"bye", true, true}},
		{"empty reason", &quic.ApplicationError{}, want{"", false, true}},
	}
	for _, r := range allReasons {
		cases = append(cases,
			closeCase{string(r) + "/remote", &quic.ApplicationError{Remote: true, ErrorMessage: string(r)}, want{r, true, true}},
			closeCase{string(r) + "/local wrapped", fmt.Errorf("read control frame: %w", &quic.ApplicationError{ErrorMessage: string(r)}), want{r, false, true}},
		)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got want
			got.reason, got.remote, got.ok = CloseReasonOf(tc.err)
			if got != tc.want {
				t.Errorf("CloseReasonOf(%v) = %+v, want %+v", tc.err, got, tc.want)
			}
		})
	}
}

// TestCloseOverQUIC closes a real loopback connection with every reason and
// checks that both ends recognise it, the peer as remote.
func TestCloseOverQUIC(t *testing.T) {
	checkGoroutines(t)
	serverTLS, clientTLS := testTLS(t)
	ln, err := quic.ListenAddr("127.0.0.1:0", serverTLS, Config{}.QUIC())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for _, reason := range allReasons {
		t.Run(string(reason), func(t *testing.T) {
			client, err := quic.DialAddr(ctx, ln.Addr().String(), clientTLS, Config{}.QUIC())
			if err != nil {
				t.Fatal(err)
			}
			server, err := ln.Accept(ctx)
			if err != nil {
				client.CloseWithError(1, "")
				t.Fatal(err)
			}
			if err := Close(client, reason); err != nil {
				t.Fatalf("Close: %v", err)
			}
			for _, end := range []struct {
				name   string
				conn   *quic.Conn
				remote bool
			}{{"client", client, false}, {"server", server, true}} {
				select {
				case <-end.conn.Context().Done():
				case <-ctx.Done():
					t.Fatalf("%s: connection not closed", end.name)
				}
				got, remote, ok := CloseReasonOf(context.Cause(end.conn.Context()))
				if !ok || got != reason || remote != end.remote {
					t.Errorf("%s: CloseReasonOf = %q, remote %v, ok %v; want %q, remote %v", end.name, got, remote, ok, reason, end.remote)
				}
			}
		})
	}
}
