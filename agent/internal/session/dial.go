package session

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"

	"github.com/outposthq/outpost/dataplane"
)

// guard is one dial's net.Dialer.ControlContext hook: it applies the
// session's route snapshot to every address the dialer is about to connect
// to, after the socket is created and before connect(2), so what is checked
// is exactly what is dialed whatever the resolver answered (DNS rebinding
// cannot escape). It records what it refused, to explain a failed dial.
// It is safe for concurrent use (Happy Eyeballs races two attempts).
type guard struct {
	table  *routeTable
	domain bool                                // the target is a name covered by a domain route
	hook   func(network, address string) error // tests: runs for an allowed address; nil in production

	mu       sync.Mutex
	attempts int             // guarded by mu: addresses checked
	refused  []*refusedError // guarded by mu: in the order refused
	allowed  []netip.Addr    // guarded by mu: in the order allowed
}

// control is the net.Dialer.ControlContext hook. It returns a *refusedError
// for an address the routes do not allow, which fails that attempt before
// any packet is sent.
func (g *guard) control(_ context.Context, network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("session: dialed address %q not understood: %w", address, err)
	}
	ref := g.table.check(ap, g.domain)
	g.mu.Lock()
	g.attempts++
	if ref != nil {
		g.refused = append(g.refused, ref)
	} else {
		g.allowed = append(g.allowed, ap.Addr().Unmap())
	}
	g.mu.Unlock()
	if ref != nil {
		return ref
	}
	if g.hook != nil {
		return g.hook(network, address)
	}
	return nil
}

// allRefused returns the refusals when every address the dialer tried was
// refused by the policy, and nil otherwise.
func (g *guard) allRefused() []*refusedError {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.attempts == 0 || len(g.refused) != g.attempts {
		return nil
	}
	return g.refused
}

// maxListed is how many allowed addresses a reason lists at most.
const maxListed = 4

// allowedList returns the addresses the guard allowed, for a reason:
// "127.0.0.1, 10.0.0.5" (at most maxListed, then ", ...").
func (g *guard) allowedList() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	var b strings.Builder
	for i, a := range g.allowed {
		if i == maxListed {
			b.WriteString(", ...")
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(a.String())
	}
	return b.String()
}

// dial connects to t within the dial timeout, using the system's Happy
// Eyeballs (RFC 8305) across the addresses of a name. An IP target is
// checked before dialing for a clear refusal; every address is checked
// again, authoritatively, by the Control hook. On failure it returns a nil
// conn and the reason the ConnectResponse Error carries; if ctx ended, the
// reason does not matter.
func (h *Handler) dial(ctx context.Context, table *routeTable, t dataplane.Target) (*net.TCPConn, string) {
	if !t.IsName() {
		if ref := table.check(netip.AddrPortFrom(t.Addr, t.Port), false); ref != nil {
			return nil, ref.Error()
		}
	}
	g := &guard{table: table, domain: t.IsName() && table.matchDomain(t.Name), hook: h.testHookConnect}
	d := net.Dialer{
		Timeout:        h.cfg.DialTimeout,
		Resolver:       h.cfg.Resolver,
		ControlContext: g.control,
	}
	c, err := d.DialContext(ctx, "tcp", t.String())
	if err != nil {
		return nil, g.reason(t, err)
	}
	tcp, ok := c.(*net.TCPConn)
	if !ok { // net.Dialer returns a *net.TCPConn for "tcp"; keep the session safe if that changes
		c.Close()
		return nil, fmt.Sprintf("dial %s: unexpected connection type %T", t, c)
	}
	return tcp, ""
}

// reason explains the failed dial of t that returned err, from what the
// guard saw.
func (g *guard) reason(t dataplane.Target, err error) string {
	if refused := g.allRefused(); refused != nil {
		if !t.IsName() {
			return refused[0].Error()
		}
		return nameRefusal(t.Name, refused)
	}
	var ref *refusedError
	if errors.As(err, &ref) {
		// The dialer reports its first failure, a refusal here, but some
		// address was allowed and failed to connect.
		return fmt.Sprintf("dial %s: could not reach %s; its other addresses are refused by the routes", t, g.allowedList())
	}
	return dialFailure(t, err)
}

// nameRefusal is the reason for a host name whose every address was
// refused: the first address in a special range if there is one, otherwise
// "<name> resolves only to addresses outside advertised subnets".
func nameRefusal(name string, refused []*refusedError) string {
	for _, r := range refused {
		if r.what != "" {
			return fmt.Sprintf("%s resolves only to refused addresses: %s %s", name, r.addr.Addr(), r.verdict())
		}
	}
	return name + " resolves only to addresses outside advertised subnets"
}

// dialFailure is the reason for a dial that failed for another cause than
// the policy: "cannot resolve <name>: no such host", "dial 127.0.0.1:1:
// connection refused", "dial 10.0.0.5:22: i/o timeout".
func dialFailure(t dataplane.Target, err error) string {
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return fmt.Sprintf("cannot resolve %s: %s", t.Name, dnsErr.Err)
	}
	addr := t.String()
	cause := err.Error()
	var op *net.OpError
	if errors.As(err, &op) {
		if op.Addr != nil {
			addr = op.Addr.String()
		}
		cause = op.Err.Error()
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		cause = errno.Error()
	}
	return "dial " + addr + ": " + cause
}
