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
// Explicit agent selection and the direct-connection fallback (steps 1 and 4
// of DESIGN.md §8) are the caller's: a Router only answers steps 2 and 3.
package routing

import (
	"net/netip"
	"strings"
	"sync"
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
	// ConnectedAt is when the agent's current connection registered.
	ConnectedAt time.Time
	// Entry is the registry entry of the connection that advertised the
	// route, so the caller opens the session on that very connection (and
	// counts it with Entry.AcquireSession) without a second registry lookup
	// that could land on a newer connection.
	Entry *registry.Entry
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
	// change can withdraw it.
	agents map[string]*agentRoutes
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
// that demoted members (Entry.Demoted) come after the others. It runs under
// r.mu and relies on Registry.Status and Entry.Demoted taking no registry
// lock: the registry calls apply, which takes r.mu, while holding its own
// lock.
func (r *Router) appendOnline(dst []Candidate, l memberList) []Candidate {
	demoted := false
	for _, m := range l {
		if m.entry.Demoted() {
			demoted = true
			continue
		}
		dst = r.appendIfOnline(dst, m)
	}
	if demoted {
		for _, m := range l {
			if m.entry.Demoted() {
				dst = r.appendIfOnline(dst, m)
			}
		}
	}
	return dst
}

func (r *Router) appendIfOnline(dst []Candidate, m member) []Candidate {
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

// AmbiguousDomains returns, sorted, the auto-detected domains that agent id
// advertises and at least one other online agent advertises auto-detected
// too: two networks (two VPCs, two clusters) often share a search domain,
// so such a domain does not say which network a name is in. It returns nil
// when the agent is not connected or shares none.
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
			if m.auto && m.entry.AgentID != id && r.reg.Status(m.entry) == registry.Online {
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
