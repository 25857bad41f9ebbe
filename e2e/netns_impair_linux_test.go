package e2e

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// A lossy, slow link between an agent and the gateway: tc netem when the
// kernel has it, otherwise a UDP relay in the gateway's namespace that does
// what netem would on the agent's uplink.

const (
	netemLossPercent = 2
	netemDelay       = 50 * time.Millisecond
	// netemLimit is netem's default queue length, in packets; the relay
	// drops beyond it as netem does.
	netemLimit = 1000
)

// hasNetem reports whether the kernel accepts a netem qdisc (it is a module,
// sch_netem, that minimal kernels leave out), trying one on ns's loopback.
func (l *netLab) hasNetem(ns string) (bool, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", l.ns(ns), "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms").CombinedOutput()
	if err != nil {
		return false, string(out)
	}
	exec.CommandContext(ctx, "ip", "netns", "exec", l.ns(ns), "tc", "qdisc", "del", "dev", "lo", "root").Run()
	return true, ""
}

// udpRelay forwards datagrams from its listening address to upstream, one
// upstream socket per peer. While impaired, datagrams from peers towards
// upstream are dropped with probability netemLossPercent and delayed by
// netemDelay, like "tc qdisc add dev <uplink> root netem loss 2% delay 50ms"
// on the peer's uplink; replies pass unchanged.
type udpRelay struct {
	ns       string // full namespace name
	ln       *net.UDPConn
	upstream *net.UDPAddr
	impaired atomic.Bool
	served   chan struct{}  // closed when serve returns
	wg       sync.WaitGroup // the peers' goroutines

	mu sync.Mutex
	// guarded by mu
	peers  map[string]*relayPeer
	closed bool

	dropped, forwarded atomic.Int64
}

type relayPeer struct {
	conn  *net.UDPConn // towards upstream
	queue chan relayDatagram
}

type relayDatagram struct {
	due time.Time
	b   []byte
}

// startRelay listens on listen inside namespace short and relays to
// upstream; it is closed when the test ends.
func (l *netLab) startRelay(t testing.TB, short, listen, upstream string) *udpRelay {
	t.Helper()
	la, err := net.ResolveUDPAddr("udp4", listen)
	if err != nil {
		t.Fatal(err)
	}
	ua, err := net.ResolveUDPAddr("udp4", upstream)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := inNetns(l.ns(short), func() (*net.UDPConn, error) { return net.ListenUDP("udp4", la) })
	if err != nil {
		t.Fatalf("relay: %v", err)
	}
	r := &udpRelay{ns: l.ns(short), ln: ln, upstream: ua, peers: map[string]*relayPeer{}, served: make(chan struct{})}
	go func() {
		defer close(r.served)
		r.serve()
	}()
	l.t.Cleanup(r.close)
	return r
}

func (r *udpRelay) serve() {
	buf := make([]byte, 64<<10)
	for {
		n, from, err := r.ln.ReadFromUDP(buf)
		if err != nil {
			return
		}
		p := r.peer(from)
		if p == nil {
			continue
		}
		d := relayDatagram{due: time.Now(), b: append([]byte(nil), buf[:n]...)}
		if r.impaired.Load() {
			if rand.IntN(100) < netemLossPercent {
				r.dropped.Add(1)
				continue
			}
			d.due = d.due.Add(netemDelay)
		}
		select {
		case p.queue <- d:
		default:
			r.dropped.Add(1) // queue full, as netem's limit
		}
	}
}

// peer returns (creating it on first use) the relay state for from.
func (r *udpRelay) peer(from *net.UDPAddr) *relayPeer {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	if p, ok := r.peers[from.String()]; ok {
		return p
	}
	conn, err := inNetns(r.ns, func() (*net.UDPConn, error) { return net.DialUDP("udp4", nil, r.upstream) })
	if err != nil {
		return nil
	}
	p := &relayPeer{conn: conn, queue: make(chan relayDatagram, netemLimit)}
	r.peers[from.String()] = p
	r.wg.Go(func() { // peer → upstream, in order, each datagram at its time
		for d := range p.queue {
			if wait := time.Until(d.due); wait > 0 {
				time.Sleep(wait)
			}
			p.conn.Write(d.b)
			r.forwarded.Add(1)
		}
	})
	r.wg.Go(func() { // upstream → peer
		buf := make([]byte, 64<<10)
		for {
			n, err := p.conn.Read(buf)
			if errors.Is(err, syscall.ECONNREFUSED) {
				continue // the ICMP error of a datagram sent while the gateway was down
			}
			if err != nil {
				return
			}
			r.ln.WriteToUDP(buf[:n], from)
		}
	})
	return p
}

func (r *udpRelay) close() {
	r.ln.Close()
	<-r.served // peer is called only from serve: no new peers after this
	r.mu.Lock()
	r.closed = true
	for _, p := range r.peers {
		close(p.queue)
		p.conn.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}
