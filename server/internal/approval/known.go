package approval

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/gaissmai/bart"

	"github.com/outposthq/outpost/reach"
	"github.com/outposthq/outpost/server/internal/registry"
)

// Known is an enrolled agent's known route that covers a target, with why
// the agent cannot carry the session now.
type Known struct {
	// AgentID and Name identify the agent.
	AgentID, Name string
	// Route is the covering route: a masked subnet ("10.0.0.0/24") or a
	// domain route ("contoso.local", "*.contoso.local").
	Route string
	// State is "offline" (not connected, or silent for 90 s),
	// "unresponsive" (silent for 45 s), "draining" (withdrew its routes to
	// shut down) or "connecting" (connected, its routes not taken yet).
	State string
}

// Covering returns the most specific known route covering host — an IP
// literal without brackets or a host name (any case, one trailing dot
// ignored) — of an agent that cannot carry a session now (see
// Known.State), and true; false if no such route covers host. Routes of
// agents online and serving are skipped: the router answers for them.
//
// Specificity is the router's: for an IPv4 address the longest matching
// prefix first, then shorter ones; for a name a route equal to it, then
// its suffixes from the longest. Agents behind one route come in agent id
// order.
func (b *Book) Covering(host string) (Known, bool) {
	for _, c := range b.covering(host) {
		if state := b.state(c.AgentID); state != "" {
			c.State = state
			return c, true
		}
	}
	return Known{}, false
}

// covering lists the known routes covering host, most specific first,
// without states.
func (b *Book) covering(host string) []Known {
	host = strings.TrimSuffix(host, ".")
	b.mu.RLock()
	defer b.mu.RUnlock()
	var out []Known
	add := func(l []knownMember) {
		for _, m := range l {
			out = append(out, Known{AgentID: m.agentID, Name: b.agents[m.agentID].name, Route: m.route})
		}
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.Unmap()
		if !ip.Is4() {
			return nil
		}
		for bits := ip.BitLen(); bits >= 0; {
			lpm, l, ok := b.known.prefixes.LookupPrefixLPM(netip.PrefixFrom(ip, bits))
			if !ok {
				break
			}
			add(l)
			bits = lpm.Bits() - 1
		}
		return out
	}
	name := strings.ToLower(host)
	if name == "" {
		return nil
	}
	add(b.known.domains[name].apex)
	for rest := name; ; {
		i := strings.IndexByte(rest, '.')
		if i < 0 {
			return out
		}
		rest = rest[i+1:]
		add(b.known.domains[rest].under)
	}
}

// state says why the agent cannot carry a session now, or "" when it is
// online and serving.
func (b *Book) state(agentID string) string {
	snap, ok := b.cfg.Live.Get(agentID)
	switch {
	case !ok:
		return registry.Offline.String()
	case snap.Draining:
		return "draining"
	case snap.Status != registry.Online:
		return snap.Status.String()
	case !snap.Advertised:
		return "connecting"
	default:
		return ""
	}
}

// knownIndex indexes the agents' known routes the way the router indexes
// live ones: a prefix table for subnets, a suffix index for domains. It is
// guarded by the Book's mu.
type knownIndex struct {
	prefixes bart.Table[[]knownMember]
	// domains maps a domain (without "*.") to its members.
	domains map[string]knownDomain
}

func newKnownIndex() knownIndex { return knownIndex{domains: make(map[string]knownDomain)} }

// knownMember is one agent behind a route.
type knownMember struct{ agentID, route string }

// knownDomain are the agents behind one domain D: apex those with the
// route "D" (they match D itself), under those with "D" or "*.D" (they
// match the names under D), each once.
type knownDomain struct{ apex, under []knownMember }

// contribution is what one agent puts in the index: masked IPv4 subnets and
// domain routes by key, each once.
type contribution struct {
	prefixes []netip.Prefix
	domains  []domainContribution
}

// domainContribution is an agent's routes for one domain key: plain is "D"
// if it has that route, wildcard "*.D" if it has that one.
type domainContribution struct{ key, plain, wildcard string }

// contributionOf returns the index entries of routes.
func contributionOf(routes registry.Routes) contribution {
	var c contribution
	for _, p := range routes.Subnets {
		if p.IsValid() && p.Addr().Is4() {
			c.prefixes = append(c.prefixes, p.Masked())
		}
	}
	slices.SortFunc(c.prefixes, netip.Prefix.Compare)
	c.prefixes = slices.Compact(c.prefixes)
	byKey := make(map[string]int) // index in c.domains
	for _, d := range routes.Domains {
		route, err := reach.ParseDomain(d.Name)
		if err != nil {
			continue
		}
		i, ok := byKey[route.Name]
		if !ok {
			i = len(c.domains)
			c.domains = append(c.domains, domainContribution{key: route.Name})
			byKey[route.Name] = i
		}
		dc := &c.domains[i]
		if route.Wildcard {
			dc.wildcard = route.String()
		} else {
			dc.plain = route.Name
		}
	}
	return c
}

// add puts the agent's contribution in the index.
func (x *knownIndex) add(agentID string, c contribution) {
	for _, p := range c.prefixes {
		x.prefixes.Modify(p, func(l []knownMember, _ bool) ([]knownMember, bool) {
			return insertMember(l, knownMember{agentID, p.String()}), false
		})
	}
	for _, d := range c.domains {
		kd := x.domains[d.key]
		if d.plain != "" {
			kd.apex = insertMember(kd.apex, knownMember{agentID, d.plain})
			kd.under = insertMember(kd.under, knownMember{agentID, d.plain})
		} else {
			kd.under = insertMember(kd.under, knownMember{agentID, d.wildcard})
		}
		x.domains[d.key] = kd
	}
}

// withdraw takes the agent's contribution out of the index.
func (x *knownIndex) withdraw(agentID string, c contribution) {
	drop := func(l []knownMember) []knownMember {
		return slices.DeleteFunc(l, func(m knownMember) bool { return m.agentID == agentID })
	}
	for _, p := range c.prefixes {
		x.prefixes.Modify(p, func(l []knownMember, _ bool) ([]knownMember, bool) {
			l = drop(l)
			return l, len(l) == 0
		})
	}
	for _, d := range c.domains {
		kd := x.domains[d.key]
		kd.apex, kd.under = drop(kd.apex), drop(kd.under)
		if len(kd.apex)+len(kd.under) == 0 {
			delete(x.domains, d.key)
		} else {
			x.domains[d.key] = kd
		}
	}
}

// insertMember inserts m into l, kept in agent id order.
func insertMember(l []knownMember, m knownMember) []knownMember {
	i, _ := slices.BinarySearchFunc(l, m.agentID, func(e knownMember, id string) int { return strings.Compare(e.agentID, id) })
	return slices.Insert(l, i, m)
}
