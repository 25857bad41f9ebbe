package routing

import (
	"cmp"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/outposthq/outpost/reach"
	"github.com/outposthq/outpost/server/internal/registry"
)

// member is one agent in a route's member list: a connection of this
// replica (entry) or an agent connected only to other replicas (remote).
// Exactly one of entry and remote is set.
type member struct {
	entry  *registry.Entry
	remote *remoteAgent
	// route is the advertised route, as reported in Candidate.MatchedRoute.
	route string
	// auto reports a domain route the agent auto-detected.
	auto bool
}

func (m member) agentID() string {
	if m.entry != nil {
		return m.entry.AgentID
	}
	return m.remote.id
}

func (m member) connectedAt() time.Time {
	if m.entry != nil {
		return m.entry.ConnectedAt
	}
	return m.remote.connectedAt
}

func (m member) demoted() bool {
	if m.entry != nil {
		return m.entry.Demoted()
	}
	return m.remote.demoted.Load()
}

// memberList is the agents behind one route, in the order sessions try them:
// most recently connected first, then by AgentID. An agent appears at most
// once. A list is immutable once stored in an index; with and without return
// new lists.
type memberList []member

// compareMembers orders members by ConnectedAt descending, then AgentID.
func compareMembers(a, b member) int {
	if c := b.connectedAt().Compare(a.connectedAt()); c != 0 {
		return c
	}
	return strings.Compare(a.agentID(), b.agentID())
}

// with returns a new list holding l's members and m, in order. l must not
// hold m's agent.
func (l memberList) with(m member) memberList {
	i, _ := slices.BinarySearchFunc(l, m, compareMembers)
	out := make(memberList, len(l)+1)
	copy(out, l[:i])
	out[i] = m
	copy(out[i+1:], l[i:])
	return out
}

// without returns a list holding l's members but the agent id's: l itself
// if id is not in it, nil if nothing is left, a new list otherwise.
func (l memberList) without(id string) memberList {
	i := slices.IndexFunc(l, func(m member) bool { return m.agentID() == id })
	switch {
	case i < 0:
		return l
	case len(l) == 1:
		return nil
	}
	out := make(memberList, 0, len(l)-1)
	out = append(out, l[:i]...)
	return append(out, l[i+1:]...)
}

// domainMembers are the agents behind one domain D of the suffix index.
type domainMembers struct {
	// apex are the agents advertising "D" itself: they match the name D.
	apex memberList
	// under are the agents advertising "D" or "*.D": they match the names
	// under D. An agent advertising both appears once, as "D".
	under memberList
}

// agentRoutes is what one agent contributes to the indexes, through a
// connection of this replica (entry) or as a remote agent (remote): exactly
// one of the two is set.
type agentRoutes struct {
	entry    *registry.Entry
	remote   *remoteAgent
	prefixes []netip.Prefix // IPv4, masked, sorted, unique
	domains  []domainRoute  // sorted by key, unique keys
}

// member returns the agent's member for a route.
func (a *agentRoutes) member(route string, auto bool) member {
	return member{entry: a.entry, remote: a.remote, route: route, auto: auto}
}

// sameSource reports whether a and b come from the same connection, or the
// same remote record.
func (a *agentRoutes) sameSource(b *agentRoutes) bool {
	return a.entry == b.entry && a.remote == b.remote
}

// domainRoute is an agent's routes for one domain key.
type domainRoute struct {
	key      string // the domain without "*."
	plain    string // "key" if advertised, else ""
	wildcard string // "*.key" if advertised, else ""
	auto     bool   // plain was advertised auto-detected (only)
}

