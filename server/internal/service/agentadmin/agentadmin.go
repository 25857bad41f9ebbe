// Package agentadmin implements outpost.v1.AgentAdminService: listing, reading
// and deleting enrolled agents, reading and replacing the routes they are
// approved to serve, listing the gateway replicas of the cluster, and
// reading the session audit.
package agentadmin

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/outposthq/outpost/dataplane"
	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/server/internal/approval"
	"github.com/outposthq/outpost/server/internal/cluster"
	"github.com/outposthq/outpost/server/internal/registry"
	"github.com/outposthq/outpost/server/internal/routing"
	"github.com/outposthq/outpost/server/internal/service/grpcerr"
	"github.com/outposthq/outpost/server/internal/store"
)

// Page sizes of ListAgents (DESIGN.md §6).
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
)

// Store is what the service needs from the gateway store.
type Store interface {
	GetAgent(ctx context.Context, id string) (store.Agent, error)
	ListAgents(ctx context.Context, opts store.ListAgentsOptions) ([]store.Agent, error)
	DeleteAgent(ctx context.Context, id string) error
	ListSessions(ctx context.Context, opts store.ListSessionsOptions) ([]store.SessionRecord, error)
}

// Live is the gateway's registry of connected agents.
type Live interface {
	Get(id string) (registry.Snapshot, bool)
	LastSeen(id string) (time.Time, bool)
	Forget(id string)
	// Reapprove applies a changed approval to the agent's live routes.
	Reapprove(id string) bool
}

// Approvals keeps the agents' approved routes; *approval.Book is one.
type Approvals interface {
	// SetApproved stores and applies an agent's new approved set;
	// store.ErrNotFound for an unknown or deleted agent.
	SetApproved(ctx context.Context, agentID string, set approval.Set) error
	// Forget drops a deleted agent.
	Forget(agentID string)
}

// Ambiguity names an agent's auto-detected domains that another online
// agent auto-detected too; *routing.Router is one.
type Ambiguity interface {
	AmbiguousDomains(agentID string) []string
}

// Cluster is the view of the gateway replicas sharing the store;
// *cluster.Member is one.
type Cluster interface {
	// Gateways lists the replicas with their states.
	Gateways(ctx context.Context) ([]cluster.Gateway, error)
	// AgentReplicas returns the ids of the live replicas holding a
	// connection of each of agentIDs that has any.
	AgentReplicas(ctx context.Context, agentIDs []string) (map[string][]string, error)
}

// Remote tells which agents are connected to other replicas of the
// cluster; *cluster.Presence is one.
type Remote interface {
	// Get returns the agent's presence on other replicas, and false when
	// it is connected to none.
	Get(agentID string) (routing.Remote, bool)
}

// Disconnector closes an agent's live connection with a reason.
type Disconnector func(agentID, reason string) bool

// Config configures a Service. Store, Live, Disconnect and Approvals are
// required.
type Config struct {
	Store Store
	Live  Live
	// Disconnect closes a deleted agent's connection.
	Disconnect Disconnector
	Approvals  Approvals
	// Ambiguity, if set, fills Agent.ambiguous_domains.
	Ambiguity Ambiguity
	// Cluster, if set, answers ListGateways and fills Agent.replica_ids;
	// if nil, ListGateways lists none and replica_ids stay empty.
	Cluster Cluster
	// Remote, if set, shows an agent connected only to other replicas as
	// online, with the routes it serves there; if nil, such an agent shows
	// offline.
	Remote Remote
	// Logger may be nil.
	Logger hclog.Logger
}

// Service implements AgentAdminService. It is safe for concurrent use.
type Service struct {
	outpostv1.UnimplementedAgentAdminServiceServer
	cfg Config
	log hclog.Logger
}

var _ outpostv1.AgentAdminServiceServer = (*Service)(nil)

// New checks cfg and returns a Service reading agents from the store and
// their live state from the registry.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Live == nil || cfg.Disconnect == nil || cfg.Approvals == nil {
		return nil, errors.New("agentadmin: Store, Live, Disconnect and Approvals are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	return &Service{cfg: cfg, log: cfg.Logger}, nil
}

