// Package routeresolve implements outpost.v1.RouteResolveService (DESIGN.md
// §6, §8–9): ResolveTarget answers the session broker's routing decision
// without connecting, and CreateSession mints session tokens.
package routeresolve

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/types/known/timestamppb"

	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/server/internal/broker"
	"github.com/outposthq/outpost/server/internal/service/grpcerr"
	"github.com/outposthq/outpost/server/internal/store"
	"github.com/outposthq/outpost/server/internal/token"
)

// AgentStore is what CreateSession needs from the store.
type AgentStore interface {
	GetAgent(ctx context.Context, id string) (store.Agent, error)
}

// Config configures a Service. Broker, Tokens and Store are required.
type Config struct {
	Broker *broker.Broker
	Tokens *token.Issuer
	Store  AgentStore
	// ConnectURL is the wss:// URL of the client entry, returned with each
	// session token.
	ConnectURL string
	// CASPKISHA256 is the hex pin of the gateway CA, returned with each
	// session token.
	CASPKISHA256 string
	// MaxSessionTTL caps a session token's lifetime. If zero,
	// token.MaxSessionTTL.
	MaxSessionTTL time.Duration
	// Logger may be nil.
	Logger hclog.Logger
}

// Service implements outpostv1.RouteResolveServiceServer. It is safe for
// concurrent use.
type Service struct {
	outpostv1.UnimplementedRouteResolveServiceServer
	cfg Config
	log hclog.Logger
}

var _ outpostv1.RouteResolveServiceServer = (*Service)(nil)

// New checks cfg and returns a Service.
func New(cfg Config) (*Service, error) {
	if cfg.Broker == nil || cfg.Tokens == nil || cfg.Store == nil {
		return nil, errors.New("routeresolve: Broker, Tokens and Store are required")
	}
	if cfg.MaxSessionTTL == 0 {
		cfg.MaxSessionTTL = token.MaxSessionTTL
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	return &Service{cfg: cfg, log: cfg.Logger}, nil
}

// ResolveTarget returns the decision a session to the target would take now.
func (s *Service) ResolveTarget(_ context.Context, req *outpostv1.ResolveTargetRequest) (*outpostv1.ResolveTargetResponse, error) {
	d, err := s.cfg.Broker.Decide(req.GetTarget(), req.GetAgentId())
	if err != nil {
		return nil, grpcerr.From(err)
	}
	resp := &outpostv1.ResolveTargetResponse{Decision: d.Kind, Reason: d.Reason, Candidates: []*outpostv1.Candidate{}}
	for _, c := range d.Candidates {
		resp.Candidates = append(resp.Candidates, &outpostv1.Candidate{AgentId: c.AgentID, Name: c.Name, MatchedRoute: c.MatchedRoute})
	}
	return resp, nil
}

// CreateSession mints a session token for the target.
func (s *Service) CreateSession(ctx context.Context, req *outpostv1.CreateSessionRequest) (*outpostv1.CreateSessionResponse, error) {
	// Validate the target (and the agent id) the way a connect will.
	if _, err := s.cfg.Broker.Decide(req.GetTarget(), req.GetAgentId()); err != nil {
		return nil, grpcerr.From(err)
	}
	agentID := ""
	if req.GetAgentId() != "" {
		id := uuid.MustParse(req.GetAgentId()).String()
		a, err := s.cfg.Store.GetAgent(ctx, id)
		if err != nil {
			return nil, grpcerr.Agent(id, err)
		}
		if a.DeletedAt != nil {
			return nil, grpcerr.Errorf(store.ErrNotFound, "agent %s was deleted", id)
		}
		agentID = id
	}
	ttl := req.GetTtl().AsDuration().Truncate(time.Second)
	if req.GetTtl() != nil && req.GetTtl().CheckValid() != nil || ttl < 0 {
		return nil, grpcerr.InvalidArgument("ttl", "must be a non-negative duration")
	}
	if max := s.cfg.MaxSessionTTL; ttl > max {
		return nil, grpcerr.InvalidArgument("ttl", fmt.Sprintf("%v is above this gateway's maximum of %v", ttl, max))
	}
	tok, claims, err := s.cfg.Tokens.NewSession(token.SessionClaims{
		Target: req.GetTarget(), AgentID: agentID, Reusable: req.GetReusable(),
	}, ttl)
	if err != nil {
		return nil, grpcerr.From(err)
	}
	s.log.Info("session token created", "session_id", claims.ID, "target", claims.Target,
		"agent_id", agentID, "reusable", claims.Reusable, "expires_at", claims.ExpiresAt.Time)
	return &outpostv1.CreateSessionResponse{
		SessionId:           claims.ID,
		Token:               tok,
		ConnectUrl:          s.cfg.ConnectURL,
		ExpiresAt:           timestamppb.New(claims.ExpiresAt.Time),
		GatewayCaSpkiSha256: s.cfg.CASPKISHA256,
	}, nil
}
