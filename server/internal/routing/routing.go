// Package routing is the gateway's route lookup: given a session's target
// host, it names the connected agents able to reach it, in the order the
// session must try them (DESIGN.md §8).
//
// A Router mirrors the routes the registry's agents advertise into two
// indexes kept in sync by a registry watcher: a prefix table
// (github.com/gaissmai/bart) for IPv4 subnets and a suffix index (a map keyed
// by domain) for domain routes. A lookup costs a few table probes — one per
// matching prefix length tried, one per label of a host name — whatever the
// number of agents, and does not allocate when its dst has room.
//
// In a cluster of replicas (DESIGN.md §10a), a Router also knows the agents
// connected only to other replicas (SetRemote, fed by the cluster's
// presence): they match by the same rules and come back as candidates
// without an Entry, for the tunnel to reach through a peer replica. An
// agent connected to this replica is always its local connection, never
// also a remote candidate.
//
// Explicit agent selection and the direct-connection fallback (steps 1 and 4
// of DESIGN.md §8) are the caller's: a Router only answers steps 2 and 3.
package routing

import (
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gaissmai/bart"

	"github.com/outposthq/outpost/server/internal/registry"
)

// Candidate is one agent able to reach a target, and why.
type Candidate struct {
	// AgentID and Name identify the agent.
	AgentID, Name string
	// MatchedRoute is the advertised route that matched, as the router
	// canonicalized it: a masked subnet ("10.10.0.0/24") or a lower-case
	// domain route ("contoso.local", "*.contoso.local"). Together with Name
	// it is enough for a reason text such as "10.10.0.5 matches
	// 10.10.0.0/24 advertised by agent jump01".
	MatchedRoute string
	// AutoDetected reports that MatchedRoute is a domain the agent
	// auto-detected rather than had configured.
	AutoDetected bool
	// ConnectedAt is when the agent's current connection registered (for
	// a remote agent: its latest connection to another replica).
	ConnectedAt time.Time
	// Entry is the registry entry of the connection that advertised the
	// route, so the caller opens the session on that very connection (and
	// counts it with Entry.AcquireSession) without a second registry lookup
	// that could land on a newer connection. It is nil for a remote agent.
	Entry *registry.Entry
	// Replicas are, for a remote agent (Entry nil), the other replicas
	// holding a connection of it; nil for a local one. Callers must not
	// modify it.
	Replicas []Replica
}

// Replica names another gateway replica.
type Replica struct {
	ID, Name string
}

// Remote is an agent connected to other replicas of the cluster, as the
// cluster's presence reports it (SetRemote).
type Remote struct {
	AgentID, Name string
	// Routes are the routes the agent serves: its last advertised routes
	// inside its approved set.
	Routes registry.Routes
	// ConnectedAt is when its latest connection registered.
	ConnectedAt time.Time
	// Replicas are the replicas holding a connection of it; not empty.
	Replicas []Replica
}

// remoteAgent is a Remote as the indexes hold it.
type remoteAgent struct {
	id, name    string
	connectedAt time.Time
	replicas    []Replica
	// demoted: a session through it just failed (DemoteRemote); cleared
	// when its presence changes.
	demoted atomic.Bool
}

// Router answers which agents can reach a host. Create it with New; the zero
// value is not usable. It is safe for concurrent use: any number of Lookups
// run in parallel with each other and with the registry's updates.
type Router struct {
	reg *registry.Registry

	// mu guards the indexes below. Lookup holds it for reading; the registry
	// watcher (apply) holds it for writing. Member lists are never modified
	// once published in an index: an update builds a new list and swaps it
	// in (copy-on-write).
	mu sync.RWMutex
	// prefixes maps each advertised IPv4 subnet (masked) to its members.
	prefixes bart.Table[memberList]
	// domains maps each advertised domain, without any "*." wildcard label,
	// to its members.
	domains map[string]domainMembers
	// agents is what each agent currently contributes to the indexes, so a
	// change can withdraw it: its local routes if it is connected to this
	// replica, else its remote ones.
	agents map[string]*agentRoutes
	// local and remote are the agents connected to this replica (from the
	// registry) and those connected to other replicas (SetRemote).
	local, remote map[string]*agentRoutes
}

