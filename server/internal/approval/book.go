package approval

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/hashicorp/go-hclog"

	"github.com/outposthq/outpost/reach"
	"github.com/outposthq/outpost/server/internal/registry"
	"github.com/outposthq/outpost/server/internal/store"
)

// loadPage is the page size of Load's reads.
const loadPage = 1000

// Store is what a Book needs from the gateway store.
type Store interface {
	GetAgent(ctx context.Context, id string) (store.Agent, error)
	ListAgents(ctx context.Context, opts store.ListAgentsOptions) ([]store.Agent, error)
	SetApprovedRoutes(ctx context.Context, id string, routes store.RouteSet) error
	SetLastRoutes(ctx context.Context, id string, routes store.RouteSet) error
}

// Live is the gateway's registry of connected agents, as a Book reads it.
type Live interface {
	Get(id string) (registry.Snapshot, bool)
}

// Config configures a Book. Store and Live are required.
type Config struct {
	Store Store
	Live  Live
	// AcceptAny approves every advertised route of every agent, whatever
	// its approved set (the gateway's accept_any_routes, for labs). If
	// false, only approved routes count.
	AcceptAny bool
	// Logger may be nil.
	Logger hclog.Logger
}

// Book keeps, for every enrolled agent that is not deleted, its approved
// route set and its last advertised routes — in memory, and in the store
// for its own writes — and indexes the approved part of those last routes,
// the agent's known routes, which stay known while the agent is offline.
//
// It approves advertisements for the registry (registry.Approver) and
// answers which agent's known routes cover a target (Covering), so that a
// target an offline agent serves is never dialed directly. Create it with
// New and fill it with Load before agents connect. It is safe for
// concurrent use.
type Book struct {
	cfg Config
	log hclog.Logger

	// writeMu serializes SetApproved: its store write and memory update.
	writeMu sync.Mutex

	// mu guards the fields below. Book never calls into the registry while
	// holding it: the registry calls Approve under its own lock.
	mu     sync.RWMutex
	agents map[string]*record
	// forgotten are deleted agents: never added back.
	forgotten map[string]bool
	known     knownIndex
}

// record is what a Book holds about one agent.
type record struct {
	name     string
	approved *Matcher
	// last is the agent's last advertisement taken, as advertised.
	last registry.Routes
	// known is what the agent contributes to the index.
	known contribution
}

var _ registry.Approver = (*Book)(nil)

// New returns an empty Book.
func New(cfg Config) (*Book, error) {
	if cfg.Store == nil || cfg.Live == nil {
		return nil, errors.New("approval: Store and Live are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	return &Book{
		cfg:       cfg,
		log:       cfg.Logger,
		agents:    make(map[string]*record),
		forgotten: make(map[string]bool),
		known:     newKnownIndex(),
	}, nil
}

// Load reads every enrolled agent that is not deleted from the store, with
// its approved and last routes. Call it once, before agents connect. It
// warns about agents that have no approved route (enrolled before routes
// were approved, or approved nothing): everything they advertise is refused
// until an operator approves routes.
func (b *Book) Load(ctx context.Context) error {
	var unapproved []string
	count := 0
	for after := ""; ; {
		page, err := b.cfg.Store.ListAgents(ctx, store.ListAgentsOptions{AfterID: after, Limit: loadPage})
		if err != nil {
			return fmt.Errorf("approval: load agents: %w", err)
		}
		for _, a := range page {
			after = a.ID
			if a.DeletedAt != nil {
				continue
			}
			b.Admit(a)
			count++
			if len(a.ApprovedRoutes.Subnets)+len(a.ApprovedRoutes.Domains) == 0 {
				unapproved = append(unapproved, a.Name)
			}
		}
		if len(page) < loadPage {
			break
		}
	}
	b.log.Info("loaded the agents' approved and last advertised routes", "agents", count)
	if len(unapproved) > 0 && !b.cfg.AcceptAny {
		b.log.Warn("agents without approved routes: every route they advertise is refused until routes are approved (AgentAdminService.SetApprovedRoutes)",
			"count", len(unapproved), "agents", strings.Join(unapproved[:min(len(unapproved), 10)], ", "))
	}
	return nil
}

// Admit adds an enrolled agent the Book does not hold yet (enrolled since
// Load), with the routes the store has for it; for an agent it holds, it
// only refreshes the name. A deleted or forgotten agent is ignored. The
// tunnel calls it when it admits a connection.
func (b *Book) Admit(a store.Agent) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if a.DeletedAt != nil || b.forgotten[a.ID] {
		return
	}
	if rec := b.agents[a.ID]; rec != nil {
		rec.name = a.Name
		return
	}
	rec := &record{
		name:     a.Name,
		approved: Compile(setFromStore(a.ApprovedRoutes)),
		last:     fromStrings(a.LastRoutes.Subnets, a.LastRoutes.Domains),
	}
	b.agents[a.ID] = rec
	b.reindexLocked(a.ID, rec)
}

// Refresh brings the Book's record of a live agent that is not connected
// to this replica in line with what the store holds of it — its name,
// approved set and last routes — since another replica of the cluster may
// have changed them (cluster.Presence calls it). An agent the Book does
// not hold yet (enrolled through another replica since Load) is added; a
// forgotten one is ignored; one connected here is left to the local path.
func (b *Book) Refresh(agentID, name string, approved, last store.RouteSet) {
	if _, live := b.cfg.Live.Get(agentID); live {
		return
	}
	m, routes := Compile(setFromStore(approved)), fromStrings(last.Subnets, last.Domains)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.forgotten[agentID] {
		return
	}
	rec := b.agents[agentID]
	if rec == nil {
		rec = &record{}
		b.agents[agentID] = rec
	}
	rec.name, rec.approved, rec.last = name, m, routes
	b.reindexLocked(agentID, rec)
}

