package server

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/server/internal/service/grpcerr"
	"github.com/outposthq/outpost/server/internal/store"
	"github.com/outposthq/outpost/server/internal/token"
)

// routeService implements outpost.v1.RouteResolveService on the gateway's
// router and token issuer.
type routeService struct {
	outpostv1.UnimplementedRouteResolveServiceServer
	g *Gateway
}

var _ outpostv1.RouteResolveServiceServer = (*routeService)(nil)

// ResolveTarget returns the decision a session to the target would take now.
func (s *routeService) ResolveTarget(_ context.Context, req *outpostv1.ResolveTargetRequest) (*outpostv1.ResolveTargetResponse, error) {
	d, err := s.g.decide(req.GetTarget(), req.GetAgentId())
	if err != nil {
		return nil, statusOf(err)
	}
	return d.response(), nil
}

// CreateSession mints a session token for the target.
func (s *routeService) CreateSession(ctx context.Context, req *outpostv1.CreateSessionRequest) (*outpostv1.CreateSessionResponse, error) {
	// Validate the target (and the agent id) the way a connect will.
	if _, err := s.g.decide(req.GetTarget(), req.GetAgentId()); err != nil {
		return nil, statusOf(err)
	}
	agentID := ""
	if req.GetAgentId() != "" {
		id := uuid.MustParse(req.GetAgentId()).String()
		a, err := s.g.store.GetAgent(ctx, id)
		if err != nil {
			return nil, grpcerr.From(fmt.Errorf("agent %s: %w", id, err))
		}
		if a.DeletedAt != nil {
			return nil, grpcerr.From(fmt.Errorf("agent %s was deleted: %w", id, store.ErrNotFound))
		}
		agentID = id
	}
	ttl := req.GetTtl().AsDuration().Truncate(time.Second)
	if req.GetTtl() != nil && req.GetTtl().CheckValid() != nil || ttl < 0 {
		return nil, grpcerr.InvalidArgument("ttl", "must be a non-negative duration")
	}
	if max := time.Duration(s.g.cfg.MaxSessionTTL); ttl > max {
		return nil, grpcerr.InvalidArgument("ttl", fmt.Sprintf("%v is above this gateway's maximum of %v", ttl, max))
	}
	tok, claims, err := s.g.tokens.NewSession(token.SessionClaims{
		Target: req.GetTarget(), AgentID: agentID, Reusable: req.GetReusable(),
	}, ttl)
	if err != nil {
		return nil, grpcerr.From(err)
	}
	s.g.log.Info("session token created", "session_id", claims.ID, "target", claims.Target,
		"agent_id", agentID, "reusable", claims.Reusable, "expires_at", claims.ExpiresAt.Time)
	return &outpostv1.CreateSessionResponse{
		SessionId:           claims.ID,
		Token:               tok,
		ConnectUrl:          s.g.connectURL(),
		ExpiresAt:           timestamppb.New(claims.ExpiresAt.Time),
		GatewayCaSpkiSha256: s.g.pki.CASPKISHA256(),
	}, nil
}

// connectURL is the WebSocket URL of the client entry.
func (g *Gateway) connectURL() string {
	u, err := url.Parse(g.cfg.PublicURL)
	if err != nil {
		return ""
	}
	u.Scheme = "wss"
	u.Path = strings.TrimSuffix(u.Path, "/") + connectPath
	return u.String()
}

// statusOf turns a decide error into InvalidArgument naming the field.
func statusOf(err error) error {
	var ie *inputError
	if errors.As(err, &ie) {
		return grpcerr.InvalidArgument(ie.field, ie.reason)
	}
	return grpcerr.From(err)
}
