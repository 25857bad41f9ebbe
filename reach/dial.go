package reach

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/outposthq/outpost/dataplane"
)

// DefaultDialTimeout bounds resolving and connecting to a target when
// Dialer.Timeout is zero (DESIGN.md §12).
const DefaultDialTimeout = 20 * time.Second

// Dialer dials targets through a Table. The zero value is usable: a 20 s
// timeout, the system resolver, no extra Control hook. A Dialer is safe for
// concurrent use as long as its fields are not changed.
type Dialer struct {
	// Timeout bounds resolving and connecting, Happy Eyeballs attempts
	// included. If zero or negative, DefaultDialTimeout.
	Timeout time.Duration
	// Resolver resolves host-name targets. The table is checked on every
	// address it returns, at connect time, so a resolver cannot widen what
	// is reached. If nil, net.DefaultResolver.
	Resolver *net.Resolver
	// Control, if not nil, runs like net.Dialer.Control for every address
	// the table allows, after the check and before connect(2); an error
	// fails that attempt. Tests use it to see that an address is allowed
	// without sending a packet to it.
	Control func(network, address string, c syscall.RawConn) error
}

// DialError is a failed Dialer.Dial.
type DialError struct {
	// Reason is the human reason, stable (see the package comment), which
	// the agent sends in a ConnectResponse Error.
	Reason string
	// Refused reports that the table refused the target or every address
	// it resolved to: nothing was sent to it.
	Refused bool
	// Err is the cause: the *RefusedError of an IP target refused before
	// dialing, or the dialer's error (*net.OpError, …, wrapping
	// context.Canceled when the dial was abandoned).
	Err error
}

// Error returns Reason.
func (e *DialError) Error() string { return e.Reason }

// Unwrap returns Err.
func (e *DialError) Unwrap() error { return e.Err }

// Dial connects to t over TCP with the system's Happy Eyeballs (RFC 8305)
// across the addresses of a name, through table: an IP target is checked
// before dialing for a clear refusal, and every address is checked again,
// authoritatively, in the dialer's Control hook. A nil table refuses every
// target. It returns the connection, or a *DialError; when ctx ended, the
// error's reason does not matter.
func (d *Dialer) Dial(ctx context.Context, table *Table, t dataplane.Target) (*net.TCPConn, error) {
	if table == nil {
		table = &Table{}
	}
	if !t.IsName() {
		if ref := table.Check(netip.AddrPortFrom(t.Addr, t.Port), false); ref != nil {
			return nil, &DialError{Reason: ref.Error(), Refused: true, Err: ref}
		}
	}
	g := &guard{table: table, domain: t.IsName() && table.MatchDomain(t.Name), control: d.Control}
	timeout := d.Timeout
	if timeout <= 0 {
		timeout = DefaultDialTimeout
	}
	nd := net.Dialer{
		Timeout:        timeout,
		Resolver:       d.Resolver,
		ControlContext: g.check,
	}
	c, err := nd.DialContext(ctx, "tcp", t.String())
	if err != nil {
		return nil, &DialError{Reason: g.reason(t, err), Refused: g.allRefused() != nil, Err: err}
	}
	tcp, ok := c.(*net.TCPConn)
	if !ok { // net.Dialer returns a *net.TCPConn for "tcp"; stay safe if that changes
		c.Close()
		return nil, &DialError{Reason: fmt.Sprintf("dial %s: unexpected connection type %T", t, c)}
	}
	return tcp, nil
}

// guard is one dial's net.Dialer.ControlContext hook: it applies a table to
// every address the dialer is about to connect to, after the socket is
// created and before connect(2), so what is checked is exactly what is
// dialed whatever the resolver answered (DNS rebinding cannot escape). It
// records what it refused, to explain a failed dial. It is safe for
// concurrent use (Happy Eyeballs races two attempts).
type guard struct {
	table   *Table
	domain  bool                                                   // the target is a name a domain route covers
	control func(network, address string, c syscall.RawConn) error // Dialer.Control; may be nil

	mu       sync.Mutex
	attempts int             // guarded by mu: addresses checked
	refused  []*RefusedError // guarded by mu: in the order refused
	allowed  []netip.Addr    // guarded by mu: in the order allowed
}

// check is the net.Dialer.ControlContext hook. It returns a *RefusedError
// for an address the table refuses, which fails that attempt before any
// packet is sent.
func (g *guard) check(_ context.Context, network, address string, c syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("reach: dialed address %q not understood: %w", address, err)
	}
	ref := g.table.Check(ap, g.domain)
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
	if g.control != nil {
		return g.control(network, address, c)
	}
	return nil
}

// allRefused returns the refusals when every address the dialer tried was
// refused by the table, and nil otherwise.
func (g *guard) allRefused() []*RefusedError {
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

// reason explains the failed dial of t that returned err, from what the
// guard saw.
func (g *guard) reason(t dataplane.Target, err error) string {
	if refused := g.allRefused(); refused != nil {
		if !t.IsName() {
			return refused[0].Error()
		}
		return nameRefusal(t.Name, refused)
	}
	var ref *RefusedError
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
func nameRefusal(name string, refused []*RefusedError) string {
	for _, r := range refused {
		if r.Range != "" {
			return fmt.Sprintf("%s resolves only to refused addresses: %s %s", name, r.Addr.Addr(), r.verdict())
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
