// Package servertest is for tests and benchmarks only: it opens sessions
// through a running gateway's agents without a session token, routing or an
// audit record, which no production caller may do. Production code must use
// the client entry (package client) instead.
package servertest

import (
	"context"
	"crypto/ecdsa"
	"io"

	"github.com/google/uuid"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/server"
	"github.com/outposthq/outpost/server/internal/testhook"
	"github.com/outposthq/outpost/server/internal/tunnel"
)

// AgentSession is a session open through an agent to a target: Read and Write
// carry the target's bytes, CloseWrite half-closes towards the target, Close
// ends the session.
type AgentSession interface {
	io.ReadWriteCloser
	CloseWrite() error
}

// AgentError is why a session could not be opened through an agent; its
// Reason holds the agent's own words when the agent refused.
type AgentError = tunnel.AgentError

// Errors an *AgentError wraps.
var (
	ErrAgentNotConnected = tunnel.ErrNotConnected
	ErrAgentSessionLimit = tunnel.ErrSessionLimit
	ErrAgentRefused      = tunnel.ErrRefused
	ErrAgentTimeout      = tunnel.ErrConnectTimeout
)

// DialAgent opens a session to target ("host:port", IPv6 bracketed) through
// the connected agent agentID of g, waiting at most the gateway's agent
// answer timeout (30 s by default) for the agent's answer. Errors are
// *AgentError values wrapping the sentinels above.
func DialAgent(ctx context.Context, g *server.Gateway, agentID, target string) (AgentSession, error) {
	return testhook.GatewayTunnel(g).OpenSession(ctx, agentID, dataplane.SessionID(uuid.New()), target)
}

// CAKey returns the private key of g's CA, wherever the store keeps it, for
// tests that forge certificates the gateway trusts (an impostor agent).
func CAKey(g *server.Gateway) *ecdsa.PrivateKey { return testhook.GatewayCAKey(g) }