// New returns a Router that follows reg: it registers a watcher with
// reg.Watch and from then on keeps its tables in step with every agent's
// registration, advertisement and departure. Agents registered in reg before
// New are not seen until their next change, so create the Router together
// with the registry, before any agent connects. reg must not be nil. The
// Router lives as long as reg; it has nothing to close.
func New(reg *registry.Registry) *Router {
	if reg == nil {
		panic("routing: New with a nil registry")
	}
	r := &Router{
		reg:     reg,
		domains: make(map[string]domainMembers),
		agents:  make(map[string]*agentRoutes),
		local:   make(map[string]*agentRoutes),
		remote:  make(map[string]*agentRoutes),
	}
	reg.Watch(r.apply)
	return r
}

// Lookup appends to dst the online agents able to reach host, in the order
// a session must try them, and returns the extended slice. It appends nothing
// when no online agent matches (the caller then decides on a direct
// connection). It does not allocate when dst has room, except to lower-case a
// host name that has upper-case letters.
//
// host is an IP literal without brackets or a DNS name (any case; one
// trailing dot is ignored).
//
// An IPv4 address (an IPv4-mapped IPv6 address counts as IPv4) matches the
// subnets that contain it. The longest matching prefix wins: only the agents
// advertising that very prefix are candidates, most recently connected first
// (ties broken by AgentID), except that demoted agents (they just failed to
// answer a session, registry.Registry.Demote) come after all the others, in
// the same order among themselves. Other IPv6 addresses match nothing, since
// agents advertise IPv4 subnets only.
//
// A name matches, from the most to the least specific:
//   - a route equal to it ("db01.contoso.local");
//   - then, walking its suffixes label by label from the longest, a route
//     "S" or "*.S" for the suffix S: "contoso.local" matches itself and
//     every name under it, "*.contoso.local" only the names under it (at
//     any depth: "a.b.contoso.local" too). The two forms are equally
//     specific; agents advertising either are merged into one list, most
//     recently connected first (demoted agents last), an agent advertising
//     both reported once with the plain route.
//
// Only online agents are returned: unresponsive and offline ones are skipped,
// judged by the registry at the time of the call. When every agent of the
// most specific match is skipped, Lookup falls back to the next most specific
// match that has an online agent, so a dead agent for a narrow route does not
// black-hole a target that an agent with a broader route could serve. Each
// agent appears at most once.
func (r *Router) Lookup(dst []Candidate, host string) []Candidate {
	host = strings.TrimSuffix(host, ".")
	if maybeIPLiteral(host) {
		if ip, err := netip.ParseAddr(host); err == nil {
			return r.lookupAddr(dst, ip)
		}
	}
	return r.lookupName(dst, lowerASCII(host))
}

