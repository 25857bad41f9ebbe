package tunnel

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
)

// udpForwarder is a UDP load balancer on 127.0.0.1, as in front of gateway
// replicas: it sends each new client source address to the next of its
// backends (round robin, skipping those marked down), through a socket of
// its own per client, and relays the answers back.
type udpForwarder struct {
	conn *net.UDPConn

	mu       sync.Mutex
	backends []netip.AddrPort
	down     map[int]bool
	next     int
	flows    map[netip.AddrPort]*net.UDPConn // client → its socket toward a backend
	closed   bool

	wg sync.WaitGroup
}

// startForwarder starts a forwarder to backends until the test ends; a
// backend may be listed more than once (a heavier weight).
func startForwarder(t *testing.T, backends ...*fakeGateway) *udpForwarder {
	t.Helper()
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	f := &udpForwarder{conn: conn, down: map[int]bool{}, flows: map[netip.AddrPort]*net.UDPConn{}}
	for _, b := range backends {
		f.backends = append(f.backends, b.ln.Addr().(*net.UDPAddr).AddrPort())
	}
	f.wg.Go(f.serve)
	t.Cleanup(f.close)
	return f
}

// addr is the endpoint the agent dials.
func (f *udpForwarder) addr() string { return f.conn.LocalAddr().String() }

// setDown takes backend i out of the rotation for new clients, as a
// balancer does when its health check fails.
func (f *udpForwarder) setDown(i int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down[i] = true
}

// setUp puts backend i back into the rotation.
func (f *udpForwarder) setUp(i int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.down, i)
}

// serve relays client datagrams until the forwarder closes.
func (f *udpForwarder) serve() {
	buf := make([]byte, 64<<10)
	for {
		n, from, err := f.conn.ReadFromUDPAddrPort(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		out := f.flow(from)
		if out != nil {
			_, _ = out.Write(buf[:n])
		}
	}
}

// flow returns the socket of client from's flow, opening one to the next
// backend for a new client; nil once closed or if every backend is down.
func (f *udpForwarder) flow(from netip.AddrPort) *net.UDPConn {
	f.mu.Lock()
	defer f.mu.Unlock()
	if out, ok := f.flows[from]; ok || f.closed {
		return out
	}
	for range f.backends {
		i := f.next
		f.next = (f.next + 1) % len(f.backends)
		if f.down[i] {
			continue
		}
		out, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(f.backends[i]))
		if err != nil {
			return nil
		}
		f.flows[from] = out
		f.wg.Go(func() { f.relayBack(out, from) })
		return out
	}
	return nil
}

// relayBack sends a backend's answers to client until the socket closes.
func (f *udpForwarder) relayBack(out *net.UDPConn, client netip.AddrPort) {
	buf := make([]byte, 64<<10)
	for {
		n, err := out.Read(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue // ECONNREFUSED from a backend gone: the flow stays
		}
		_, _ = f.conn.WriteToUDPAddrPort(buf[:n], client)
	}
}

// close stops the forwarder and waits for its goroutines.
func (f *udpForwarder) close() {
	f.mu.Lock()
	f.closed = true
	flows := f.flows
	f.flows = nil
	f.mu.Unlock()
	f.conn.Close()
	for _, out := range flows {
		out.Close()
	}
	f.wg.Wait()
}
