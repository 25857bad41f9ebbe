package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/dataplane/relay"
	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/server/internal/registry"
	"github.com/outposthq/outpost/server/internal/routing"
	"github.com/outposthq/outpost/server/internal/tunnel"
)

// directDialTimeout bounds resolving and dialing a direct target (DESIGN.md §12).
const directDialTimeout = 20 * time.Second

// decision is how a session to a target is routed (DESIGN.md §8).
type decision struct {
	kind       outpostv1.Decision
	target     dataplane.Target
	candidates []routing.Candidate
	reason     string
}

// inputError is a malformed target or agent id.
type inputError struct{ field, reason string }

func (e *inputError) Error() string { return e.field + ": " + e.reason }

// decide routes target, through agentID only when it is set.
func (g *Gateway) decide(target, agentID string) (decision, error) {
	t, err := dataplane.ParseTarget(target)
	if err != nil {
		return decision{}, &inputError{"target", err.Error()}
	}
	d := decision{target: t}
	host := t.Name
	if !t.IsName() {
		host = t.Addr.String()
	}
	if agentID != "" {
		id, err := uuid.Parse(agentID)
		if err != nil {
			return decision{}, &inputError{"agent_id", fmt.Sprintf("%q is not a UUID", agentID)}
		}
		snap, ok := g.agents.Get(id.String())
		switch {
		case !ok:
			d.kind, d.reason = outpostv1.Decision_DECISION_REJECTED, fmt.Sprintf("agent %s is not connected", id)
		case snap.Status != registry.Online:
			d.kind, d.reason = outpostv1.Decision_DECISION_REJECTED, fmt.Sprintf("agent %s (%s) is %s", snap.Name, id, snap.Status)
		default:
			d.kind = outpostv1.Decision_DECISION_AGENT
			d.candidates = []routing.Candidate{{AgentID: snap.AgentID, Name: snap.Name, ConnectedAt: snap.ConnectedAt}}
			d.reason = fmt.Sprintf("agent %s was requested explicitly", snap.Name)
		}
		return d, nil
	}
	d.candidates = g.router.Lookup(nil, host)
	if len(d.candidates) > 0 {
		c := d.candidates[0]
		d.kind = outpostv1.Decision_DECISION_AGENT
		d.reason = fmt.Sprintf("%s matches %s advertised by agent %s", host, c.MatchedRoute, c.Name)
		if n := len(d.candidates) - 1; n > 0 {
			d.reason += fmt.Sprintf(" (%d more agent(s) as fallback)", n)
		}
		return d, nil
	}
	if g.cfg.allowDirect() {
		d.kind = outpostv1.Decision_DECISION_DIRECT
		d.reason = fmt.Sprintf("no online agent advertises a route to %s; the gateway connects directly", host)
	} else {
		d.kind = outpostv1.Decision_DECISION_REJECTED
		d.reason = fmt.Sprintf("no online agent advertises a route to %s and direct connections are disabled", host)
	}
	return d, nil
}

// routeResponse is the API view of a decision.
func (d decision) response() *outpostv1.ResolveTargetResponse {
	resp := &outpostv1.ResolveTargetResponse{Decision: d.kind, Reason: d.reason, Candidates: []*outpostv1.Candidate{}}
	for _, c := range d.candidates {
		resp.Candidates = append(resp.Candidates, &outpostv1.Candidate{AgentId: c.AgentID, Name: c.Name, MatchedRoute: c.MatchedRoute})
	}
	return resp
}

// connected is an open path to a target.
type connected struct {
	endpoint relay.Endpoint
	agentID  string // "" for direct
	agent    string // agent name, for logs
}

// connectTarget opens a session to the decision's target: the candidates in
// order, the next one when an agent refuses or does not answer, or the
// gateway's own dial for DIRECT. All failures are reported together; a
// failed agent path never falls back to direct.
func (g *Gateway) connectTarget(ctx context.Context, d decision, sid dataplane.SessionID) (connected, error) {
	target := d.target.String()
	switch d.kind {
	case outpostv1.Decision_DECISION_REJECTED:
		return connected{}, errors.New(d.reason)
	case outpostv1.Decision_DECISION_DIRECT:
		dialer := net.Dialer{Timeout: directDialTimeout}
		c, err := dialer.DialContext(ctx, "tcp", target)
		if err != nil {
			return connected{}, fmt.Errorf("direct connection to %s failed: %w", target, err)
		}
		return connected{endpoint: relay.TCPConn(c.(*net.TCPConn))}, nil
	}
	var reasons []string
	for _, c := range d.candidates {
		s, err := g.tunnel.OpenSession(ctx, c.AgentID, sid, target)
		if err == nil {
			return connected{endpoint: s, agentID: c.AgentID, agent: c.Name}, nil
		}
		if ctx.Err() != nil {
			return connected{}, context.Cause(ctx)
		}
		var ae *tunnel.AgentError
		if errors.As(err, &ae) && errors.Is(err, tunnel.ErrRefused) {
			reasons = append(reasons, fmt.Sprintf("agent %s refused connection: %s", c.Name, ae.Reason))
		} else {
			reasons = append(reasons, fmt.Sprintf("agent %s: %v", c.Name, err))
		}
		g.log.Debug("session candidate failed", "session_id", sid.String(), "agent", c.Name, "error", err)
	}
	return connected{}, errors.New(strings.Join(reasons, "; "))
}
