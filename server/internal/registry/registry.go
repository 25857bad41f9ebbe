// Package registry is the gateway's live view of connected agents: who is
// connected over which connection generation, what it advertises and which
// part of that it may serve, when it was last heard from, and how many
// sessions it carries (DESIGN.md §8). It holds nothing persistent; the store
// has the enrolled agents and their approved routes, which an Approver
// applies to every advertisement.
//
// An agent's liveness has two sources: the control messages it sends (Touch;
// silent for UnresponsiveAfter, it is unresponsive, then offline), and its
// transport, which the tunnel watches: a connection on which no packet
// arrived for a few seconds is marked silent (SetSilent) and shows
// unresponsive at once, whatever its last control message. Apart from its
// status an agent can be demoted (Demote): one that just failed to answer a
// session is tried after the others until it is heard from again.
package registry

import (
	"errors"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outposthq/outpost/dataplane"
)

// Liveness thresholds (DESIGN.md §12): an agent silent for this long is
// unresponsive, then offline.
const (
	UnresponsiveAfter = 45 * time.Second
	OfflineAfter      = 90 * time.Second
)

// Status is an agent's liveness.
type Status int

// Liveness values, in order of health.
const (
	Offline Status = iota
	Unresponsive
	Online
)

func (s Status) String() string {
	switch s {
	case Online:
		return "online"
	case Unresponsive:
		return "unresponsive"
	default:
		return "offline"
	}
}

// Conn is what the registry needs from an agent's connection: a way to close
// it with a reason (an application close code 0 and a reason string).
type Conn interface {
	CloseWithReason(reason string)
}

// Routes are routes an agent advertised, with the epoch of the
// advertisement.
type Routes struct {
	Epoch   uint64
	Subnets []netip.Prefix
	Domains []dataplane.DomainRoute
}

// Entry is one live connection of an agent. Its identity fields are fixed at
// Register; the mutable parts are behind the registry's lock or atomic.
type Entry struct {
	AgentID      string
	Name         string
	RemoteAddr   string
	CertNotAfter time.Time
	ConnectedAt  time.Time
	Conn         Conn

	generation uint64 // set by Register
	lastSeen   atomic.Int64
	sessions   atomic.Int64
	reported   atomic.Uint32 // active sessions as the agent last reported
	silent     atomic.Bool   // its transport has gone quiet (SetSilent)
	demoted    atomic.Bool   // it failed to answer a session (Demote)

	// Guarded by the registry's mu.
	raw        Routes // the latest advertisement taken, as advertised
	routes     Routes // the part of raw the agent may serve
	rejected   Routes // the refused rest of raw
	advertised bool   // an advertisement was taken on this connection
	draining   bool   // the agent withdrew every route it served
}

// Generation identifies this connection among the agent's connections.
func (e *Entry) Generation() uint64 { return e.generation }

// Sessions returns the number of sessions the gateway has open on e.
func (e *Entry) Sessions() int64 { return e.sessions.Load() }

