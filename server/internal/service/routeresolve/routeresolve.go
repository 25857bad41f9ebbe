// Package routeresolve implements outpost.v1.RouteResolveService (DESIGN.md
// §6, §8–9): ResolveTarget answers the session broker's routing decision
// without connecting, and CreateSession mints session tokens.
package routeresolve

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/server/internal/auth"
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
	// MaxConnections caps the connections of a reusable token, and is
	// what one gets when it asks for none. If zero,
	// token.DefaultMaxConnections.
	MaxConnections uint32
	// MaxSessionDuration caps how long a session lasts, and is what a
	// token gets when it asks for no cap. If zero,
	// token.DefaultMaxSessionDuration.
	MaxSessionDuration time.Duration
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
	if cfg.MaxConnections == 0 {
		cfg.MaxConnections = token.DefaultMaxConnections
	}
	if cfg.MaxSessionDuration == 0 {
		cfg.MaxSessionDuration = token.DefaultMaxSessionDuration
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

// CreateSession mints a session token for the target, on behalf of the API
// key that authorized the call: the token names it (claim sub) and stops
// working when it is revoked.
func (s *Service) CreateSession(ctx context.Context, req *outpostv1.CreateSessionRequest) (*outpostv1.CreateSessionResponse, error) {
	key, ok := auth.KeyFromContext(ctx)
	if !ok || key.ID == "" {
		return nil, grpcerr.Errorf(grpcerr.ErrUnauthenticated, "session tokens are minted for an API key, and this call carries none")
	}
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
	} else if ttl == 0 {
		ttl = min(token.DefaultSessionTTL, max) // a gateway's maximum may be shorter than the default
	}
	conns, err := s.maxConnections(req)
	if err != nil {
		return nil, err
	}
	dur, err := s.maxDuration(req)
	if err != nil {
		return nil, err
	}
	c := token.SessionClaims{
		RegisteredClaims: jwt.RegisteredClaims{Subject: key.ID},
		Target:           req.GetTarget(), AgentID: agentID, Reusable: req.GetReusable(),
		MaxDurationMS: dur.Milliseconds(),
	}
	if c.Reusable {
		c.MaxConnections = conns
	}
	tok, claims, err := s.cfg.Tokens.NewSession(c, ttl)
	if err != nil {
		return nil, grpcerr.From(err)
	}
	s.log.Info("session token created", "session_id", claims.ID, "key_id", key.ID, "target", claims.Target,
		"agent_id", agentID, "reusable", claims.Reusable, "max_connections", conns, "max_session_duration", dur,
		"expires_at", claims.ExpiresAt.Time)
	return &outpostv1.CreateSessionResponse{
		SessionId:           claims.ID,
		Token:               tok,
		ConnectUrl:          s.cfg.ConnectURL,
		ExpiresAt:           timestamppb.New(claims.ExpiresAt.Time),
		GatewayCaSpkiSha256: s.cfg.CASPKISHA256,
		MaxConnections:      conns,
		MaxSessionDuration:  durationpb.New(dur),
	}, nil
}

// maxConnections is the connection cap a request asks for: exactly 1 for a
// single-use token; for a reusable one, the gateway's maximum unless it asks
// for less.
func (s *Service) maxConnections(req *outpostv1.CreateSessionRequest) (uint32, error) {
	n, max := req.GetMaxConnections(), s.cfg.MaxConnections
	switch {
	case !req.GetReusable() && n > 1:
		return 0, grpcerr.InvalidArgument("max_connections", fmt.Sprintf("a single-use token opens exactly one connection, not %d (set reusable for more)", n))
	case !req.GetReusable():
		return 1, nil
	case n > max:
		return 0, grpcerr.InvalidArgument("max_connections", fmt.Sprintf("%d is above this gateway's maximum of %d", n, max))
	case n == 0:
		return max, nil
	}
	return n, nil
}

// maxDuration is the session duration cap a request asks for, to the
// millisecond: the gateway's maximum unless it asks for less.
func (s *Service) maxDuration(req *outpostv1.CreateSessionRequest) (time.Duration, error) {
	pb, max := req.GetMaxSessionDuration(), s.cfg.MaxSessionDuration
	d := pb.AsDuration().Truncate(time.Millisecond)
	switch {
	case pb != nil && pb.CheckValid() != nil || d < 0:
		return 0, grpcerr.InvalidArgument("max_session_duration", "must be a non-negative duration")
	case pb.AsDuration() > max:
		return 0, grpcerr.InvalidArgument("max_session_duration", fmt.Sprintf("%v is above this gateway's maximum of %v", pb.AsDuration(), max))
	case d == 0 && pb.AsDuration() > 0:
		return 0, grpcerr.InvalidArgument("max_session_duration", "must be at least 1ms")
	case d == 0:
		return max.Truncate(time.Millisecond), nil
	}
	return d, nil
}
