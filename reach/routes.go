package reach

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/outposthq/outpost/dataplane"
)

// Routes are subnet and domain routes: what an agent advertises, or what
// the gateway may reach directly. The zero value holds no route, so every
// target is refused. A Routes is a plain value; Compile copies what it keeps,
// so the caller may reuse the slices afterwards.
type Routes struct {
	// Subnets are IPv4 prefixes. Host bits are ignored (10.0.0.1/24 means
	// 10.0.0.0/24). A prefix that is not a valid IPv4 prefix (an IPv6 or
	// IPv4-mapped IPv6 prefix, the zero netip.Prefix) never matches; Validate
	// reports it.
	Subnets []netip.Prefix
	// Domains are domain routes as ParseDomain reads them, in any case. A
	// route that ParseDomain rejects never matches; Validate reports it.
	Domains []string
}

// Validate reports the first entry of r that can never match, or nil: a
// subnet that is not a valid IPv4 prefix, or a domain route that ParseDomain
// rejects. Compile ignores such entries, which only ever narrows what may be
// reached; callers validate first to tell the operator.
func (r Routes) Validate() error {
	for i, p := range r.Subnets {
		if !validSubnet(p) {
			return fmt.Errorf("reach: subnet %d (%s) is not an IPv4 prefix", i, p)
		}
	}
	for i, d := range r.Domains {
		if _, err := ParseDomain(d); err != nil {
			return fmt.Errorf("reach: domain %d (%q): %w", i, d, err)
		}
	}
	return nil
}

// validSubnet reports whether p may be a subnet route.
func validSubnet(p netip.Prefix) bool { return p.IsValid() && p.Addr().Is4() }

// ParseSubnet parses a subnet route written as an IPv4 CIDR ("10.0.0.0/24")
// and returns it as written, host bits kept (they are sent as written and
// ignored when matching). It accepts nothing else: no surrounding space, no
// IPv6 or IPv4-mapped IPv6 prefix, no bare address. The error, on failure,
// says why.
func ParseSubnet(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("reach: subnet %q: %w", s, err)
	}
	if !validSubnet(p) {
		return netip.Prefix{}, fmt.Errorf("reach: subnet %q is not an IPv4 prefix", s)
	}
	return p, nil
}

// Domain is a domain route in canonical form. The zero value covers no name.
type Domain struct {
	// Name is the domain, ASCII lower-cased, without the wildcard label:
	// "contoso.local" for both "contoso.local" and "*.contoso.local". It is
	// the key under which a route is indexed.
	Name string
	// Wildcard reports an explicit wildcard route ("*.contoso.local"): it
	// covers the names under Name, not Name itself.
	Wildcard bool
}

// ParseDomain parses a domain route, "contoso.local" or "*.contoso.local",
// by the grammar of dataplane.ValidateDomainRoute (the one RouteAdvertise
// carries), and returns its canonical form. It returns that function's
// *dataplane.InvalidFieldError on failure.
func ParseDomain(s string) (Domain, error) {
	s, err := dataplane.ValidateDomainRoute(s)
	if err != nil {
		return Domain{}, err
	}
	if name, ok := strings.CutPrefix(s, "*."); ok {
		return Domain{Name: name, Wildcard: true}, nil
	}
	return Domain{Name: s}, nil
}

// String returns the route as it is advertised: "contoso.local" or
// "*.contoso.local".
func (d Domain) String() string {
	if d.Wildcard {
		return "*." + d.Name
	}
	return d.Name
}

// Covers reports whether the route covers host, a host name as
// dataplane.ParseTarget returns it (lower-case, without a trailing dot):
// host equals Name (unless Wildcard), or ends in "." + Name after at least
// one more byte.
func (d Domain) Covers(host string) bool {
	if d.Name == "" {
		return false
	}
	if len(host) == len(d.Name) {
		return !d.Wildcard && host == d.Name
	}
	return len(host) > len(d.Name)+1 && host[len(host)-len(d.Name)-1] == '.' && strings.HasSuffix(host, d.Name)
}

// CoversRoute reports whether every name route r covers is covered by d:
// r's domain equals d's or lies under it, except that a wildcard d does not
// cover the plain route of its own domain ("*.contoso.local" covers
// "*.contoso.local" and "db.contoso.local", not "contoso.local"). It is how
// the gateway checks an advertised domain route against an approved one.
func (d Domain) CoversRoute(r Domain) bool {
	if d.Name == "" || r.Name == "" {
		return false
	}
	if r.Name == d.Name {
		return r.Wildcard || !d.Wildcard
	}
	return d.Covers(r.Name)
}

// SubnetCovers reports whether the subnet route outer covers every address
// of inner: both are valid IPv4 prefixes (host bits ignored) and inner lies
// inside outer. It is how the gateway checks an advertised subnet against
// an approved one.
func SubnetCovers(outer, inner netip.Prefix) bool {
	if !validSubnet(outer) || !validSubnet(inner) {
		return false
	}
	return outer.Bits() <= inner.Bits() && outer.Masked().Contains(inner.Addr())
}