// DeleteAgent marks the agent deleted, so it can never connect again without
// a new enrollment, and closes its live connection with "agent-deleted".
func (s *Service) DeleteAgent(ctx context.Context, req *outpostv1.DeleteAgentRequest) (*outpostv1.DeleteAgentResponse, error) {
	id, err := parseID(req.GetAgentId())
	if err != nil {
		return nil, err
	}
	if err := s.cfg.Store.DeleteAgent(ctx, id); err != nil {
		return nil, grpcerr.Agent(id, err)
	}
	s.cfg.Disconnect(id, string(dataplane.CloseAgentDeleted))
	s.cfg.Live.Forget(id)
	s.cfg.Approvals.Forget(id)
	return &outpostv1.DeleteAgentResponse{}, nil
}

// GetApprovedRoutes returns the routes an agent is approved to serve, as
// stored (canonical).
func (s *Service) GetApprovedRoutes(ctx context.Context, req *outpostv1.GetApprovedRoutesRequest) (*outpostv1.GetApprovedRoutesResponse, error) {
	a, err := s.liveAgent(ctx, req.GetAgentId())
	if err != nil {
		return nil, err
	}
	return &outpostv1.GetApprovedRoutesResponse{AgentId: a.ID, Routes: routeSet(a.ApprovedRoutes)}, nil
}

// SetApprovedRoutes replaces the routes an agent is approved to serve: it is
// stored, then applied at once to the agent's live advertisement and to its
// known routes.
func (s *Service) SetApprovedRoutes(ctx context.Context, req *outpostv1.SetApprovedRoutesRequest) (*outpostv1.SetApprovedRoutesResponse, error) {
	id, err := parseID(req.GetAgentId())
	if err != nil {
		return nil, err
	}
	set, err := approval.Parse(req.GetRoutes().GetSubnets(), req.GetRoutes().GetDomains())
	var ie *approval.InputError
	if errors.As(err, &ie) {
		return nil, grpcerr.InvalidArgument("routes."+ie.Field, ie.Reason)
	}
	if err := s.cfg.Approvals.SetApproved(ctx, id, set); err != nil {
		return nil, grpcerr.Agent(id, err)
	}
	changed := s.cfg.Live.Reapprove(id)
	subnets, domains := set.Strings()
	s.log.Info("approved routes replaced", "agent_id", id, "subnets", strings.Join(subnets, ","), "domains", strings.Join(domains, ","),
		"live_routes_changed", changed)
	return &outpostv1.SetApprovedRoutesResponse{AgentId: id, Routes: &outpostv1.RouteSet{Subnets: subnets, Domains: domains}}, nil
}

// liveAgent reads an agent that is not deleted, given its id as the request
// has it.
func (s *Service) liveAgent(ctx context.Context, rawID string) (store.Agent, error) {
	id, err := parseID(rawID)
	if err != nil {
		return store.Agent{}, err
	}
	a, err := s.cfg.Store.GetAgent(ctx, id)
	if err != nil {
		return store.Agent{}, grpcerr.Agent(id, err)
	}
	if a.DeletedAt != nil {
		return store.Agent{}, grpcerr.Errorf(store.ErrNotFound, "agent %s was deleted", id)
	}
	return a, nil
}

// ListAgents returns one page of non-deleted agents ordered by id, filtered by
// status. A page size over MaxPageSize is treated as MaxPageSize.
func (s *Service) ListAgents(ctx context.Context, req *outpostv1.ListAgentsRequest) (*outpostv1.ListAgentsResponse, error) {
	size := int(req.GetPageSize())
	switch {
	case size < 0:
		return nil, grpcerr.InvalidArgument("page_size", "must not be negative")
	case size == 0:
		size = DefaultPageSize
	case size > MaxPageSize:
		size = MaxPageSize
	}
	after, err := decodePageToken(req.GetPageToken())
	if err != nil {
		return nil, grpcerr.InvalidArgument("page_token", err.Error())
	}
	if _, ok := outpostv1.AgentStatus_name[int32(req.GetStatus())]; !ok {
		return nil, grpcerr.InvalidArgument("status", fmt.Sprintf("unknown agent status %d", req.GetStatus()))
	}
	resp := &outpostv1.ListAgentsResponse{Agents: []*outpostv1.Agent{}}
	// Filtering by status may drop rows, so read batches until the page is full
	// or the store runs out.
	for {
		batch, err := s.cfg.Store.ListAgents(ctx, store.ListAgentsOptions{AfterID: after, Limit: size + 1})
		if err != nil {
			return nil, grpcerr.From(fmt.Errorf("list agents: %w", err))
		}
		for _, a := range batch {
			if len(resp.Agents) == size {
				// One more row exists beyond this page: the next page
				// starts after the last row examined (kept or filtered
				// out), which may lie in an earlier batch.
				resp.NextPageToken = encodePageToken(after)
				return resp, s.addReplicas(ctx, resp.Agents)
			}
			after = a.ID
			v := s.view(a)
			if req.GetStatus() != outpostv1.AgentStatus_AGENT_STATUS_UNSPECIFIED && v.GetStatus() != req.GetStatus() {
				continue
			}
			resp.Agents = append(resp.Agents, v)
		}
		if len(batch) < size+1 {
			return resp, s.addReplicas(ctx, resp.Agents)
		}
	}
}

