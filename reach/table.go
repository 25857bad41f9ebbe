package reach

import (
	"fmt"
	"net"
	"net/netip"
)

// Table is a compiled Routes, with optionally the addresses of this host:
// what Check decides on. Create it with Compile; the zero value holds no
// route and refuses every address. A Table is immutable and safe for
// concurrent use; a holder replaces it as a whole to change the routes.
type Table struct {
	subnets []netip.Prefix // valid IPv4, masked
	domains []Domain
	own     []specialRange // this host's addresses outside specialRanges, one /32 or /128 each
}

// Compile returns the table for r, dropping the entries Routes.Validate
// reports. It holds no address of this host (see WithOwnAddrs).
func Compile(r Routes) *Table {
	t := &Table{}
	for _, p := range r.Subnets {
		if validSubnet(p) {
			t.subnets = append(t.subnets, p.Masked())
		}
	}
	for _, s := range r.Domains {
		if d, err := ParseDomain(s); err == nil {
			t.domains = append(t.domains, d)
		}
	}
	return t
}

// ownWhat names the addresses of this host in a refusal.
const ownWhat = "an address of this host"

// WithOwnAddrs returns a copy of t that treats addrs as special ranges of
// their own ("an address of this host"): each is refused unless a subnet
// route names it as a /32, even when a wider subnet or a domain route would
// allow it. IPv4-mapped addresses are unmapped and zones dropped; an address
// already in a special range (loopback, link-local, …) keeps that range's
// rule, so 127.0.0.0/8 still opens 127.0.0.1. The list replaces the one t
// held; nil removes it. t is not modified.
func (t *Table) WithOwnAddrs(addrs []netip.Addr) *Table {
	c := *t
	c.own = nil
	for _, a := range addrs {
		a = a.Unmap().WithZone("")
		if !a.IsValid() {
			continue
		}
		if _, ok := staticSpecial(a); ok {
			continue
		}
		p := netip.PrefixFrom(a, a.BitLen())
		if !containsRange(c.own, p) {
			c.own = append(c.own, specialRange{prefix: p, what: ownWhat})
		}
	}
	return &c
}

func containsRange(rs []specialRange, p netip.Prefix) bool {
	for _, r := range rs {
		if r.prefix == p {
			return true
		}
	}
	return false
}

// InterfaceAddrs returns the addresses of this host's network interfaces
// (net.InterfaceAddrs), unmapped and without zones, for Table.WithOwnAddrs.
// It returns net.InterfaceAddrs's error, wrapped.
func InterfaceAddrs() ([]netip.Addr, error) {
	ifAddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("reach: list the interface addresses: %w", err)
	}
	addrs := make([]netip.Addr, 0, len(ifAddrs))
	for _, ia := range ifAddrs {
		var ip net.IP
		switch ia := ia.(type) {
		case *net.IPNet:
			ip = ia.IP
		case *net.IPAddr:
			ip = ia.IP
		default:
			continue
		}
		if a, ok := netip.AddrFromSlice(ip); ok {
			addrs = append(addrs, a.Unmap())
		}
	}
	return addrs, nil
}

// MatchDomain reports whether a domain route of t covers host, a host name
// as dataplane.ParseTarget returns it (lower-case, without a trailing dot);
// see Domain.Covers.
func (t *Table) MatchDomain(host string) bool {
	for _, d := range t.domains {
		if d.Covers(host) {
			return true
		}
	}
	return false
}

// specialRange is an address range refused unless a route names it
// explicitly.
type specialRange struct {
	prefix netip.Prefix
	what   string // as in "target 127.0.0.1:22 is <what> and not explicitly advertised"
}

// metadataWhat names the cloud metadata addresses in a refusal.
const metadataWhat = "the cloud metadata address"

