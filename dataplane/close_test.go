package dataplane

import "testing"

// TestCloseReasons pins the reason texts on the wire (DESIGN.md §3): a
// change here breaks every peer that matches on them.
func TestCloseReasons(t *testing.T) {
	for _, tc := range []struct {
		reason CloseReason
		wire   string
	}{
		{CloseShutdown, "shutdown"},
		{CloseAgentDeleted, "agent-deleted"},
		{CloseAgentNotAccepted, "agent-not-accepted"},
		{CloseConnectionSuperseded, "connection-superseded"},
		{CloseCertRenewed, "cert-renewed"},
		{CloseProtocolError, "protocol-error"},
		{CloseGatewayFull, "gateway-full"},
		{CloseGatewayUnavailable, "gateway-unavailable"},
	} {
		if string(tc.reason) != tc.wire {
			t.Errorf("close reason %q, want %q on the wire", tc.reason, tc.wire)
		}
	}
}
