package server

import (
	"context"
	"io"

	"github.com/google/uuid"

	"github.com/outposthq/outpost/dataplane"
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
// the connected agent agentID, waiting at most 30 s for the agent's answer.
func (g *Gateway) DialAgent(ctx context.Context, agentID, target string) (AgentSession, error) {
	return g.tunnel.OpenSession(ctx, agentID, dataplane.SessionID(uuid.New()), target)
}
