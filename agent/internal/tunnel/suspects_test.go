package tunnel

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// Addresses that failed lately go last, the oldest failure first; a
// failure older than suspectFor, or cleared by an answer, no longer counts.
func TestSuspectsOrder(t *testing.T) {
	a, b, c, d := netip.MustParseAddr("127.0.0.11"), netip.MustParseAddr("127.0.0.12"),
		netip.MustParseAddr("127.0.0.13"), netip.MustParseAddr("::1")
	addrs := []netip.Addr{a, b, c, d}
	now := time.Now()
	var s suspects
	if got := s.order(addrs, now); !slices.Equal(got, addrs) {
		t.Fatalf("no failures: %v", got)
	}
	udp := func(ip netip.Addr) net.Addr { return net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 4433)) }
	s.add(udp(b), now.Add(-2*time.Second))
	s.add(udp(a), now.Add(-time.Second))
	s.add(udp(d), now.Add(-suspectFor))
	if got, want := s.order(addrs, now), []netip.Addr{c, d, b, a}; !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
	s.clear(b)
	if got, want := s.order(addrs, now), []netip.Addr{b, c, d, a}; !slices.Equal(got, want) {
		t.Fatalf("after clearing %v: order %v, want %v", b, got, want)
	}
	// An IPv4-mapped address is the same address.
	s.add(udp(netip.AddrFrom16(c.As16())), now)
	if got, want := s.order(addrs, now), []netip.Addr{b, d, a, c}; !slices.Equal(got, want) {
		t.Fatalf("mapped: order %v, want %v", got, want)
	}
}