// AcquireSession counts a new session on e unless limit sessions are open
// already; it reports whether the session may go ahead. Call ReleaseSession
// when it ends.
func (e *Entry) AcquireSession(limit int64) bool {
	for {
		n := e.sessions.Load()
		if n >= limit {
			return false
		}
		if e.sessions.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// ReleaseSession ends a session counted by AcquireSession.
func (e *Entry) ReleaseSession() { e.sessions.Add(-1) }

// Demoted reports whether e failed to answer a session and was not heard
// from since (Registry.Demote).
func (e *Entry) Demoted() bool { return e.demoted.Load() }

// Snapshot is a copy of an entry's state at one moment.
type Snapshot struct {
	AgentID      string
	Name         string
	Generation   uint64
	Status       Status
	RemoteAddr   string
	ConnectedAt  time.Time
	LastSeen     time.Time
	CertNotAfter time.Time
	// Routes are the approved part of the agent's latest advertisement,
	// the routes sessions use; Rejected the refused rest.
	Routes, Rejected Routes
	// Advertised reports that an advertisement was taken on this
	// connection.
	Advertised bool
	// Draining reports that the agent withdrew every route it served on
	// this connection (an empty advertisement after a non-empty one): it is
	// shutting down and takes no new session.
	Draining       bool
	ActiveSessions int64
	// ReportedSessions is the count in the agent's last Heartbeat.
	ReportedSessions uint32
	// Silent reports that no packet arrived on the agent's connection for
	// the tunnel's silence timeout: Status is then at best Unresponsive.
	Silent bool
	// Demoted reports that the agent failed to answer a session and was not
	// heard from since: sessions try it after the other candidates.
	Demoted bool
}

// Registry tracks live agent connections. The zero value is not usable; call
// New. It is safe for concurrent use.
type Registry struct {
	now func() time.Time

	mu      sync.RWMutex
	agents  map[string]*Entry
	nextGen uint64
	// departed remembers when disconnected agents were last heard from.
	departed map[string]time.Time
	// watchers are told about route and membership changes (routing tables).
	watchers []func(Change)
	// approver splits advertisements; nil accepts every route.
	approver Approver
}

// Approver decides which advertised routes an agent may serve.
type Approver interface {
	// Approve splits routes, as agentID advertised them, into the part the
	// agent is approved to serve and the refused rest, both with routes'
	// epoch. It is called under the registry's lock: it must be quick, must
	// not call back into the registry, and must not keep or modify routes'
	// slices.
	Approve(agentID string, routes Routes) (accepted, rejected Routes)
}

// Change describes what happened to an agent, for watchers.
type Change struct {
	AgentID string
	// Entry is the agent's current entry, nil when it left.
	Entry *Entry
	// Routes are the entry's routes after the change (zero when it left).
	Routes Routes
}

// New returns an empty registry; now is the clock (nil means time.Now).
func New(now func() time.Time) *Registry {
	if now == nil {
		now = time.Now
	}
	return &Registry{now: now, agents: make(map[string]*Entry), departed: make(map[string]time.Time)}
}

// Watch registers fn to be called, under the registry's lock and in order,
// after every change of membership or routes. fn must be quick and must not
// call back into the registry.
func (r *Registry) Watch(fn func(Change)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.watchers = append(r.watchers, fn)
}

func (r *Registry) notifyLocked(id string) {
	c := Change{AgentID: id}
	if e := r.agents[id]; e != nil {
		c.Entry, c.Routes = e, e.routes
	}
	for _, w := range r.watchers {
		w(c)
	}
}

// ErrFull is returned by RegisterCapped when the registry holds its maximum
// number of agents and e's agent is not one of them.
var ErrFull = errors.New("registry: maximum number of connected agents reached")

// SetApprover makes a decide which advertised routes count; until it is
// called every route does. Call it before any agent registers: it does not
// revisit routes already taken (Reapprove does, per agent).
func (r *Registry) SetApprover(a Approver) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.approver = a
}

func (r *Registry) approveLocked(id string, raw Routes) (accepted, rejected Routes) {
	if r.approver == nil {
		return raw, Routes{Epoch: raw.Epoch}
	}
	return r.approver.Approve(id, raw)
}

// Register makes e the agent's live connection, assigning its generation and
// marking it seen now. It returns the entry it replaced, if any: the caller
// closes that connection ("connection-superseded").
func (r *Registry) Register(e *Entry) (replaced *Entry) {
	replaced, _ = r.RegisterCapped(e, 0)
	return replaced
}

// RegisterCapped is Register that refuses, with ErrFull, a new agent when max
// agents (if positive) are connected already; a reconnecting agent replaces
// its own entry and is never refused.
func (r *Registry) RegisterCapped(e *Entry, max int) (replaced *Entry, err error) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.agents[e.AgentID]; !ok && max > 0 && len(r.agents) >= max {
		return nil, ErrFull
	}
	r.nextGen++
	e.generation = r.nextGen
	e.ConnectedAt = now
	e.lastSeen.Store(now.UnixNano())
	replaced = r.agents[e.AgentID]
	r.agents[e.AgentID] = e
	delete(r.departed, e.AgentID)
	r.notifyLocked(e.AgentID)
	return replaced, nil
}

// Unregister removes e if it is still the agent's live connection; a
// superseded connection's cleanup thus never removes its successor. It
// reports whether e was removed.
func (r *Registry) Unregister(e *Entry) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.agents[e.AgentID] != e {
		return false
	}
	delete(r.agents, e.AgentID)
	r.departed[e.AgentID] = time.Unix(0, e.lastSeen.Load())
	r.notifyLocked(e.AgentID)
	return true
}

// LastSeen returns when a disconnected agent was last heard from since this
// gateway started.
func (r *Registry) LastSeen(id string) (time.Time, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	t, ok := r.departed[id]
	return t, ok
}

// Forget drops what the registry remembers of a disconnected agent (after it
// was deleted).
func (r *Registry) Forget(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.departed, id)
}

// Touch records a sign of life on e: a control message, or an answer to a
// session. It ends a demotion.
func (r *Registry) Touch(e *Entry) {
	e.lastSeen.Store(r.now().UnixNano())
	e.demoted.Store(false)
}

// SetSilent records whether e's transport has gone quiet: while it is
// silent, e's status is at best Unresponsive, so routing skips it. It
// reports whether that changed. Safe to call from any goroutine; it takes no
// lock.
func (r *Registry) SetSilent(e *Entry, silent bool) bool {
	return e.silent.Swap(silent) != silent
}

// Demote records that e failed to answer a session (it timed out, or showed
// no sign of life while another candidate served): routing then offers it
// after the agents that did not fail, until Touch. It reports whether e was
// not demoted already. It takes no lock.
func (r *Registry) Demote(e *Entry) bool { return !e.demoted.Swap(true) }

// ReportSessions records the active session count of e's last Heartbeat.
func (r *Registry) ReportSessions(e *Entry, n uint32) { e.reported.Store(n) }

// Advertisement is what Apply did with a RouteAdvertise. Its slices are
// shared with the registry: read them, never modify them.
type Advertisement struct {
	// Replaced reports that the advertisement replaced the routes: a higher
	// epoch, or the connection's first advertisement. Otherwise (a refresh
	// with the same epoch, or a stale one) nothing changed.
	Replaced bool
	// Draining reports that the advertisement withdrew every route the
	// agent served on this connection.
	Draining bool
	// Accepted and Rejected are the approved and refused parts of the
	// advertisement (set when Replaced).
	Accepted, Rejected Routes
}

