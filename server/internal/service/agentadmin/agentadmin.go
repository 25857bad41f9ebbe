// Package agentadmin implements outpost.v1.AgentAdminService: listing, reading
// and deleting enrolled agents.
package agentadmin

import (
	"context"
	"encoding/base64"
	"fmt"
	"math"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/outposthq/outpost/dataplane"
	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
	"github.com/outposthq/outpost/server/internal/registry"
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
}

// Live is the gateway's registry of connected agents.
type Live interface {
	Get(id string) (registry.Snapshot, bool)
	LastSeen(id string) (time.Time, bool)
	Forget(id string)
}

// Disconnector closes an agent's live connection with a reason.
type Disconnector func(agentID, reason string) bool

// Service implements AgentAdminService. It is safe for concurrent use.
type Service struct {
	outpostv1.UnimplementedAgentAdminServiceServer
	store      Store
	live       Live
	disconnect Disconnector
}

var _ outpostv1.AgentAdminServiceServer = (*Service)(nil)

// New returns a Service reading agents from s and their live state from live;
// DeleteAgent closes a deleted agent's connection with disconnect.
func New(s Store, live Live, disconnect Disconnector) *Service {
	return &Service{store: s, live: live, disconnect: disconnect}
}

// DeleteAgent marks the agent deleted, so it can never connect again without
// a new enrollment, and closes its live connection with "agent-deleted".
func (s *Service) DeleteAgent(ctx context.Context, req *outpostv1.DeleteAgentRequest) (*outpostv1.DeleteAgentResponse, error) {
	id, err := parseID(req.GetAgentId())
	if err != nil {
		return nil, err
	}
	if err := s.store.DeleteAgent(ctx, id); err != nil {
		return nil, grpcerr.Agent(id, err)
	}
	s.disconnect(id, string(dataplane.CloseAgentDeleted))
	s.live.Forget(id)
	return &outpostv1.DeleteAgentResponse{}, nil
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
		batch, err := s.store.ListAgents(ctx, store.ListAgentsOptions{AfterID: after, Limit: size + 1})
		if err != nil {
			return nil, grpcerr.From(fmt.Errorf("list agents: %w", err))
		}
		for _, a := range batch {
			if len(resp.Agents) == size {
				// One more row exists beyond this page: the next page
				// starts after the last row examined (kept or filtered
				// out), which may lie in an earlier batch.
				resp.NextPageToken = encodePageToken(after)
				return resp, nil
			}
			after = a.ID
			v := s.view(a)
			if req.GetStatus() != outpostv1.AgentStatus_AGENT_STATUS_UNSPECIFIED && v.GetStatus() != req.GetStatus() {
				continue
			}
			resp.Agents = append(resp.Agents, v)
		}
		if len(batch) < size+1 {
			return resp, nil
		}
	}
}

// GetAgent returns one agent; a deleted agent is NotFound.
func (s *Service) GetAgent(ctx context.Context, req *outpostv1.GetAgentRequest) (*outpostv1.GetAgentResponse, error) {
	id, err := parseID(req.GetAgentId())
	if err != nil {
		return nil, err
	}
	a, err := s.store.GetAgent(ctx, id)
	if err != nil {
		return nil, grpcerr.Agent(id, err)
	}
	if a.DeletedAt != nil {
		return nil, grpcerr.Errorf(store.ErrNotFound, "agent %s was deleted", id)
	}
	return &outpostv1.GetAgentResponse{Agent: s.view(a)}, nil
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
		AgentId:    a.ID,
		Name:       a.Name,
		Status:     outpostv1.AgentStatus_AGENT_STATUS_OFFLINE,
		Subnets:    []string{},
		Domains:    []*outpostv1.DomainRoute{},
		EnrolledAt: timestamppb.New(a.EnrolledAt),
	}
	if !a.CertNotAfter.IsZero() {
		v.CertNotAfter = timestamppb.New(a.CertNotAfter)
	}
	snap, ok := s.live.Get(a.ID)
	if !ok {
		if t, ok := s.live.LastSeen(a.ID); ok {
			v.LastSeen = timestamppb.New(t)
		}
		return v
	}
	v.Status = liveStatus(snap.Status)
	v.ConnectedAt = timestamppb.New(snap.ConnectedAt)
	v.LastSeen = timestamppb.New(snap.LastSeen)
	v.RemoteAddr = snap.RemoteAddr
	v.RouteEpoch = snap.Routes.Epoch
	v.ActiveSessions = uint32(min(snap.ActiveSessions, math.MaxUint32))
	for _, p := range snap.Routes.Subnets {
		v.Subnets = append(v.Subnets, p.String())
	}
	for _, d := range snap.Routes.Domains {
		v.Domains = append(v.Domains, &outpostv1.DomainRoute{Domain: d.Name, AutoDetected: d.AutoDetected})
	}
	return v
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
