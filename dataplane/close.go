package dataplane

// CloseReason is the reason text sent when either end closes the tunnel's
// QUIC connection, always with application error code 0 (DESIGN.md §3). The
// QUIC side — closing with a reason and recognising one in an error — is in
// package transport. The zero value is the empty reason, which no end sends
// on purpose.
type CloseReason string

// Close reasons.
const (
	// CloseShutdown: the sender is shutting down (gateway stop, agent
	// drain done, or an agent whose control stream failed).
	CloseShutdown CloseReason = "shutdown"
	// CloseAgentDeleted: the gateway closes a deleted agent's connection;
	// the agent must be enrolled again.
	CloseAgentDeleted CloseReason = "agent-deleted"
	// CloseAgentNotAccepted: the gateway refused the agent's identity at
	// admission (chain, URI SAN, unknown or deleted agent, key mismatch).
	// Agents treat it, like CloseAgentDeleted, as final once a second
	// attempt confirms it: the gateway must send it only when a retry
	// cannot succeed (CloseGatewayUnavailable otherwise).
	CloseAgentNotAccepted CloseReason = "agent-not-accepted"
	// CloseConnectionSuperseded: the gateway closes an agent's older
	// connection when the same agent connects again.
	CloseConnectionSuperseded CloseReason = "connection-superseded"
	// CloseCertRenewed: the agent closes its connection after a certificate
	// renewal, to reconnect with the new certificate.
	CloseCertRenewed CloseReason = "cert-renewed"
	// CloseProtocolError: the gateway closes a connection whose control
	// stream broke the protocol beyond what may be skipped (no control
	// stream in time, an oversized frame, a closed or failed stream). It is
	// not in DESIGN.md §3's list, which names the reasons an agent acts on.
	CloseProtocolError CloseReason = "protocol-error"
	// CloseGatewayFull: the gateway holds its maximum number of agent
	// connections (max_agents) and refuses a new agent for now; the agent
	// retries with backoff. Not in DESIGN.md §3's list either.
	CloseGatewayFull CloseReason = "gateway-full"
	// CloseGatewayUnavailable: the gateway could not decide on the agent's
	// admission for now (its store did not answer); the agent retries with
	// backoff. Not in DESIGN.md §3's list either.
	CloseGatewayUnavailable CloseReason = "gateway-unavailable"
)