// apply is the registry watcher: it brings the indexes in line with c. It
// runs under the registry's lock, so changes arrive one at a time, in order.
func (r *Router) apply(c registry.Change) {
	var next *agentRoutes
	if c.Entry != nil {
		next = canonicalRoutes(c.Routes)
		next.entry = c.Entry
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if next != nil {
		r.local[c.AgentID] = next
	} else {
		delete(r.local, c.AgentID)
		// Connected elsewhere too: the agent stays, as a remote one.
		next = r.remote[c.AgentID]
	}
	r.indexLocked(c.AgentID, next)
}

// indexLocked makes next (nil: nothing) what agent id contributes to the
// indexes.
func (r *Router) indexLocked(id string, next *agentRoutes) {
	prev := r.agents[id]
	switch {
	case prev != nil && next != nil && prev.sameSource(next):
		// Re-advertisement on the same connection: touch only the routes
		// that changed.
		r.updateLocked(id, prev, next)
	default:
		// Arrival, departure or a new connection superseding the old one.
		if prev != nil {
			for _, p := range prev.prefixes {
				r.withdrawPrefixLocked(id, p)
			}
			for _, d := range prev.domains {
				r.withdrawDomainLocked(id, d.key)
			}
		}
		if next != nil {
			for _, p := range next.prefixes {
				r.addPrefixLocked(next, p)
			}
			for _, d := range next.domains {
				r.addDomainLocked(next, d)
			}
		}
	}
	if next != nil {
		r.agents[id] = next
	} else {
		delete(r.agents, id)
	}
}

// updateLocked moves agent id's memberships from prev's routes to next's,
// both of the same entry.
func (r *Router) updateLocked(id string, prev, next *agentRoutes) {
	mergeSorted(prev.prefixes, next.prefixes, netip.Prefix.Compare,
		func(p netip.Prefix) { r.withdrawPrefixLocked(id, p) },
		func(p netip.Prefix) { r.addPrefixLocked(next, p) },
		nil)
	mergeSorted(prev.domains, next.domains, compareDomainKeys,
		func(d domainRoute) { r.withdrawDomainLocked(id, d.key) },
		func(d domainRoute) { r.addDomainLocked(next, d) },
		func(old, cur domainRoute) {
			if old != cur {
				r.withdrawDomainLocked(id, old.key)
				r.addDomainLocked(next, cur)
			}
		})
}

// mergeSorted walks two sorted, duplicate-free slices together and calls
// gone for the elements only in old, added for those only in cur, and both
// (if not nil) for pairs that compare equal.
func mergeSorted[T any](old, cur []T, cmp func(a, b T) int, gone, added func(T), both func(o, c T)) {
	i, j := 0, 0
	for i < len(old) || j < len(cur) {
		c := 0
		switch {
		case i == len(old):
			c = 1
		case j == len(cur):
			c = -1
		default:
			c = cmp(old[i], cur[j])
		}
		switch {
		case c < 0:
			gone(old[i])
			i++
		case c > 0:
			added(cur[j])
			j++
		default:
			if both != nil {
				both(old[i], cur[j])
			}
			i++
			j++
		}
	}
}

// withdrawPrefixLocked removes agent id from prefix p's members.
func (r *Router) withdrawPrefixLocked(id string, p netip.Prefix) {
	r.prefixes.Modify(p, func(l memberList, _ bool) (memberList, bool) {
		l = l.without(id)
		return l, len(l) == 0
	})
}

// addPrefixLocked adds a to prefix p's members; a's agent must not be one.
func (r *Router) addPrefixLocked(a *agentRoutes, p netip.Prefix) {
	r.prefixes.Modify(p, func(l memberList, _ bool) (memberList, bool) {
		var route string
		if len(l) > 0 {
			route = l[0].route // share the string among the members
		} else {
			route = p.String()
		}
		return l.with(a.member(route, false)), false
	})
}

// withdrawDomainLocked removes agent id from domain key's members.
func (r *Router) withdrawDomainLocked(id, key string) {
	dm, ok := r.domains[key]
	if !ok {
		return
	}
	dm.apex, dm.under = dm.apex.without(id), dm.under.without(id)
	if len(dm.apex) == 0 && len(dm.under) == 0 {
		delete(r.domains, key)
		return
	}
	r.domains[key] = dm
}

// addDomainLocked adds a to the members of d's domain; a's agent must not be
// one.
func (r *Router) addDomainLocked(a *agentRoutes, d domainRoute) {
	dm := r.domains[d.key]
	if d.plain != "" {
		dm.apex = dm.apex.with(a.member(d.plain, d.auto))
		dm.under = dm.under.with(a.member(d.plain, d.auto))
	} else {
		dm.under = dm.under.with(a.member(d.wildcard, false))
	}
	r.domains[d.key] = dm
}

func compareDomainKeys(a, b domainRoute) int { return strings.Compare(a.key, b.key) }

// canonicalRoutes returns the memberships of routes, without their source
// (entry or remote): IPv4 subnets masked
// (an IPv4-mapped IPv6 prefix counts as IPv4), domain routes in reach's
// canonical form (reach.ParseDomain: validated, lower-cased, keyed by the
// domain without its "*." label), duplicates merged (a plain route counts as
// auto-detected only if every copy of it was).
// Routes that are neither are dropped: agents advertise IPv4 subnets only,
// and the codec rejects invalid domains before they reach the registry.
func canonicalRoutes(routes registry.Routes) *agentRoutes {
	a := &agentRoutes{}
	for _, p := range routes.Subnets {
		if p, ok := canonicalPrefix(p); ok {
			a.prefixes = append(a.prefixes, p)
		}
	}
	slices.SortFunc(a.prefixes, netip.Prefix.Compare)
	a.prefixes = slices.Compact(a.prefixes)

	for _, d := range routes.Domains {
		route, err := reach.ParseDomain(d.Name)
		if err != nil {
			continue
		}
		if route.Wildcard {
			a.domains = append(a.domains, domainRoute{key: route.Name, wildcard: route.String()})
		} else {
			a.domains = append(a.domains, domainRoute{key: route.Name, plain: route.Name, auto: d.AutoDetected})
		}
	}
	slices.SortFunc(a.domains, compareDomainKeys)
	merged := a.domains[:0]
	for _, d := range a.domains {
		if n := len(merged); n > 0 && merged[n-1].key == d.key {
			last := &merged[n-1]
			switch {
			case last.plain == "":
				last.auto = d.auto
			case d.plain != "":
				last.auto = last.auto && d.auto
			}
			last.plain, last.wildcard = cmp.Or(last.plain, d.plain), cmp.Or(last.wildcard, d.wildcard)
			continue
		}
		merged = append(merged, d)
	}
	a.domains = merged
	return a
}

// canonicalPrefix returns p as a masked IPv4 prefix, unmapping an
// IPv4-mapped IPv6 prefix; it reports false for anything else.
func canonicalPrefix(p netip.Prefix) (netip.Prefix, bool) {
	if !p.IsValid() {
		return netip.Prefix{}, false
	}
	addr, bits := p.Addr(), p.Bits()
	if addr.Is4In6() {
		if bits < 96 {
			return netip.Prefix{}, false
		}
		addr, bits = addr.Unmap(), bits-96
	}
	if !addr.Is4() {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(addr, bits).Masked(), true
}
