package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"
)

// ReplicaState is what a registered gateway replica says it is doing.
type ReplicaState string

// The states a replica records. Whether it is gone is not recorded: a
// reader decides it from HeartbeatAt.
const (
	// ReplicaServing: accepting agents and clients.
	ReplicaServing ReplicaState = "serving"
	// ReplicaDraining: shutting down gracefully; its agents should move.
	ReplicaDraining ReplicaState = "draining"
)

// Replica is a gateway replica registered in the store.
type Replica struct {
	ID           string // stable across the replica's restarts; required
	Name         string // for operators
	QUICEndpoint string // host:port of its own QUIC listener
	APIEndpoint  string // host:port of its own API listener
	PeerEndpoint string // host:port of its peer link; "" while it has none
	StartedAt    time.Time
	HeartbeatAt  time.Time
	State        ReplicaState // ReplicaServing or ReplicaDraining
	// Agents counts the agent connections recorded for the replica; set
	// by ListReplicas, ignored by RegisterReplica.
	Agents int
}

// ConnectionChange is a change of an agent's connection to a replica:
// the connection it now holds, or, when Removed, the end of the
// connection of that Generation.
type ConnectionChange struct {
	AgentConnection
	Removed bool
}

// AgentConnection is one agent's connection to one replica.
type AgentConnection struct {
	AgentID   string
	ReplicaID string
	// Generation numbers the agent's connections on that replica; a later
	// connection has a greater one.
	Generation  uint64
	ConnectedAt time.Time
}

const replicaColumns = `id, name, quic_endpoint, api_endpoint, peer_endpoint, started_at, heartbeat_at, state`

// validState reports whether st may be recorded.
func validState(st ReplicaState) bool { return st == ReplicaServing || st == ReplicaDraining }

// RegisterReplica implements Store.
func (s *sqlStore) RegisterReplica(ctx context.Context, r Replica) error {
	if r.ID == "" || !validState(r.State) {
		return fmt.Errorf("%w: a replica needs an id and the state serving or draining", ErrInvalid)
	}
	started, beat := s.orNow(r.StartedAt), s.orNow(r.HeartbeatAt)
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO gateway_replicas (`+replicaColumns+`)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (id) DO UPDATE SET name = excluded.name, quic_endpoint = excluded.quic_endpoint,
    api_endpoint = excluded.api_endpoint, peer_endpoint = excluded.peer_endpoint,
    started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, state = excluded.state`,
			r.ID, r.Name, r.QUICEndpoint, r.APIEndpoint, r.PeerEndpoint, millis(started), millis(beat), string(r.State))
		return err
	})
	return wrapErr("register replica", err)
}

// HeartbeatReplica implements Store.
func (s *sqlStore) HeartbeatReplica(ctx context.Context, id string, state ReplicaState, at time.Time) error {
	if !validState(state) {
		return fmt.Errorf("%w: replica state %q", ErrInvalid, state)
	}
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		return execOne(ctx, tx, fmt.Errorf("%w: replica %q", ErrNotFound, id),
			`UPDATE gateway_replicas SET heartbeat_at = $2, state = $3 WHERE id = $1`,
			id, millis(s.orNow(at)), string(state))
	})
	return wrapErr("replica heartbeat", err)
}

// ListReplicas implements Store.
func (s *sqlStore) ListReplicas(ctx context.Context) ([]Replica, error) {
	return queryAll(ctx, s, "list replicas", scanReplica, `SELECT `+replicaColumns+`,
    (SELECT COUNT(*) FROM agent_connections c WHERE c.replica_id = r.id)
FROM gateway_replicas r ORDER BY started_at, id`)
}

func scanReplica(sc scanner) (Replica, error) {
	var (
		r             Replica
		started, beat int64
		state         string
	)
	if err := sc.Scan(&r.ID, &r.Name, &r.QUICEndpoint, &r.APIEndpoint, &r.PeerEndpoint, &started, &beat, &state, &r.Agents); err != nil {
		return Replica{}, err
	}
	r.StartedAt, r.HeartbeatAt, r.State = fromMillis(started), fromMillis(beat), ReplicaState(state)
	return r, nil
}

// SweepReplicas implements Store.
func (s *sqlStore) SweepReplicas(ctx context.Context, heartbeatBefore time.Time, keep string) ([]string, error) {
	var swept []string
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		swept = nil
		rows, err := tx.QueryContext(ctx, `DELETE FROM gateway_replicas WHERE heartbeat_at < $1 AND id <> $2 RETURNING id`,
			millis(heartbeatBefore), keep)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return err
			}
			swept = append(swept, id)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, wrapErr("sweep replicas", err)
	}
	slices.Sort(swept)
	return swept, nil
}

// UpdateAgentConnections implements Store.
func (s *sqlStore) UpdateAgentConnections(ctx context.Context, replicaID string, changes []ConnectionChange) error {
	for _, c := range changes {
		if c.AgentID == "" || c.ReplicaID != replicaID {
			return fmt.Errorf("%w: agent connection %+v is not one of replica %q", ErrInvalid, c.AgentConnection, replicaID)
		}
	}
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		for _, c := range changes {
			if !c.Removed {
				if err := putAgentConnection(ctx, tx, c.AgentConnection, s.orNow(c.ConnectedAt)); err != nil {
					return err
				}
				continue
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM agent_connections WHERE agent_id = $1 AND replica_id = $2 AND generation = $3`,
				c.AgentID, replicaID, int64(c.Generation)); err != nil {
				return err
			}
		}
		return nil
	})
	if isForeignKeyViolation(err) {
		return fmt.Errorf("%w: replica %q is not registered", ErrNotFound, replicaID)
	}
	return wrapErr("update agent connections", err)
}

