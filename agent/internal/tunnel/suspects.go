package tunnel

import (
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// suspectFor is how long an address of the gateway that failed (a dial
// that timed out, a connection gone silent) is tried only after the
// others.
const suspectFor = time.Minute

// suspects are the gateway addresses that failed lately. When the gateway
// endpoint is a name with several addresses (one per replica), a dead
// replica's address would otherwise cost every redial its handshake
// timeout before the next address is tried. Safe for concurrent use; the
// zero value is ready.
type suspects struct {
	mu sync.Mutex
	at map[netip.Addr]time.Time // guarded by mu
}

// add marks the address of addr (a *net.UDPAddr) as failed now.
func (s *suspects) add(addr net.Addr, now time.Time) {
	u, ok := addr.(*net.UDPAddr)
	if !ok {
		return
	}
	ip := u.AddrPort().Addr().Unmap()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.at == nil {
		s.at = make(map[netip.Addr]time.Time)
	}
	s.at[ip] = now
}

// clear forgets a failure of ip: it answered.
func (s *suspects) clear(ip netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.at, ip.Unmap())
}

// order returns addrs with those that failed within suspectFor of now
// last, the longest ago first among them; the others keep their order.
func (s *suspects) order(addrs []netip.Addr, now time.Time) []netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	failed := func(ip netip.Addr) (time.Time, bool) {
		t, ok := s.at[ip.Unmap()]
		return t, ok && now.Sub(t) < suspectFor
	}
	out := slices.Clone(addrs)
	slices.SortStableFunc(out, func(a, b netip.Addr) int {
		ta, fa := failed(a)
		tb, fb := failed(b)
		switch {
		case fa != fb && fa:
			return 1
		case fa != fb:
			return -1
		case fa:
			return ta.Compare(tb)
		}
		return 0
	})
	return out
}