// Approve implements registry.Approver: the routes inside the agent's
// approved set are accepted, the rest refused; an agent the Book does not
// hold has nothing approved. With Config.AcceptAny every route is accepted.
func (b *Book) Approve(agentID string, routes registry.Routes) (accepted, rejected registry.Routes) {
	if b.cfg.AcceptAny {
		return AcceptAll(routes)
	}
	b.mu.RLock()
	var m *Matcher
	if rec := b.agents[agentID]; rec != nil {
		m = rec.approved
	}
	b.mu.RUnlock()
	return m.Split(routes)
}

// Advertised records routes, an advertisement the gateway took from the
// agent (not a drain's withdrawal), as the agent's last routes: in memory
// at once, then in the store when they differ from the stored ones. An
// agent the Book does not hold (deleted) is ignored. It returns the store's
// error.
func (b *Book) Advertised(ctx context.Context, agentID string, routes registry.Routes) error {
	b.mu.Lock()
	rec := b.agents[agentID]
	if rec == nil {
		b.mu.Unlock()
		return nil
	}
	changed := !sameAdvertised(rec.last, routes)
	rec.last = registry.Routes{Epoch: routes.Epoch, Subnets: slices.Clone(routes.Subnets), Domains: slices.Clone(routes.Domains)}
	if changed {
		b.reindexLocked(agentID, rec)
	}
	b.mu.Unlock()
	if !changed {
		return nil
	}
	subnets, domains := advertised(routes)
	err := b.cfg.Store.SetLastRoutes(ctx, agentID, store.RouteSet{Subnets: subnets, Domains: domains})
	if errors.Is(err, store.ErrNotFound) {
		return nil // deleted meanwhile: nothing to remember
	}
	return err
}

// SetApproved replaces the agent's approved set, in the store then in
// memory; the caller then applies it to the live advertisement
// (registry.Reapprove). It returns store.ErrNotFound (wrapped) for an
// unknown or deleted agent, or another store error.
func (b *Book) SetApproved(ctx context.Context, agentID string, set Set) error {
	b.writeMu.Lock()
	defer b.writeMu.Unlock()
	subnets, domains := set.Strings()
	if err := b.cfg.Store.SetApprovedRoutes(ctx, agentID, store.RouteSet{Subnets: subnets, Domains: domains}); err != nil {
		return err
	}
	b.mu.RLock()
	_, held := b.agents[agentID]
	b.mu.RUnlock()
	if !held {
		// Enrolled since Load and not connected yet: the store has the rest.
		a, err := b.cfg.Store.GetAgent(ctx, agentID)
		if err != nil {
			return err
		}
		b.Admit(a)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if rec := b.agents[agentID]; rec != nil {
		rec.approved = Compile(set)
		b.reindexLocked(agentID, rec)
	}
	return nil
}

// Forget drops a deleted agent: its approval and its known routes. The
// agent is never added back.
func (b *Book) Forget(agentID string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.forgotten[agentID] = true
	if rec := b.agents[agentID]; rec != nil {
		b.known.withdraw(agentID, rec.known)
		delete(b.agents, agentID)
	}
}

// reindexLocked brings the agent's known routes in the index in line with
// its last routes and its approval.
func (b *Book) reindexLocked(agentID string, rec *record) {
	b.known.withdraw(agentID, rec.known)
	rec.known = contributionOf(serving(rec.approved, rec.last, b.cfg.AcceptAny))
	b.known.add(agentID, rec.known)
}

// Serving returns the routes an agent serves by what the store holds of it:
// its last advertised routes inside its approved set, or all of them with
// acceptAny (the gateway's accept_any_routes). They are what a Book
// indexes as the agent's known routes, and what the other replicas of a
// cluster route to the agent (cluster.Presence). Routes that do not parse
// are dropped; domains come back not auto-detected, which the store does
// not record.
func Serving(approved, last store.RouteSet, acceptAny bool) registry.Routes {
	var m *Matcher
	if !acceptAny {
		m = Compile(setFromStore(approved))
	}
	return serving(m, fromStrings(last.Subnets, last.Domains), acceptAny)
}

// serving is Serving with the approved set compiled and the last routes
// read.
func serving(approved *Matcher, last registry.Routes, acceptAny bool) registry.Routes {
	if acceptAny {
		return last
	}
	accepted, _ := approved.Split(last)
	return accepted
}

// sameAdvertised reports whether two advertisements hold the same routes,
// whatever their epochs.
func sameAdvertised(a, b registry.Routes) bool {
	return slices.Equal(a.Subnets, b.Subnets) && slices.Equal(a.Domains, b.Domains)
}

// setFromStore reads a stored approved set, skipping entries that do not
// parse (the API stores only valid ones).
func setFromStore(rs store.RouteSet) Set {
	var s Set
	for _, v := range rs.Subnets {
		if p, err := reach.ParseSubnet(v); err == nil {
			s.Subnets = append(s.Subnets, p)
		}
	}
	for _, v := range rs.Domains {
		if d, err := reach.ParseDomain(v); err == nil {
			s.Domains = append(s.Domains, d)
		}
	}
	return s.canonical()
}
