// Package reach is the one definition of what a route covers and what may be
// dialed (DESIGN.md §7, §8). The agent applies it to the routes it
// advertises; the gateway to its direct allow-list, and its router shares
// the grammar and canonical form of domain routes. It imports only the
// standard library and the wire codec (for the domain-route grammar).
//
// # Routes
//
// A subnet route is an IPv4 prefix (ParseSubnet); host bits are ignored when
// matching. A domain route (ParseDomain) is a DNS name, "contoso.local",
// which covers the name itself and every name under it, or an explicit
// wildcard, "*.contoso.local", which covers only the names under it, at any
// depth. Matching is ASCII case-insensitive. Routes holds both kinds;
// Compile turns them into an immutable Table. SubnetCovers and
// Domain.CoversRoute compare two routes: whether one covers all the other
// does (the gateway checks advertised routes against approved ones).
//
// # Policy
//
// Table.Check decides on one address about to be dialed:
//
//   - an IPv4-mapped IPv6 address is checked as the IPv4 address it is, and
//     an IPv6 zone is ignored;
//   - an address in a special range (see below) is allowed only when a subnet
//     route both contains it and lies inside that range itself: 127.0.0.0/8
//     or 127.0.0.1/32 open 127.0.0.1, 10.0.0.0/8 and 0.0.0.0/0 never do;
//   - otherwise an IPv4 address is allowed when a subnet route contains it;
//   - and any address is allowed for a host name that a domain route covers.
//
// So an IP target must lie in a subnet, a host name covered by a domain may
// resolve to any address but a special one, and any other host name may reach
// only those of its addresses that lie in subnets. Subnets are IPv4, so an
// IPv6 address is reachable only through a domain name, and never one in a
// special range.
//
// The special ranges, most specific first (the first that holds an address
// names it in a refusal): the cloud metadata addresses 169.254.169.254,
// fd00:ec2::254, 168.63.129.16 (Azure), 100.100.100.200 (Alibaba Cloud) and
// 192.0.0.192 (Oracle Cloud), each a range of its own, so only a /32 route
// opens it; loopback 127.0.0.0/8 and ::1; link-local 169.254.0.0/16 and
// fe80::/10; unspecified 0.0.0.0/8 and ::; multicast 224.0.0.0/4 and
// ff00::/8. Table.WithOwnAddrs adds the addresses of this host
// (InterfaceAddrs) that lie in none of those, each a range of its own, so a
// process refuses to dial itself unless a route names the address as a /32.
//
// # Dialing
//
// Dialer.Dial resolves and dials a target with Happy Eyeballs (RFC 8305). The
// authoritative check runs in net.Dialer.ControlContext on the address
// actually being dialed, after resolution and before connect(2), so DNS
// rebinding cannot escape it; an IP target is also checked before dialing,
// for a clear refusal. A failed dial returns a *DialError whose message is a
// stable, human reason, one of:
//
//	target 10.0.0.9:22 is not in advertised subnets
//	target 127.0.0.1:22 is loopback and not explicitly advertised
//	    (also "link-local", "unspecified", "multicast",
//	    "the cloud metadata address", "an address of this host")
//	db.other.test resolves only to addresses outside advertised subnets
//	db.contoso.local resolves only to refused addresses: 127.0.0.1 is loopback and not explicitly advertised
//	cannot resolve db.contoso.local: no such host
//	dial db.other.test:22: could not reach 10.0.0.5; its other addresses are refused by the routes
//	dial 127.0.0.1:1: connection refused
//	dial 10.0.0.5:22: i/o timeout
package reach