func (r *Router) lookupAddr(dst []Candidate, ip netip.Addr) []Candidate {
	ip = ip.Unmap()
	if !ip.Is4() {
		return dst
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	// Fast path: the longest match usually has an online agent.
	members, ok := r.prefixes.Lookup(ip)
	if !ok {
		return dst
	}
	n := len(dst)
	if dst = r.appendOnline(dst, members); len(dst) > n {
		return dst
	}
	// Fall back to ever shorter matching prefixes: learn the length of the
	// longest match, then ask each time for the longest match shorter than
	// the previous one.
	lpm, _, _ := r.prefixes.LookupPrefixLPM(netip.PrefixFrom(ip, ip.BitLen()))
	for bits := lpm.Bits(); bits > 0; bits = lpm.Bits() {
		lpm, members, ok = r.prefixes.LookupPrefixLPM(netip.PrefixFrom(ip, bits-1))
		if !ok {
			return dst
		}
		if dst = r.appendOnline(dst, members); len(dst) > n {
			return dst
		}
	}
	return dst
}

func (r *Router) lookupName(dst []Candidate, name string) []Candidate {
	if name == "" {
		return dst
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	n := len(dst)
	if d, ok := r.domains[name]; ok {
		if dst = r.appendOnline(dst, d.apex); len(dst) > n {
			return dst
		}
	}
	for rest := name; ; {
		i := strings.IndexByte(rest, '.')
		if i < 0 {
			return dst
		}
		rest = rest[i+1:]
		if d, ok := r.domains[rest]; ok {
			if dst = r.appendOnline(dst, d.under); len(dst) > n {
				return dst
			}
		}
	}
}

// appendOnline appends the online members of l to dst, in l's order except
// that demoted members (Entry.Demoted, DemoteRemote) come after the others.
// It runs under r.mu and relies on Registry.Status and Entry.Demoted taking
// no registry lock: the registry calls apply, which takes r.mu, while
// holding its own lock.
func (r *Router) appendOnline(dst []Candidate, l memberList) []Candidate {
	demoted := false
	for _, m := range l {
		if m.demoted() {
			demoted = true
			continue
		}
		dst = r.appendIfOnline(dst, m)
	}
	if demoted {
		for _, m := range l {
			if m.demoted() {
				dst = r.appendIfOnline(dst, m)
			}
		}
	}
	return dst
}

// appendIfOnline appends m unless it is a local connection that is not
// online. A remote agent counts as online: the presence lists only agents
// connected to serving replicas that heartbeat.
func (r *Router) appendIfOnline(dst []Candidate, m member) []Candidate {
	if m.remote != nil {
		return append(dst, Candidate{
			AgentID:      m.remote.id,
			Name:         m.remote.name,
			MatchedRoute: m.route,
			AutoDetected: m.auto,
			ConnectedAt:  m.remote.connectedAt,
			Replicas:     m.remote.replicas,
		})
	}
	if r.reg.Status(m.entry) != registry.Online {
		return dst
	}
	return append(dst, Candidate{
		AgentID:      m.entry.AgentID,
		Name:         m.entry.Name,
		MatchedRoute: m.route,
		AutoDetected: m.auto,
		ConnectedAt:  m.entry.ConnectedAt,
		Entry:        m.entry,
	})
}

// online reports whether m counts as online (see appendIfOnline).
func (r *Router) online(m member) bool {
	return m.remote != nil || r.reg.Status(m.entry) == registry.Online
}

// SetRemote records that agent rem.AgentID is connected to other replicas
// and serves rem.Routes, replacing what was recorded for it. While the
// agent is also connected to this replica, its local connection alone is a
// candidate; rem takes over when that connection leaves. A change clears
// the agent's demotion (DemoteRemote). rem.Replicas is kept: the caller
// must not modify it afterwards.
func (r *Router) SetRemote(rem Remote) {
	next := canonicalRoutes(rem.Routes)
	next.remote = &remoteAgent{id: rem.AgentID, name: rem.Name, connectedAt: rem.ConnectedAt, replicas: rem.Replicas}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.remote[rem.AgentID] = next
	if r.local[rem.AgentID] == nil {
		r.indexLocked(rem.AgentID, next)
	}
}

// RemoveRemote forgets that agent id is connected to other replicas; an
// unknown id is ignored.
func (r *Router) RemoveRemote(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.remote[id] == nil {
		return
	}
	delete(r.remote, id)
	if r.local[id] == nil {
		r.indexLocked(id, nil)
	}
}

// RemoteAgent returns agent id as a candidate, without a MatchedRoute, when
// it is connected to other replicas and not to this one (whatever its
// routes), for a session that names its agent; false otherwise.
func (r *Router) RemoteAgent(id string) (Candidate, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	a := r.remote[id]
	if a == nil || r.local[id] != nil {
		return Candidate{}, false
	}
	return Candidate{AgentID: id, Name: a.remote.name, ConnectedAt: a.remote.connectedAt, Replicas: a.remote.replicas}, true
}

// DemoteRemote records that a session through remote agent id just failed
// (no answer): its candidates come after the others' until its presence
// changes (SetRemote). It reports whether the agent was a remote agent not
// demoted yet.
func (r *Router) DemoteRemote(id string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	a := r.remote[id]
	return a != nil && !a.remote.demoted.Swap(true)
}

// AmbiguousDomains returns, sorted, the auto-detected domains that agent id
// advertises and at least one other online agent advertises auto-detected
// too: two networks (two VPCs, two clusters) often share a search domain,
// so such a domain does not say which network a name is in. It returns nil
// when the agent is not connected (here or, as a remote agent, elsewhere)
// or shares none.
func (r *Router) AmbiguousDomains(id string) []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	a := r.agents[id]
	if a == nil {
		return nil
	}
	var out []string
	for _, d := range a.domains {
		if !d.auto {
			continue
		}
		for _, m := range r.domains[d.key].apex {
			if m.auto && m.agentID() != id && r.online(m) {
				out = append(out, d.key)
				break
			}
		}
	}
	return out
}

// maybeIPLiteral reports whether s could be an IP literal: it has a colon
// (IPv6), or four dot-separated fields of digits (IPv4). It spares most host
// names the parse attempt, whose error would allocate.
func maybeIPLiteral(s string) bool {
	if strings.IndexByte(s, ':') >= 0 {
		return true
	}
	dots := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '.':
			dots++
		case c < '0' || c > '9':
			return false
		}
	}
	return dots == 3
}

// lowerASCII returns s with ASCII upper-case letters lowered. It returns s
// itself, without allocating, when there are none.
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; 'A' <= c && c <= 'Z' {
					b[j] = c + ('a' - 'A')
				}
			}
			return string(b)
		}
	}
	return s
}
