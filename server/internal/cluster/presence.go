package cluster

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/outposthq/outpost/server/internal/approval"
	"github.com/outposthq/outpost/server/internal/routing"
	"github.com/outposthq/outpost/server/internal/store"
)

// DefaultPresenceReconcile is PresenceConfig.ReconcileInterval's default.
const DefaultPresenceReconcile = 10 * time.Second

// presenceQueryTimeout bounds one read of the presence.
const presenceQueryTimeout = 10 * time.Second

// PresenceStore reads where agents are connected; store.Store is one.
type PresenceStore interface {
	ListAgentPresence(ctx context.Context, opts store.PresenceOptions) ([]store.AgentPresence, error)
}

// PresenceListener listens for the changes of agent presence; *store.Postgres
// is one.
type PresenceListener interface {
	ListenPresence(ctx context.Context, ev store.PresenceEvents, cfg store.ListenConfig) error
}

// RemoteSink receives the agents connected to other replicas;
// *routing.Router is one. Its methods are called from the Presence's loop,
// one at a time.
type RemoteSink interface {
	// SetRemote records an agent connected to other replicas, or its
	// change.
	SetRemote(r routing.Remote)
	// RemoveRemote forgets an agent that is no longer connected to any
	// other replica (or was deleted).
	RemoveRemote(agentID string)
}

// KnownRoutes keeps the enrolled agents' known routes; *approval.Book is
// one.
type KnownRoutes interface {
	// Refresh records what the store holds of an agent that another
	// replica may have changed.
	Refresh(agentID, name string, approved, last store.RouteSet)
}

// PresenceConfig configures a Presence. Store, Listener, Sink and
// ReplicaID are required.
type PresenceConfig struct {
	Store    PresenceStore
	Listener PresenceListener
	Sink     RemoteSink
	// ReplicaID is this replica's id: its own connections are left out.
	ReplicaID string
	// Known, if set, is told what the store holds of every agent seen
	// connected to another replica whenever it changes, so that this
	// replica still knows the agent's routes once it goes offline.
	Known KnownRoutes
	// AcceptAny counts every advertised route of every agent as approved
	// (the gateway's accept_any_routes), as the local path does.
	AcceptAny bool
	// ReconcileInterval is how often everything is read again besides
	// after every (re)connection of the listener: the most a lost
	// notification stays unnoticed, and how late a gone replica's agents
	// are dropped at most after it is gone. If zero, 10 s.
	ReconcileInterval time.Duration
	// GoneAfter is how long after its last heartbeat a replica is gone
	// (MemberConfig.GoneAfter): the agents it alone holds are dropped. If
	// zero, DefaultGoneAfter (30 s).
	GoneAfter time.Duration
	// Listen tunes the listener's reconnection.
	Listen store.ListenConfig
	// Now is the clock. If nil, time.Now.
	Now func() time.Time
	// Logger may be nil.
	Logger hclog.Logger
}

// Presence keeps this replica's view of the agents connected to the other
// replicas of the cluster (DESIGN.md §10a): for every live agent connected
// to at least one other serving replica heard from within GoneAfter, its
// name, the routes it serves (approval.Serving: its last advertised routes
// inside its approved set), its latest connection time and the replicas
// holding it. It hands every change to its Sink (the router).
//
// It follows the store's presence notifications (PostgreSQL LISTEN/NOTIFY),
// re-reading only the agents named, many in one query, and reads
// everything again after every (re)connection of its listener and every
// ReconcileInterval, one query each time, so a lost notification heals
// within the interval. Only PostgreSQL-backed gateways run it: a SQLite
// gateway is a cluster of one.
//
// Create it with NewPresence and run it with Run. Its methods are safe for
// concurrent use.
type Presence struct {
	cfg PresenceConfig
	log hclog.Logger

	wake chan struct{} // one token: dirty agents or a full read pending

	mu sync.Mutex
	// Guarded by mu: what the loop has to read again.
	dirty map[string]bool
	full  bool
	// agents is the view, keyed by agent id; written by the loop only.
	agents map[string]*presentAgent
}