// specialRanges are checked in order; the most specific come first, so
// 169.254.169.254 is reported as the metadata address, not as link-local.
// IPv6 entries can never be opened (subnets are IPv4 only), so an IPv6
// address in them is always refused. The table is never modified.
var specialRanges = [...]specialRange{
	{netip.MustParsePrefix("169.254.169.254/32"), metadataWhat}, // AWS, GCP, Azure IMDS, and most others
	{netip.MustParsePrefix("fd00:ec2::254/128"), metadataWhat},  // AWS over IPv6
	{netip.MustParsePrefix("168.63.129.16/32"), metadataWhat},   // Azure platform (WireServer)
	{netip.MustParsePrefix("100.100.100.200/32"), metadataWhat}, // Alibaba Cloud
	{netip.MustParsePrefix("192.0.0.192/32"), metadataWhat},     // Oracle Cloud
	{netip.MustParsePrefix("127.0.0.0/8"), "loopback"},
	{netip.MustParsePrefix("169.254.0.0/16"), "link-local"},
	{netip.MustParsePrefix("0.0.0.0/8"), "unspecified"},
	{netip.MustParsePrefix("224.0.0.0/4"), "multicast"},
	{netip.MustParsePrefix("::1/128"), "loopback"},
	{netip.MustParsePrefix("fe80::/10"), "link-local"},
	{netip.MustParsePrefix("::/128"), "unspecified"},
	{netip.MustParsePrefix("ff00::/8"), "multicast"},
}

// staticSpecial returns the entry of specialRanges a (unmapped) lies in.
func staticSpecial(a netip.Addr) (specialRange, bool) {
	for _, r := range specialRanges {
		if r.prefix.Contains(a) {
			return r, true
		}
	}
	return specialRange{}, false
}

// special returns the special range a (unmapped) lies in: one of
// specialRanges, else one of t's own addresses.
func (t *Table) special(a netip.Addr) (specialRange, bool) {
	if r, ok := staticSpecial(a); ok {
		return r, true
	}
	for _, r := range t.own {
		if r.prefix.Contains(a) {
			return r, true
		}
	}
	return specialRange{}, false
}

// RefusedError is the refusal of one address by a Table. The guard returns
// it from the dialer's Control hook, so it ends up inside the *net.OpError
// of a refused dial attempt.
type RefusedError struct {
	// Addr is the refused address and port, unmapped, without zone.
	Addr netip.AddrPort
	// Range names the special range Addr lies in ("loopback", "the cloud
	// metadata address", …); "" when Addr is simply outside the routes.
	Range string
}

// Error returns the refusal reason as a ConnectResponse carries it for an
// IP target, e.g. "target 10.0.0.9:22 is not in advertised subnets".
func (e *RefusedError) Error() string {
	return "target " + e.Addr.String() + " " + e.verdict()
}

// verdict is the part of the reason after the address.
func (e *RefusedError) verdict() string {
	if e.Range == "" {
		return "is not in advertised subnets"
	}
	return "is " + e.Range + " and not explicitly advertised"
}

// Check applies the policy (see the package comment) to ap, the address
// about to be dialed. domainMatched says whether the target is a host name
// that a domain route of t covers (MatchDomain), which allows any address
// that is not special. It returns nil when ap is allowed, a *RefusedError
// otherwise (also for the zero netip.AddrPort).
func (t *Table) Check(ap netip.AddrPort, domainMatched bool) *RefusedError {
	a := ap.Addr().Unmap().WithZone("")
	ap = netip.AddrPortFrom(a, ap.Port())
	if r, ok := t.special(a); ok {
		for _, s := range t.subnets {
			if s.Contains(a) && s.Bits() >= r.prefix.Bits() && r.prefix.Contains(s.Addr()) {
				return nil
			}
		}
		return &RefusedError{Addr: ap, Range: r.what}
	}
	if domainMatched && a.IsValid() {
		return nil
	}
	for _, s := range t.subnets {
		if s.Contains(a) {
			return nil
		}
	}
	return &RefusedError{Addr: ap}
}
