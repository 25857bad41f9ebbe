package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/outposthq/outpost/server/internal/registry"
	"github.com/outposthq/outpost/server/internal/store"
)

// Defaults of MemberConfig.
const (
	DefaultHeartbeat  = 10 * time.Second
	DefaultGoneAfter  = 30 * time.Second
	DefaultSweepGrace = 5 * time.Minute
	// storeCallTimeout bounds each store call of the member's loop.
	storeCallTimeout = 5 * time.Second
	// leaveTimeout bounds the last writes when the replica stops, so a
	// store that is down delays a stop little.
	leaveTimeout = 2 * time.Second
	// maxChangesPerWrite bounds the connection changes written in one
	// transaction.
	maxChangesPerWrite = 500
)

// ReplicaStore is what a Member needs from the store; store.Store is one.
type ReplicaStore interface {
	RegisterReplica(ctx context.Context, r store.Replica) error
	HeartbeatReplica(ctx context.Context, id string, state store.ReplicaState, at time.Time) error
	ListReplicas(ctx context.Context) ([]store.Replica, error)
	SweepReplicas(ctx context.Context, heartbeatBefore time.Time, keep string) ([]string, error)
	UpdateAgentConnections(ctx context.Context, replicaID string, changes []store.ConnectionChange) error
	SetAgentConnections(ctx context.Context, replicaID string, conns []store.AgentConnection) error
	AgentReplicas(ctx context.Context, agentIDs []string, heartbeatSince time.Time) (map[string][]string, error)
}

// MemberConfig configures a Member. Store, Registry and Replica.ID are
// required.
type MemberConfig struct {
	Store ReplicaStore
	// Registry is this replica's registry of connected agents, whose
	// connections the member records in the store.
	Registry *registry.Registry
	// Replica describes this replica: ID (required, stable: see
	// LoadOrCreateID), Name and endpoints. StartedAt, HeartbeatAt, State
	// and Agents are the member's.
	Replica store.Replica
	// Heartbeat is how often the replica records that it is alive (and
	// sweeps gone replicas). If zero, DefaultHeartbeat (10 s).
	Heartbeat time.Duration
	// GoneAfter is how long after its last heartbeat a replica is gone.
	// At least twice Heartbeat. If zero, DefaultGoneAfter (30 s).
	GoneAfter time.Duration
	// SweepGrace is how long a gone replica is still listed (as gone)
	// before a survivor deletes its rows. If zero, DefaultSweepGrace
	// (5 min).
	SweepGrace time.Duration
	// Now is the clock. If nil, time.Now.
	Now func() time.Time
	// Logger may be nil.
	Logger hclog.Logger
}

// State is a replica's state as ListGateways shows it.
type State int

// The states of a replica.
const (
	Serving State = iota + 1
	Draining
	// Gone: no heartbeat for GoneAfter, whatever the replica last said.
	Gone
)