// presentAgent is one agent of the view, with what it was computed from.
type presentAgent struct {
	raw    store.AgentPresence
	remote routing.Remote
}

// NewPresence checks cfg and returns a Presence with an empty view.
func NewPresence(cfg PresenceConfig) (*Presence, error) {
	if cfg.Store == nil || cfg.Listener == nil || cfg.Sink == nil || cfg.ReplicaID == "" {
		return nil, errors.New("cluster: Store, Listener, Sink and ReplicaID are required")
	}
	if cfg.ReconcileInterval <= 0 {
		cfg.ReconcileInterval = DefaultPresenceReconcile
	}
	if cfg.GoneAfter <= 0 {
		cfg.GoneAfter = DefaultGoneAfter
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	return &Presence{
		cfg: cfg, log: cfg.Logger, wake: make(chan struct{}, 1),
		dirty: make(map[string]bool), agents: make(map[string]*presentAgent),
	}, nil
}

// Run listens for presence changes and keeps the view current until ctx
// ends, then returns nil once its goroutines have stopped. A store that
// cannot be reached is read again at the next notification or interval;
// the view is kept meanwhile.
func (p *Presence) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Go(func() { p.loop(ctx) })
	err := p.cfg.Listener.ListenPresence(ctx, presenceEvents{p}, p.cfg.Listen)
	wg.Wait()
	return err
}

// Get returns the view of agent id and true, or false when it is not
// connected to another serving replica.
func (p *Presence) Get(id string) (routing.Remote, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	a := p.agents[id]
	if a == nil {
		return routing.Remote{}, false
	}
	return a.remote, true
}

// Agents returns the view, in agent id order.
func (p *Presence) Agents() []routing.Remote {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]routing.Remote, 0, len(p.agents))
	for _, id := range slices.Sorted(maps.Keys(p.agents)) {
		out = append(out, p.agents[id].remote)
	}
	return out
}

// presenceEvents is the store.PresenceEvents of a Presence: it only notes
// what to read, for the loop.
type presenceEvents struct{ p *Presence }

// Resync implements store.PresenceEvents.
func (e presenceEvents) Resync(context.Context) { e.p.mark("", true) }

// PresenceChanged implements store.PresenceEvents.
func (e presenceEvents) PresenceChanged(id string) { e.p.mark(id, false) }

// mark notes agent id (if not "") or everything (full) to read again and
// wakes the loop.
func (p *Presence) mark(id string, full bool) {
	p.mu.Lock()
	if full {
		p.full = true
	} else if id != "" {
		p.dirty[id] = true
	}
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// loop reads what was marked, and everything every ReconcileInterval,
// until ctx ends.
func (p *Presence) loop(ctx context.Context) {
	t := time.NewTicker(p.cfg.ReconcileInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.mark("", true)
		case <-p.wake:
		}
		p.mu.Lock()
		full, dirty := p.full, p.dirty
		p.full, p.dirty = false, make(map[string]bool)
		p.mu.Unlock()
		switch {
		case full:
			p.readAll(ctx)
		case len(dirty) > 0:
			p.readSome(ctx, slices.Collect(maps.Keys(dirty)))
		}
	}
}

// options returns the presence query's options as of now.
func (p *Presence) options(ids []string) store.PresenceOptions {
	return store.PresenceOptions{
		ExcludeReplica: p.cfg.ReplicaID,
		HeartbeatSince: p.cfg.Now().Add(-p.cfg.GoneAfter),
		AgentIDs:       ids,
	}
}

// readAll reads every agent's presence and replaces the view with it.
func (p *Presence) readAll(ctx context.Context) {
	list, ok := p.read(ctx, nil)
	if !ok {
		return
	}
	p.mu.Lock()
	held := slices.Collect(maps.Keys(p.agents))
	p.mu.Unlock()
	p.update(list, held)
}

