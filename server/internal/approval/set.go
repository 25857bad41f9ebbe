// Package approval decides which routes an agent may serve (DESIGN.md §8,
// §10). Every enrolled agent has an approved route set: from its enrollment
// token, or what it asked for at enrollment when the token named none, or
// what an operator set since. What an agent advertises counts only where it
// lies inside that set: a subnet inside an approved subnet, a domain equal
// to or under an approved domain. The rest is refused.
//
// Set is an approved route set in canonical form; Parse reads one from the
// API's strings. Matcher splits an advertisement into its approved and
// refused parts. ForEnrollment computes an enrolling agent's set from its
// token and its request. Book keeps, for every enrolled agent, its approved
// set and its last advertised routes, in memory and in the store, approves
// advertisements for the registry and names the agent whose known routes
// cover a target while it cannot carry sessions.
package approval

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/gaissmai/bart"

	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/reach"
	"github.com/outposthq/outpost/server/internal/registry"
)

// MaxRoutes bounds each list (subnets, domains) of an approved set.
const MaxRoutes = 1024

// MinRequestedBits is the shortest subnet prefix an enrollment request alone
// may have approved: a broader subnet ("0.0.0.0/0", "0.0.0.0/1") would let
// one agent capture every target no narrower route covers, the direct
// allow-list's included, so only a token or an operator approves it.
const MinRequestedBits = 8

// Set is a set of approved routes in canonical form: subnets masked, sorted
// and unique; domains lower-case, sorted by their advertised form and unique.
// The zero value approves nothing. A Set is a value: its methods never
// modify it.
type Set struct {
	Subnets []netip.Prefix
	Domains []reach.Domain
}

// InputError is a malformed route; Field names it ("subnets[2]").
type InputError struct{ Field, Reason string }

func (e *InputError) Error() string { return e.Field + ": " + e.Reason }

// Parse reads a set from the API's strings (RouteSet): IPv4 CIDR subnets and
// domain routes by the wire grammar, at most MaxRoutes of each. It returns
// the set in canonical form, or an *InputError for the first bad entry.
func Parse(subnets, domains []string) (Set, error) {
	if len(subnets) > MaxRoutes {
		return Set{}, &InputError{"subnets", fmt.Sprintf("%d entries, at most %d", len(subnets), MaxRoutes)}
	}
	if len(domains) > MaxRoutes {
		return Set{}, &InputError{"domains", fmt.Sprintf("%d entries, at most %d", len(domains), MaxRoutes)}
	}
	var s Set
	for i, v := range subnets {
		p, err := reach.ParseSubnet(v)
		if err != nil {
			return Set{}, &InputError{fmt.Sprintf("subnets[%d]", i), fmt.Sprintf("%q is not an IPv4 CIDR subnet", v)}
		}
		s.Subnets = append(s.Subnets, p)
	}
	for i, v := range domains {
		d, err := reach.ParseDomain(v)
		if err != nil {
			return Set{}, &InputError{fmt.Sprintf("domains[%d]", i), err.Error()}
		}
		s.Domains = append(s.Domains, d)
	}
	return s.canonical(), nil
}

// canonical returns s with subnets masked, both lists sorted and without
// duplicates, in new slices.
func (s Set) canonical() Set {
	out := Set{Subnets: make([]netip.Prefix, 0, len(s.Subnets)), Domains: make([]reach.Domain, 0, len(s.Domains))}
	for _, p := range s.Subnets {
		out.Subnets = append(out.Subnets, p.Masked())
	}
	slices.SortFunc(out.Subnets, netip.Prefix.Compare)
	out.Subnets = slices.Compact(out.Subnets)
	out.Domains = append(out.Domains, s.Domains...)
	slices.SortFunc(out.Domains, compareDomains)
	out.Domains = slices.Compact(out.Domains)
	return out
}

func compareDomains(a, b reach.Domain) int {
	return cmp.Or(strings.Compare(a.Name, b.Name), compareBool(a.Wildcard, b.Wildcard))
}

func compareBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case b:
		return -1
	default:
		return 1
	}
}

// Empty reports whether s approves nothing.
func (s Set) Empty() bool { return len(s.Subnets) == 0 && len(s.Domains) == 0 }

// Strings returns s as the API writes it: CIDRs and domain routes. Both
// slices are non-nil.
func (s Set) Strings() (subnets, domains []string) {
	subnets, domains = make([]string, 0, len(s.Subnets)), make([]string, 0, len(s.Domains))
	for _, p := range s.Subnets {
		subnets = append(subnets, p.String())
	}
	for _, d := range s.Domains {
		domains = append(domains, d.String())
	}
	return subnets, domains
}