func (s State) String() string {
	switch s {
	case Serving:
		return "serving"
	case Draining:
		return "draining"
	case Gone:
		return "gone"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Gateway is one replica as the cluster sees it.
type Gateway struct {
	store.Replica
	State State
	// Self marks the replica asking.
	Self bool
}

// Member is this replica's membership of the cluster: it registers the
// replica in the store, heartbeats, sweeps the rows of gone replicas and
// records the agent connections the replica holds (agent_connections). A
// store that cannot be reached never blocks the gateway: what could not be
// written is written again, whole, once the store answers. Create it with
// NewMember, run it with Run. Its methods are safe for concurrent use.
type Member struct {
	cfg MemberConfig
	log hclog.Logger
	id  string

	draining atomic.Bool
	wake     chan struct{} // one token: pending connection changes

	mu sync.Mutex
	// Guarded by mu: the generation of each agent's live connection as
	// last seen, and the changes not yet written (the latest per agent).
	gens    map[string]uint64
	pending map[string]connChange
}

// connChange is the latest change of one agent's connection to this
// replica: connected with generation gen at at, or gone (removed).
type connChange struct {
	gen     uint64
	at      time.Time
	removed bool
}

// NewMember checks cfg and returns a Member that watches cfg.Registry from
// now on.
func NewMember(cfg MemberConfig) (*Member, error) {
	if cfg.Store == nil || cfg.Registry == nil || cfg.Replica.ID == "" {
		return nil, errors.New("cluster: Store, Registry and Replica.ID are required")
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = DefaultHeartbeat
	}
	if cfg.GoneAfter <= 0 {
		cfg.GoneAfter = DefaultGoneAfter
	}
	if cfg.GoneAfter < 2*cfg.Heartbeat {
		return nil, fmt.Errorf("cluster: GoneAfter (%v) must be at least twice Heartbeat (%v)", cfg.GoneAfter, cfg.Heartbeat)
	}
	if cfg.SweepGrace <= 0 {
		cfg.SweepGrace = DefaultSweepGrace
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	m := &Member{
		cfg: cfg, log: cfg.Logger.With("replica_id", cfg.Replica.ID), id: cfg.Replica.ID,
		wake: make(chan struct{}, 1), gens: make(map[string]uint64), pending: make(map[string]connChange),
	}
	cfg.Registry.Watch(m.changed)
	return m, nil
}

// ID is this replica's id.
func (m *Member) ID() string { return m.id }

// changed is the registry watcher: it notes connections that appear or
// leave (not route changes) for the loop to write. It runs under the
// registry's lock, so it only takes m.mu and signals.
func (m *Member) changed(c registry.Change) {
	m.mu.Lock()
	if c.Entry == nil {
		gen, ok := m.gens[c.AgentID]
		if !ok {
			m.mu.Unlock()
			return
		}
		delete(m.gens, c.AgentID)
		m.pending[c.AgentID] = connChange{gen: gen, removed: true}
	} else {
		gen := c.Entry.Generation()
		if m.gens[c.AgentID] == gen {
			m.mu.Unlock()
			return
		}
		m.gens[c.AgentID] = gen
		m.pending[c.AgentID] = connChange{gen: gen, at: c.Entry.ConnectedAt}
	}
	m.mu.Unlock()
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// Run registers the replica, then heartbeats, sweeps and writes the
// agent connections until ctx ends; then it records the replica's last
// state with no agent connections (they are closed by then) and returns
// nil. A store that cannot be reached is retried at every heartbeat.
func (m *Member) Run(ctx context.Context) error {
	started := m.cfg.Now()
	registered, resync := false, true
	// blocked: a store call failed; wait for the next heartbeat before
	// trying again, however many changes arrive meanwhile.
	blocked := false
	tick := time.NewTicker(m.cfg.Heartbeat)
	defer tick.Stop()
	for {
		if !blocked && !registered {
			registered, resync = m.register(ctx, started), true
			blocked = !registered
		}
		if !blocked && resync {
			resync = !m.writeAll(ctx)
			blocked = resync
		}
		if !blocked {
			resync = !m.writePending(ctx)
			blocked = resync
		}
		select {
		case <-ctx.Done():
			m.leave(started)
			return nil
		case <-m.wake:
		case <-tick.C:
			blocked = false
			if registered {
				registered = m.heartbeat(ctx)
				m.sweep(ctx)
			}
		}
	}
}

// state is the state the replica records.
func (m *Member) state() store.ReplicaState {
	if m.draining.Load() {
		return store.ReplicaDraining
	}
	return store.ReplicaServing
}

// call runs one store call bounded by storeCallTimeout.
func call(ctx context.Context, fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, storeCallTimeout)
	defer cancel()
	return fn(ctx)
}

// register records the replica; it reports success.
func (m *Member) register(ctx context.Context, started time.Time) bool {
	r := m.cfg.Replica
	r.StartedAt, r.HeartbeatAt, r.State = started, m.cfg.Now(), m.state()
	if err := call(ctx, func(ctx context.Context) error { return m.cfg.Store.RegisterReplica(ctx, r) }); err != nil {
		m.log.Warn("could not register this replica in the store; retrying at the next heartbeat", "error", err)
		return false
	}
	m.log.Info("replica registered", "name", r.Name, "quic_endpoint", r.QUICEndpoint, "api_endpoint", r.APIEndpoint)
	return true
}

// heartbeat records that the replica is alive; it reports whether the
// replica is still registered (false: it was swept, register again).
func (m *Member) heartbeat(ctx context.Context) bool {
	err := call(ctx, func(ctx context.Context) error {
		return m.cfg.Store.HeartbeatReplica(ctx, m.id, m.state(), m.cfg.Now())
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		m.log.Warn("this replica's registration was swept (its heartbeats were missed); registering again")
		return false
	case err != nil:
		m.log.Warn("replica heartbeat failed", "error", err)
	}
	return true
}

// sweep deletes the rows of replicas gone for longer than the grace.
func (m *Member) sweep(ctx context.Context) {
	var swept []string
	before := m.cfg.Now().Add(-m.cfg.GoneAfter - m.cfg.SweepGrace)
	err := call(ctx, func(ctx context.Context) (err error) {
		swept, err = m.cfg.Store.SweepReplicas(ctx, before, m.id)
		return err
	})
	if err != nil {
		m.log.Debug("sweeping gone replicas failed", "error", err)
		return
	}
	for _, id := range swept {
		m.log.Info("swept a gone replica and its agent connections", "gone_replica_id", id)
	}
}

// writeAll replaces the replica's recorded connections with those of the
// registry, and drops what was pending; it reports success.
func (m *Member) writeAll(ctx context.Context) bool {
	m.mu.Lock()
	clear(m.pending)
	m.mu.Unlock()
	var conns []store.AgentConnection
	for _, s := range m.cfg.Registry.List() {
		conns = append(conns, store.AgentConnection{AgentID: s.AgentID, ReplicaID: m.id, Generation: s.Generation, ConnectedAt: s.ConnectedAt})
	}
	err := call(ctx, func(ctx context.Context) error { return m.cfg.Store.SetAgentConnections(ctx, m.id, conns) })
	if err != nil {
		m.log.Warn("could not record this replica's agent connections; retrying at the next heartbeat", "agents", len(conns), "error", err)
		return false
	}
	return true
}

// writePending writes the connection changes noted since the last write,
// in one transaction per maxChangesPerWrite; it reports success (false:
// write them all again).
func (m *Member) writePending(ctx context.Context) bool {
	m.mu.Lock()
	pending := m.pending
	m.pending = make(map[string]connChange)
	m.mu.Unlock()
	changes := make([]store.ConnectionChange, 0, len(pending))
	for agentID, c := range pending {
		changes = append(changes, store.ConnectionChange{
			AgentConnection: store.AgentConnection{AgentID: agentID, ReplicaID: m.id, Generation: c.gen, ConnectedAt: c.at},
			Removed:         c.removed,
		})
	}
	for batch := range slices.Chunk(changes, maxChangesPerWrite) {
		err := call(ctx, func(ctx context.Context) error { return m.cfg.Store.UpdateAgentConnections(ctx, m.id, batch) })
		if err != nil {
			m.log.Warn("could not record agent connection changes; recording them all again at the next heartbeat", "changes", len(batch), "error", err)
			return false
		}
	}
	return true
}

// leave records the replica's last state, without agent connections,
// once Run's context has ended.
func (m *Member) leave(started time.Time) {
	ctx, cancel := context.WithTimeout(context.Background(), leaveTimeout)
	defer cancel()
	if err := m.cfg.Store.SetAgentConnections(ctx, m.id, nil); err != nil {
		m.log.Debug("could not clear this replica's agent connections at stop", "error", err)
	}
	if err := m.cfg.Store.HeartbeatReplica(ctx, m.id, m.state(), m.cfg.Now()); err != nil {
		m.log.Debug("could not record this replica's last heartbeat at stop", "error", err)
	}
	m.log.Info("replica left the cluster", "state", m.state(), "up", m.cfg.Now().Sub(started).Round(time.Second))
}

// Drain marks the replica draining (a graceful shutdown) and records it at
// once, bounded by ctx; the state is kept until the replica stops. It
// returns the store's error, if any: the next heartbeat records it then.
func (m *Member) Drain(ctx context.Context) error {
	m.draining.Store(true)
	err := m.cfg.Store.HeartbeatReplica(ctx, m.id, store.ReplicaDraining, m.cfg.Now())
	if err != nil {
		return fmt.Errorf("cluster: record draining: %w", err)
	}
	m.log.Info("replica draining")
	return nil
}

// Gateways returns every registered replica with its state as of now: gone
// when its last heartbeat is older than GoneAfter.
func (m *Member) Gateways(ctx context.Context) ([]Gateway, error) {
	list, err := m.cfg.Store.ListReplicas(ctx)
	if err != nil {
		return nil, err
	}
	// The store keeps heartbeats in milliseconds and compares with a cutoff
	// truncated so (AgentReplicas): the same cutoff here, so that a replica
	// listed gone is never still counted as holding agents.
	cutoff := m.cfg.Now().Add(-m.cfg.GoneAfter).Truncate(time.Millisecond)
	out := make([]Gateway, 0, len(list))
	for _, r := range list {
		g := Gateway{Replica: r, State: Serving, Self: r.ID == m.id}
		switch {
		case r.HeartbeatAt.Before(cutoff):
			g.State = Gone
		case r.State == store.ReplicaDraining:
			g.State = Draining
		}
		out = append(out, g)
	}
	return out, nil
}

// AgentReplicas returns, for those of agentIDs connected anywhere, the ids
// of the replicas (not gone) that hold a connection of the agent, in
// order.
func (m *Member) AgentReplicas(ctx context.Context, agentIDs []string) (map[string][]string, error) {
	return m.cfg.Store.AgentReplicas(ctx, agentIDs, m.cfg.Now().Add(-m.cfg.GoneAfter))
}