// GetAgent returns one agent; a deleted agent is NotFound.
func (s *Service) GetAgent(ctx context.Context, req *outpostv1.GetAgentRequest) (*outpostv1.GetAgentResponse, error) {
	a, err := s.liveAgent(ctx, req.GetAgentId())
	if err != nil {
		return nil, err
	}
	v := s.view(a)
	if err := s.addReplicas(ctx, []*outpostv1.Agent{v}); err != nil {
		return nil, err
	}
	return &outpostv1.GetAgentResponse{Agent: v}, nil
}

// addReplicas fills the replica_ids of agents from the cluster's records;
// the error is a gRPC status.
func (s *Service) addReplicas(ctx context.Context, agents []*outpostv1.Agent) error {
	if s.cfg.Cluster == nil || len(agents) == 0 {
		return nil
	}
	ids := make([]string, len(agents))
	for i, a := range agents {
		ids[i] = a.GetAgentId()
	}
	held, err := s.cfg.Cluster.AgentReplicas(ctx, ids)
	if err != nil {
		return grpcerr.From(fmt.Errorf("agent replicas: %w", err))
	}
	for _, a := range agents {
		a.ReplicaIds = append(a.ReplicaIds, held[a.GetAgentId()]...)
	}
	return nil
}

// ListGateways lists the gateway replicas registered in the store with
// their states and agent counts.
func (s *Service) ListGateways(ctx context.Context, _ *outpostv1.ListGatewaysRequest) (*outpostv1.ListGatewaysResponse, error) {
	resp := &outpostv1.ListGatewaysResponse{Gateways: []*outpostv1.Gateway{}}
	if s.cfg.Cluster == nil {
		return resp, nil
	}
	gws, err := s.cfg.Cluster.Gateways(ctx)
	if err != nil {
		return nil, grpcerr.From(fmt.Errorf("list gateways: %w", err))
	}
	for _, g := range gws {
		resp.Gateways = append(resp.Gateways, &outpostv1.Gateway{
			ReplicaId:    g.ID,
			Name:         g.Name,
			QuicEndpoint: g.QUICEndpoint,
			ApiEndpoint:  g.APIEndpoint,
			PeerEndpoint: g.PeerEndpoint,
			State:        gatewayState(g.State),
			StartedAt:    timestamppb.New(g.StartedAt),
			HeartbeatAt:  timestamppb.New(g.HeartbeatAt),
			AgentCount:   uint32(min(g.Agents, math.MaxUint32)),
			Self:         g.Self,
		})
	}
	return resp, nil
}

func gatewayState(s cluster.State) outpostv1.GatewayState {
	switch s {
	case cluster.Serving:
		return outpostv1.GatewayState_GATEWAY_STATE_SERVING
	case cluster.Draining:
		return outpostv1.GatewayState_GATEWAY_STATE_DRAINING
	case cluster.Gone:
		return outpostv1.GatewayState_GATEWAY_STATE_GONE
	}
	return outpostv1.GatewayState_GATEWAY_STATE_UNSPECIFIED
}

// parseID validates an agent id and returns its canonical (lowercase) form.
func parseID(s string) (string, error) {
	if s == "" {
		return "", grpcerr.InvalidArgument("agent_id", "is required")
	}
	id, err := uuid.Parse(s)
	if err != nil || len(s) != 36 {
		return "", grpcerr.InvalidArgument("agent_id", fmt.Sprintf("%q is not a UUID", s))
	}
	return id.String(), nil
}