func putAgentConnection(ctx context.Context, tx *sql.Tx, c AgentConnection, at time.Time) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO agent_connections (agent_id, replica_id, generation, connected_at)
VALUES ($1, $2, $3, $4)
ON CONFLICT (agent_id, replica_id) DO UPDATE SET generation = excluded.generation, connected_at = excluded.connected_at`,
		c.AgentID, c.ReplicaID, int64(c.Generation), millis(at))
	return err
}

// SetAgentConnections implements Store.
func (s *sqlStore) SetAgentConnections(ctx context.Context, replicaID string, conns []AgentConnection) error {
	for _, c := range conns {
		if c.AgentID == "" || c.ReplicaID != replicaID {
			return fmt.Errorf("%w: agent connection %+v is not one of replica %q", ErrInvalid, c, replicaID)
		}
	}
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM agent_connections WHERE replica_id = $1`, replicaID); err != nil {
			return err
		}
		for _, c := range conns {
			if err := putAgentConnection(ctx, tx, c, s.orNow(c.ConnectedAt)); err != nil {
				return err
			}
		}
		return nil
	})
	if isForeignKeyViolation(err) {
		return fmt.Errorf("%w: replica %q is not registered", ErrNotFound, replicaID)
	}
	return wrapErr("set agent connections", err)
}

// AgentReplicas implements Store.
func (s *sqlStore) AgentReplicas(ctx context.Context, agentIDs []string, heartbeatSince time.Time) (map[string][]string, error) {
	out := make(map[string][]string)
	for batch := range slices.Chunk(slices.Compact(slices.Sorted(slices.Values(agentIDs))), maxIDsPerQuery) {
		args := append([]any{millis(heartbeatSince)}, anys(batch)...)
		conns, err := queryAll(ctx, s, "agent replicas", scanConnPair, `SELECT c.agent_id, c.replica_id
FROM agent_connections c JOIN gateway_replicas r ON r.id = c.replica_id
WHERE r.heartbeat_at >= $1 AND c.agent_id IN (`+placeholders(2, len(batch))+`)
ORDER BY c.agent_id, c.replica_id`, args...)
		if err != nil {
			return nil, err
		}
		for _, c := range conns {
			out[c[0]] = append(out[c[0]], c[1])
		}
	}
	return out, nil
}

func scanConnPair(sc scanner) ([2]string, error) {
	var p [2]string
	err := sc.Scan(&p[0], &p[1])
	return p, err
}

// isForeignKeyViolation reports whether err is a broken foreign key, in
// either database's words.
func isForeignKeyViolation(err error) bool {
	if err == nil {
		return false
	}
	type coded interface{ SQLState() string }
	var c coded
	if errors.As(err, &c) && c.SQLState() == "23503" {
		return true
	}
	var sc interface{ Code() int }
	// SQLite: SQLITE_CONSTRAINT_FOREIGNKEY (787).
	return errors.As(err, &sc) && sc.Code() == 787
}