// Advertise is Apply, reporting only whether the routes were replaced.
func (r *Registry) Advertise(e *Entry, epoch uint64, subnets []netip.Prefix, domains []dataplane.DomainRoute) bool {
	return r.Apply(e, epoch, subnets, domains).Replaced
}

// Apply applies a RouteAdvertise received on e with the epoch rules: a
// higher epoch (or the first advertisement of the connection) replaces the
// routes, an equal one only refreshes, a lower one is ignored. The new
// routes pass through the Approver: only their approved part is routed to.
// An advertisement without any route after one with routes marks the agent
// draining (it withdrew its routes to shut down); a later one with routes
// clears the mark. Apply copies subnets and domains.
func (r *Registry) Apply(e *Entry, epoch uint64, subnets []netip.Prefix, domains []dataplane.DomainRoute) Advertisement {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e.advertised && epoch <= e.raw.Epoch {
		return Advertisement{}
	}
	serving := e.draining || (e.advertised && len(e.raw.Subnets)+len(e.raw.Domains) > 0)
	e.advertised = true
	e.raw = Routes{Epoch: epoch, Subnets: slices.Clone(subnets), Domains: slices.Clone(domains)}
	e.draining = serving && len(subnets)+len(domains) == 0
	e.routes, e.rejected = r.approveLocked(e.AgentID, e.raw)
	if r.agents[e.AgentID] == e {
		r.notifyLocked(e.AgentID)
	}
	return Advertisement{Replaced: true, Draining: e.draining, Accepted: e.routes, Rejected: e.rejected}
}

// WouldReplace reports whether an advertisement with epoch, received on e,
// would replace its routes (Apply's rule), without applying it.
func (r *Registry) WouldReplace(e *Entry, epoch uint64) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return !e.advertised || epoch > e.raw.Epoch
}

// Reapprove passes the latest advertisement of agent id's live connection
// through the Approver again, after its approval changed. It reports whether
// the routed part changed (the watchers are then told).
func (r *Registry) Reapprove(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.agents[id]
	if e == nil || !e.advertised {
		return false
	}
	accepted, rejected := r.approveLocked(id, e.raw)
	if sameRoutes(accepted, e.routes) && sameRoutes(rejected, e.rejected) {
		return false
	}
	e.routes, e.rejected = accepted, rejected
	r.notifyLocked(id)
	return true
}

func sameRoutes(a, b Routes) bool {
	return a.Epoch == b.Epoch && slices.Equal(a.Subnets, b.Subnets) && slices.Equal(a.Domains, b.Domains)
}

// Lookup returns the agent's live entry.
func (r *Registry) Lookup(id string) (*Entry, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.agents[id]
	return e, ok
}

// Get returns a snapshot of the agent's live entry.
func (r *Registry) Get(id string) (Snapshot, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	e, ok := r.agents[id]
	if !ok {
		return Snapshot{}, false
	}
	return r.snapshotLocked(e), true
}

// List returns snapshots of every live entry, in no particular order.
func (r *Registry) List() []Snapshot {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Snapshot, 0, len(r.agents))
	for _, e := range r.agents {
		out = append(out, r.snapshotLocked(e))
	}
	return out
}

// Len returns the number of connected agents.
func (r *Registry) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.agents)
}

// Status returns e's liveness now: StatusAt its last control message, and
// at best Unresponsive while its transport is silent. It takes no lock.
func (r *Registry) Status(e *Entry) Status {
	return statusOf(e, time.Unix(0, e.lastSeen.Load()), r.now())
}

func statusOf(e *Entry, lastSeen, now time.Time) Status {
	s := StatusAt(lastSeen, now)
	if s == Online && e.silent.Load() {
		return Unresponsive
	}
	return s
}

// StatusAt is the liveness of a connected agent last heard from at lastSeen.
func StatusAt(lastSeen, now time.Time) Status {
	switch silent := now.Sub(lastSeen); {
	case silent < UnresponsiveAfter:
		return Online
	case silent < OfflineAfter:
		return Unresponsive
	default:
		return Offline
	}
}

func (r *Registry) snapshotLocked(e *Entry) Snapshot {
	last := time.Unix(0, e.lastSeen.Load())
	return Snapshot{
		AgentID:          e.AgentID,
		Name:             e.Name,
		Generation:       e.generation,
		Status:           statusOf(e, last, r.now()),
		RemoteAddr:       e.RemoteAddr,
		ConnectedAt:      e.ConnectedAt,
		LastSeen:         last,
		CertNotAfter:     e.CertNotAfter,
		Routes:           e.routes,
		Rejected:         e.rejected,
		Advertised:       e.advertised,
		Draining:         e.draining,
		ActiveSessions:   e.sessions.Load(),
		ReportedSessions: e.reported.Load(),
		Silent:           e.silent.Load(),
		Demoted:          e.demoted.Load(),
	}
}