// readSome reads the presence of agents ids and updates their part of the
// view.
func (p *Presence) readSome(ctx context.Context, ids []string) {
	if list, ok := p.read(ctx, ids); ok {
		p.update(list, ids)
	}
}

// update records the agents of list and removes those of ids (agents the
// read covered) that list does not hold.
func (p *Presence) update(list []store.AgentPresence, ids []string) {
	seen := make(map[string]bool, len(list))
	for _, a := range list {
		seen[a.AgentID] = true
		p.put(a)
	}
	for _, id := range ids {
		if !seen[id] {
			p.remove(id)
		}
	}
}

// read runs one presence query (ids nil: every agent); on failure it
// marks a full read for the next wake-up and reports false.
func (p *Presence) read(ctx context.Context, ids []string) ([]store.AgentPresence, bool) {
	qctx, cancel := context.WithTimeout(ctx, presenceQueryTimeout)
	defer cancel()
	list, err := p.cfg.Store.ListAgentPresence(qctx, p.options(ids))
	if err != nil {
		if ctx.Err() == nil {
			p.log.Warn("could not read the agents connected to other replicas; keeping the last view until the next reconcile",
				"agents", len(ids), "error", err)
			p.mu.Lock()
			p.full = true
			p.mu.Unlock()
		}
		return nil, false
	}
	return list, true
}

// put records a, unless the view already has it as it is.
func (p *Presence) put(a store.AgentPresence) {
	p.mu.Lock()
	prev := p.agents[a.AgentID]
	p.mu.Unlock()
	if prev != nil && samePresence(prev.raw, a) {
		return
	}
	r := routing.Remote{
		AgentID:     a.AgentID,
		Name:        a.Name,
		Routes:      approval.Serving(a.ApprovedRoutes, a.LastRoutes, p.cfg.AcceptAny),
		ConnectedAt: a.ConnectedAt,
		Replicas:    make([]routing.Replica, len(a.Replicas)),
	}
	for i, rep := range a.Replicas {
		r.Replicas[i] = routing.Replica{ID: rep.ID, Name: rep.Name}
	}
	// The router first: once Get shows the agent, its routes are live.
	if p.cfg.Known != nil {
		p.cfg.Known.Refresh(a.AgentID, a.Name, a.ApprovedRoutes, a.LastRoutes)
	}
	p.cfg.Sink.SetRemote(r)
	p.mu.Lock()
	p.agents[a.AgentID] = &presentAgent{raw: a, remote: r}
	p.mu.Unlock()
	if prev == nil {
		p.log.Debug("agent connected to another replica", "agent_id", a.AgentID, "agent", a.Name, "replicas", len(a.Replicas))
	}
}

// remove drops agent id from the view, if it is there.
func (p *Presence) remove(id string) {
	p.mu.Lock()
	_, ok := p.agents[id]
	p.mu.Unlock()
	if !ok {
		return
	}
	// The router first, as in put.
	p.cfg.Sink.RemoveRemote(id)
	p.mu.Lock()
	delete(p.agents, id)
	p.mu.Unlock()
	p.log.Debug("agent no longer connected to another replica", "agent_id", id)
}

// samePresence reports whether two reads of an agent's presence are equal.
func samePresence(a, b store.AgentPresence) bool {
	return a.Name == b.Name && a.ConnectedAt.Equal(b.ConnectedAt) &&
		slices.Equal(a.Replicas, b.Replicas) &&
		sameRouteSet(a.ApprovedRoutes, b.ApprovedRoutes) && sameRouteSet(a.LastRoutes, b.LastRoutes)
}

func sameRouteSet(a, b store.RouteSet) bool {
	return slices.Equal(a.Subnets, b.Subnets) && slices.Equal(a.Domains, b.Domains)
}