// view builds the API view of a stored agent with its live state. Without a
// live connection an agent is offline.
func (s *Service) view(a store.Agent) *outpostv1.Agent {
	v := &outpostv1.Agent{
		AgentId:          a.ID,
		Name:             a.Name,
		Status:           outpostv1.AgentStatus_AGENT_STATUS_OFFLINE,
		Subnets:          []string{},
		Domains:          []*outpostv1.DomainRoute{},
		EnrolledAt:       timestamppb.New(a.EnrolledAt),
		ApprovedRoutes:   routeSet(a.ApprovedRoutes),
		RejectedSubnets:  []string{},
		RejectedDomains:  []*outpostv1.DomainRoute{},
		AmbiguousDomains: []string{},
		ReplicaIds:       []string{},
	}
	if !a.CertNotAfter.IsZero() {
		v.CertNotAfter = timestamppb.New(a.CertNotAfter)
	}
	snap, ok := s.cfg.Live.Get(a.ID)
	if !ok {
		if t, ok := s.cfg.Live.LastSeen(a.ID); ok {
			v.LastSeen = timestamppb.New(t)
		}
		if s.cfg.Remote != nil {
			if r, ok := s.cfg.Remote.Get(a.ID); ok {
				s.remoteView(v, r)
			}
		}
		return v
	}
	v.Status = liveStatus(snap.Status)
	v.ConnectedAt = timestamppb.New(snap.ConnectedAt)
	v.LastSeen = timestamppb.New(snap.LastSeen)
	v.RemoteAddr = snap.RemoteAddr
	v.RouteEpoch = snap.Routes.Epoch
	v.ActiveSessions = uint32(min(snap.ActiveSessions, math.MaxUint32))
	v.Subnets, v.Domains = appendRoutes(v.Subnets, v.Domains, snap.Routes)
	v.RejectedSubnets, v.RejectedDomains = appendRoutes(v.RejectedSubnets, v.RejectedDomains, snap.Rejected)
	if s.cfg.Ambiguity != nil {
		v.AmbiguousDomains = append(v.AmbiguousDomains, s.cfg.Ambiguity.AmbiguousDomains(a.ID)...)
	}
	return v
}

// remoteView fills v for an agent connected only to other replicas: online
// there, since its latest connection, with the routes it serves (already
// inside its approved set: what it advertised beyond it is not known
// here).
func (s *Service) remoteView(v *outpostv1.Agent, r routing.Remote) {
	v.Status = outpostv1.AgentStatus_AGENT_STATUS_ONLINE
	v.ConnectedAt = timestamppb.New(r.ConnectedAt)
	v.Subnets, v.Domains = appendRoutes(v.Subnets, v.Domains, r.Routes)
	if s.cfg.Ambiguity != nil {
		v.AmbiguousDomains = append(v.AmbiguousDomains, s.cfg.Ambiguity.AmbiguousDomains(r.AgentID)...)
	}
}

// appendRoutes appends r's subnets and domains in their API form.
func appendRoutes(subnets []string, domains []*outpostv1.DomainRoute, r registry.Routes) ([]string, []*outpostv1.DomainRoute) {
	for _, p := range r.Subnets {
		subnets = append(subnets, p.String())
	}
	for _, d := range r.Domains {
		domains = append(domains, &outpostv1.DomainRoute{Domain: d.Name, AutoDetected: d.AutoDetected})
	}
	return subnets, domains
}

// routeSet is a stored route set in its API form; empty lists stay
// non-nil.
func routeSet(r store.RouteSet) *outpostv1.RouteSet {
	out := &outpostv1.RouteSet{Subnets: []string{}, Domains: []string{}}
	out.Subnets = append(out.Subnets, r.Subnets...)
	out.Domains = append(out.Domains, r.Domains...)
	return out
}

func liveStatus(s registry.Status) outpostv1.AgentStatus {
	switch s {
	case registry.Online:
		return outpostv1.AgentStatus_AGENT_STATUS_ONLINE
	case registry.Unresponsive:
		return outpostv1.AgentStatus_AGENT_STATUS_UNRESPONSIVE
	default:
		return outpostv1.AgentStatus_AGENT_STATUS_OFFLINE
	}
}

func encodePageToken(afterID string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(afterID))
}

func decodePageToken(tok string) (string, error) {
	if tok == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return "", fmt.Errorf("malformed page token")
	}
	if _, err := uuid.Parse(string(b)); err != nil {
		return "", fmt.Errorf("malformed page token")
	}
	return string(b), nil
}
