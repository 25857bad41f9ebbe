package session

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/outposthq/outpost/dataplane"
)

// Routes are the subnets and domains the agent advertises. They are the
// agent's security boundary: a session may reach only what they cover (see
// the package comment for the rules). The zero value advertises nothing, so
// every target is refused. A Routes is a plain value; the Handler keeps its
// own compiled copy, so the caller may reuse the slices after SetRoutes.
type Routes struct {
	// Subnets are IPv4 prefixes. Host bits are ignored (10.0.0.1/24 means
	// 10.0.0.0/24). A prefix that is not a valid IPv4 prefix (an IPv6 or
	// IPv4-mapped IPv6 prefix, the zero netip.Prefix) never matches; Validate
	// reports it.
	Subnets []netip.Prefix
	// Domains are DNS names ("contoso.local": the name itself and every
	// subdomain) or explicit wildcards ("*.contoso.local": subdomains only),
	// matched case-insensitively. A route that dataplane.ValidateDomainRoute
	// rejects never matches; Validate reports it.
	Domains []string
}

// Validate reports the first entry of r that can never match, or nil: a
// subnet that is not a valid IPv4 prefix, or a domain route that
// dataplane.ValidateDomainRoute rejects. The Handler ignores such entries, which
// only ever narrows what sessions may reach; callers validate first to tell
// the operator.
func (r Routes) Validate() error {
	for i, p := range r.Subnets {
		if !p.IsValid() || !p.Addr().Is4() {
			return fmt.Errorf("session: subnet %d (%s) is not an IPv4 prefix", i, p)
		}
	}
	for i, d := range r.Domains {
		if _, err := dataplane.ValidateDomainRoute(d); err != nil {
			return fmt.Errorf("session: domain %d (%q): %w", i, d, err)
		}
	}
	return nil
}

// routeTable is a compiled, immutable Routes. A session takes one snapshot
// when its ConnectRequest arrives and checks every address against it.
type routeTable struct {
	subnets []netip.Prefix // valid IPv4, masked
	names   []string       // "contoso.local": the name and its subdomains
	wild    []string       // ".contoso.local" from "*.contoso.local": subdomains only
}

// compileRoutes builds the table for r, dropping the entries Validate
// reports.
func compileRoutes(r Routes) *routeTable {
	t := &routeTable{}
	for _, p := range r.Subnets {
		if p.IsValid() && p.Addr().Is4() {
			t.subnets = append(t.subnets, p.Masked())
		}
	}
	for _, d := range r.Domains {
		d, err := dataplane.ValidateDomainRoute(d)
		if err != nil {
			continue
		}
		if rest, ok := strings.CutPrefix(d, "*."); ok {
			t.wild = append(t.wild, "."+rest)
		} else {
			t.names = append(t.names, d)
		}
	}
	return t
}

// matchDomain reports whether host (lower-case, without a trailing dot) is
// covered by a domain route.
func (t *routeTable) matchDomain(host string) bool {
	for _, n := range t.names {
		if host == n || (len(host) > len(n) && host[len(host)-len(n)-1] == '.' && strings.HasSuffix(host, n)) {
			return true
		}
	}
	for _, w := range t.wild {
		if len(host) > len(w) && strings.HasSuffix(host, w) {
			return true
		}
	}
	return false
}

// specialRange is an address range refused unless advertised explicitly.
type specialRange struct {
	prefix netip.Prefix
	what   string // as in "target 127.0.0.1:22 is <what> and not explicitly advertised"
}

// specialRanges are checked in order; the most specific come first, so
// 169.254.169.254 is reported as the metadata address, not as link-local.
// IPv6 entries can never be advertised (subnets are IPv4 only), so an IPv6
// address in them is always refused. The table is never modified.
var specialRanges = [...]specialRange{
	{netip.MustParsePrefix("169.254.169.254/32"), "the cloud metadata address"},
	{netip.MustParsePrefix("fd00:ec2::254/128"), "the cloud metadata address"},
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local"},
	{netip.MustParsePrefix("0.0.0.0/8"), "unspecified"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("::/128"), "unspecified"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
}

// special returns the special range a (unmapped) lies in.
func special(a netip.Addr) (specialRange, bool) {
	for _, r := range specialRanges {
		if r.prefix.Contains(a) {
			return r, true
		}
	}
	return specialRange{}, false
}

// refusedError is the policy's refusal of one address. The Control hook
// returns it, so it ends up inside the *net.OpError of a refused dial.
type refusedError struct {
	addr netip.AddrPort // unmapped
	what string         // the special range's name; "" when outside the subnets
}

// Error returns the refusal reason as the ConnectResponse carries it for an
// IP target, e.g. "target 10.0.0.9:22 is not in advertised subnets".
func (e *refusedError) Error() string {
	return "target " + e.addr.String() + " " + e.verdict()
}

// verdict is the part of the reason after the address.
func (e *refusedError) verdict() string {
	if e.what == "" {
		return "is not in advertised subnets"
	}
	return "is " + e.what + " and not explicitly advertised"
}

// check applies the policy to the address about to be dialed. domain says
// whether the target is a host name covered by a domain route, which allows
// any address that is not special. It returns nil or a *refusedError.
//
// Rules: an IPv4-mapped IPv6 address is checked as the IPv4 address it is.
// An address in a special range is allowed only when an advertised subnet
// both contains it and lies inside that range (10.0.0.0/8 does not make
// 127.0.0.1 reachable, nor does 0.0.0.0/0; 127.0.0.0/8 and 127.0.0.1/32 do).
// Otherwise an IPv4 address is allowed when a subnet contains it, and any
// address is allowed for a domain-matched name.
func (t *routeTable) check(ap netip.AddrPort, domain bool) *refusedError {
	a := ap.Addr().Unmap().WithZone("")
	ap = netip.AddrPortFrom(a, ap.Port())
	if sr, ok := special(a); ok {
		if a.Is4() {
			for _, s := range t.subnets {
				if s.Contains(a) && s.Bits() >= sr.prefix.Bits() && sr.prefix.Contains(s.Addr()) {
					return nil
				}
			}
		}
		return &refusedError{addr: ap, what: sr.what}
	}
	if domain {
		return nil
	}
	if a.Is4() {
		for _, s := range t.subnets {
			if s.Contains(a) {
				return nil
			}
		}
	}
	return &refusedError{addr: ap}
}
