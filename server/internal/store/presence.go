package store

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// AgentPresence is a live agent connected to one or more gateway replicas,
// as ListAgentPresence reads it.
type AgentPresence struct {
	AgentID string
	Name    string
	// ApprovedRoutes and LastRoutes are the agent's, as in Agent.
	ApprovedRoutes, LastRoutes RouteSet
	// ConnectedAt is when the latest of the connections listed registered.
	ConnectedAt time.Time
	// Replicas are the replicas listed holding a connection of the agent,
	// in id order; never empty.
	Replicas []PresenceReplica
}

// PresenceReplica names a replica holding an agent connection.
type PresenceReplica struct {
	ID, Name string
}

// PresenceOptions selects what ListAgentPresence reads.
type PresenceOptions struct {
	// ExcludeReplica, if set, leaves out the connections to this replica
	// (the one asking): an agent connected only there is not listed.
	ExcludeReplica string
	// HeartbeatSince leaves out the connections to replicas not heard
	// from (heartbeat) at or after it: gone replicas.
	HeartbeatSince time.Time
	// AgentIDs, if not nil, restricts the list to these agents; an empty,
	// non-nil slice lists nothing.
	AgentIDs []string
}

// ListAgentPresence implements Store.
func (s *sqlStore) ListAgentPresence(ctx context.Context, opts PresenceOptions) ([]AgentPresence, error) {
	const query = `SELECT a.id, a.name, a.approved_routes, a.last_routes, c.connected_at, r.id, r.name
FROM agent_connections c
JOIN gateway_replicas r ON r.id = c.replica_id
JOIN agents a ON a.id = c.agent_id
WHERE a.deleted_at IS NULL AND r.state = 'serving' AND r.heartbeat_at >= $1 AND r.id <> $2`
	const order = ` ORDER BY a.id, r.id`
	since := millis(opts.HeartbeatSince)
	if opts.AgentIDs == nil {
		rows, err := queryAll(ctx, s, "list agent presence", scanPresenceRow, query+order, since, opts.ExcludeReplica)
		if err != nil {
			return nil, err
		}
		return groupPresence([]AgentPresence{}, rows)
	}
	out := []AgentPresence{}
	for batch := range slices.Chunk(slices.Compact(slices.Sorted(slices.Values(opts.AgentIDs))), maxIDsPerQuery) {
		args := append([]any{since, opts.ExcludeReplica}, anys(batch)...)
		rows, err := queryAll(ctx, s, "list agent presence", scanPresenceRow,
			query+` AND a.id IN (`+placeholders(3, len(batch))+`)`+order, args...)
		if err != nil {
			return nil, err
		}
		if out, err = groupPresence(out, rows); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// presenceRow is one connection row of ListAgentPresence's query.
type presenceRow struct {
	agentID, name, approved, last string
	connectedAt                   int64
	replica                       PresenceReplica
}

func scanPresenceRow(sc scanner) (presenceRow, error) {
	var r presenceRow
	err := sc.Scan(&r.agentID, &r.name, &r.approved, &r.last, &r.connectedAt, &r.replica.ID, &r.replica.Name)
	return r, err
}

// groupPresence appends to out one AgentPresence per agent of rows, which
// are ordered by agent id.
func groupPresence(out []AgentPresence, rows []presenceRow) ([]AgentPresence, error) {
	for i, r := range rows {
		if i > 0 && rows[i-1].agentID == r.agentID {
			p := &out[len(out)-1]
			p.Replicas = append(p.Replicas, r.replica)
			if at := fromMillis(r.connectedAt); at.After(p.ConnectedAt) {
				p.ConnectedAt = at
			}
			continue
		}
		p := AgentPresence{AgentID: r.agentID, Name: r.name, ConnectedAt: fromMillis(r.connectedAt), Replicas: []PresenceReplica{r.replica}}
		if err := json.Unmarshal([]byte(r.approved), &p.ApprovedRoutes); err != nil {
			return nil, fmt.Errorf("agent %s: approved_routes: %w", r.agentID, err)
		}
		if err := json.Unmarshal([]byte(r.last), &p.LastRoutes); err != nil {
			return nil, fmt.Errorf("agent %s: last_routes: %w", r.agentID, err)
		}
		p.ApprovedRoutes, p.LastRoutes = p.ApprovedRoutes.normal(), p.LastRoutes.normal()
		out = append(out, p)
	}
	return out, nil
}