// Equal reports whether s and o hold the same routes (both canonical).
func (s Set) Equal(o Set) bool {
	return slices.Equal(s.Subnets, o.Subnets) && slices.Equal(s.Domains, o.Domains)
}

// BroadSubnet reports whether p is too broad for an enrollment request
// alone to have it approved: shorter than MinRequestedBits.
func BroadSubnet(p netip.Prefix) bool { return p.Bits() < MinRequestedBits }

// BroadDomain reports whether d is too broad for an enrollment request alone
// to have it approved: a single label ("com", "*.com", "local").
func BroadDomain(d reach.Domain) bool { return !strings.Contains(d.Name, ".") }

// Matcher answers whether an approved set covers a route, in a few table
// probes whatever the size of the set. Build it with Compile; a nil Matcher
// covers nothing. It is immutable and safe for concurrent use.
type Matcher struct {
	set     Set
	subnets bart.Lite
	// domains maps an approved domain (without "*.") to how it is approved.
	domains map[string]grant
}

// grant is how one domain is approved: plain ("D": D and every name under
// it), wildcard ("*.D": the names under D), or both.
type grant struct{ plain, wildcard bool }

// Compile returns the Matcher of s.
func Compile(s Set) *Matcher {
	m := &Matcher{set: s, domains: make(map[string]grant, len(s.Domains))}
	for _, p := range s.Subnets {
		m.subnets.Insert(p.Masked())
	}
	for _, d := range s.Domains {
		g := m.domains[d.Name]
		if d.Wildcard {
			g.wildcard = true
		} else {
			g.plain = true
		}
		m.domains[d.Name] = g
	}
	return m
}

// Set returns the set m was compiled from.
func (m *Matcher) Set() Set {
	if m == nil {
		return Set{}
	}
	return m.set
}

// CoversSubnet reports whether p lies inside an approved subnet (host bits
// ignored): reach.SubnetCovers for one of them.
func (m *Matcher) CoversSubnet(p netip.Prefix) bool {
	if m == nil || !p.IsValid() || !p.Addr().Is4() {
		return false
	}
	return m.subnets.LookupPrefix(p.Masked())
}

// CoversDomain reports whether d equals or lies under an approved domain:
// reach.Domain.CoversRoute for one of them.
func (m *Matcher) CoversDomain(d reach.Domain) bool {
	if m == nil || d.Name == "" {
		return false
	}
	if g, ok := m.domains[d.Name]; ok && (g.plain || d.Wildcard) {
		return true
	}
	for rest := d.Name; ; {
		i := strings.IndexByte(rest, '.')
		if i < 0 {
			return false
		}
		rest = rest[i+1:]
		if _, ok := m.domains[rest]; ok {
			return true
		}
	}
}

// Split divides an advertisement into the routes the set approves and the
// refused rest, both in the advertised order and form, with r's epoch. A
// domain the grammar rejects is refused.
func (m *Matcher) Split(r registry.Routes) (accepted, rejected registry.Routes) {
	accepted.Epoch, rejected.Epoch = r.Epoch, r.Epoch
	for _, p := range r.Subnets {
		if m.CoversSubnet(p) {
			accepted.Subnets = append(accepted.Subnets, p)
		} else {
			rejected.Subnets = append(rejected.Subnets, p)
		}
	}
	for _, d := range r.Domains {
		if route, err := reach.ParseDomain(d.Name); err == nil && m.CoversDomain(route) {
			accepted.Domains = append(accepted.Domains, d)
		} else {
			rejected.Domains = append(rejected.Domains, d)
		}
	}
	return accepted, rejected
}

// AcceptAll is the split of an approval that takes every route (the
// gateway's accept_any_routes): everything accepted, nothing refused.
func AcceptAll(r registry.Routes) (accepted, rejected registry.Routes) {
	return r, registry.Routes{Epoch: r.Epoch}
}

// advertised returns r's routes as the API writes them.
func advertised(r registry.Routes) (subnets, domains []string) {
	subnets, domains = make([]string, 0, len(r.Subnets)), make([]string, 0, len(r.Domains))
	for _, p := range r.Subnets {
		subnets = append(subnets, p.String())
	}
	for _, d := range r.Domains {
		domains = append(domains, d.Name)
	}
	return subnets, domains
}

// fromStrings reads routes stored as strings back into registry form,
// skipping entries that do not parse.
func fromStrings(subnets, domains []string) registry.Routes {
	var r registry.Routes
	for _, s := range subnets {
		if p, err := reach.ParseSubnet(s); err == nil {
			r.Subnets = append(r.Subnets, p)
		}
	}
	for _, s := range domains {
		if d, err := reach.ParseDomain(s); err == nil {
			r.Domains = append(r.Domains, dataplane.DomainRoute{Name: d.String()})
		}
	}
	return r
}
