// Package testlb runs, for tests, the UDP load balancer that stands in front
// of gateway replicas: one loopback address that sends each new client
// source address to the next of its backends (round robin, skipping those
// marked down), through a socket of its own per client, and relays the
// answers back. A client that dials again from a new source port may so
// reach another backend, as behind an L4 balancer that hashes the 5-tuple.
// It is imported by tests, and by the benchmark program (New and Close, as
// tests use Start), and uses only the standard library.
package testlb

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
)

// Balancer is a round-robin UDP balancer on 127.0.0.1. Its methods are safe
// for concurrent use.
type Balancer struct {
	conn *net.UDPConn
	wg   sync.WaitGroup

	mu       sync.Mutex
	backends []netip.AddrPort
	down     map[int]bool
	next     int                             // the backend of the next new client
	flows    map[netip.AddrPort]*net.UDPConn // client → its socket toward a backend
	// dead are the backends whose datagrams are dropped both ways, flows
	// already sent to them included: a host that died without a word.
	dead   map[int]bool
	sentTo map[*net.UDPConn]int // each flow's backend
	closed bool
}

// Start runs a balancer in front of backends (loopback addresses; one may
// be listed more than once, for a heavier weight) until the test ends: at
// cleanup it closes every socket and waits for its goroutines. It fails the
// test if a backend is not a loopback address.
func Start(tb testing.TB, backends ...netip.AddrPort) *Balancer {
	tb.Helper()
	b, err := New(backends...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(b.Close)
	return b
}

// New runs a balancer in front of backends, as Start does, outside a test:
// the caller stops it with Close. It fails if a backend is not a loopback
// address or if the balancer's socket cannot be opened.
func New(backends ...netip.AddrPort) (*Balancer, error) {
	for _, b := range backends {
		if !b.Addr().IsLoopback() {
			return nil, fmt.Errorf("testlb: backend %s is not a loopback address", b)
		}
	}
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		return nil, fmt.Errorf("testlb: %w", err)
	}
	b := &Balancer{conn: conn, backends: backends, down: map[int]bool{}, flows: map[netip.AddrPort]*net.UDPConn{},
		dead: map[int]bool{}, sentTo: map[*net.UDPConn]int{}}
	b.wg.Go(b.serve)
	return b, nil
}

// Addr is the balancer's address, host:port.
func (b *Balancer) Addr() string { return b.conn.LocalAddr().String() }

// SetDown takes backend i (its index in Start's list) out of the rotation
// for new clients, as a balancer does when its health check fails; clients
// already sent to it stay.
func (b *Balancer) SetDown(i int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.down[i] = true
}

// Blackhole makes backend i die silently, as a host powered off or a
// process killed behind a firewall that sends no ICMP: it leaves the
// rotation, and every datagram to or from it is dropped from now on, on
// the flows already sent to it too. The backend itself is not touched.
func (b *Balancer) Blackhole(i int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.down[i] = true
	b.dead[i] = true
}

// silenced reports whether out's backend was blackholed.
func (b *Balancer) silenced(out *net.UDPConn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	i, ok := b.sentTo[out]
	return ok && b.dead[i]
}

// SetUp puts backend i back into the rotation.
func (b *Balancer) SetUp(i int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.down, i)
}

// serve relays client datagrams until the balancer closes.
func (b *Balancer) serve() {
	buf := make([]byte, 64<<10)
	for {
		n, from, err := b.conn.ReadFromUDPAddrPort(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		if out := b.flow(from); out != nil && !b.silenced(out) {
			_, _ = out.Write(buf[:n])
		}
	}
}

// flow returns the socket of client from's flow, opening one to the next
// backend for a new client; nil once closed or if every backend is down.
func (b *Balancer) flow(from netip.AddrPort) *net.UDPConn {
	b.mu.Lock()
	defer b.mu.Unlock()
	if out, ok := b.flows[from]; ok || b.closed {
		return out
	}
	for range b.backends {
		i := b.next
		b.next = (b.next + 1) % len(b.backends)
		if b.down[i] {
			continue
		}
		out, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(b.backends[i]))
		if err != nil {
			return nil
		}
		b.flows[from] = out
		b.sentTo[out] = i
		b.wg.Go(func() { b.relayBack(out, from) })
		return out
	}
	return nil
}

// relayBack sends a backend's answers to client until the socket closes.
func (b *Balancer) relayBack(out *net.UDPConn, client netip.AddrPort) {
	buf := make([]byte, 64<<10)
	for {
		n, err := out.Read(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue // ECONNREFUSED from a backend gone: the flow stays
		}
		if !b.silenced(out) {
			_, _ = b.conn.WriteToUDPAddrPort(buf[:n], client)
		}
	}
}

// Close stops the balancer and waits for its goroutines. It is
// idempotent.
func (b *Balancer) Close() {
	b.mu.Lock()
	b.closed = true
	flows := b.flows
	b.flows = nil
	b.mu.Unlock()
	b.conn.Close()
	for _, out := range flows {
		out.Close()
	}
	b.wg.Wait()
}
