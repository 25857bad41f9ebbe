package load

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/outposthq/outpost/client"
	"github.com/outposthq/outpost/dataplane/relay"
)

// The failover figures: how long sessions take to open while the agent
// routing prefers has just been killed, and what keeping idle agents'
// liveness known costs.

// Pacing of the sessions after a kill.
const (
	FailoverEvery  = 100 * time.Millisecond
	FailoverWindow = 15 * time.Second
)

// FailoverSetup is what the sessions opened after the kill found.
type FailoverSetup struct {
	// Latency times the sessions that worked, each from its start to the
	// close of the session after its echo.
	Latency Stats
	// Failed counts the sessions that failed; FirstError is the first
	// failure's text.
	Failed     int
	FirstError string
}

// SessionsAfterKill calls kill, then opens a session through the WebSocket
// entry with c every FailoverEvery for FailoverWindow, each in a goroutine
// of its own bounded by SessionTimeout and carrying one echoed byte off the
// mux, and times them. It returns once every session has ended; only
// kill's failure is an error.
func SessionsAfterKill(ctx context.Context, c *client.Client, kill func() error) (FailoverSetup, error) {
	if err := kill(); err != nil {
		return FailoverSetup{}, err
	}
	var (
		mu sync.Mutex
		// Guarded by mu:
		took []time.Duration
		res  FailoverSetup
	)
	var wg sync.WaitGroup
	tick := time.NewTicker(FailoverEvery)
	defer tick.Stop()
	end := time.NewTimer(FailoverWindow)
	defer end.Stop()
	for running := true; running; {
		wg.Go(func() {
			start := time.Now()
			err := wsEcho(ctx, c)
			d := time.Since(start)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				if res.Failed == 0 {
					res.FirstError = err.Error()
				}
				res.Failed++
				return
			}
			took = append(took, d)
		})
		select {
		case <-tick.C:
		case <-end.C:
			running = false
		case <-ctx.Done():
			running = false
		}
	}
	wg.Wait()
	res.Latency = Summarize(took)
	return res, ctx.Err()
}

// wsEcho is one session through the WebSocket entry: open, one echoed
// byte, close.
func wsEcho(ctx context.Context, c *client.Client) error {
	return clientEcho(ctx, func(ctx context.Context) (client.Stream, error) { return c.OpenWebSocket(ctx) })
}

// clientEcho is one session the client library opens with open: one
// echoed byte, then the session's close.
func clientEcho(ctx context.Context, open func(context.Context) (client.Stream, error)) error {
	ctx, cancel := context.WithTimeout(ctx, SessionTimeout)
	defer cancel()
	s, err := open(ctx)
	if err != nil {
		return err
	}
	if err := EchoOnce(s, []byte{modeEcho}); err != nil {
		s.Abort(relay.ErrorCodeCanceled)
		return err
	}
	return s.Close()
}

// IdleCost is what idle agents cost while nothing but liveness traffic
// flows: the gateway's keep-alives and the agents' idle heartbeats.
type IdleCost struct {
	Agents int           // idle agents measured
	Window time.Duration // how long they were measured
	// PacketsIn and PacketsOut are the datagrams the gateway received from
	// the agents and sent them; BytesIn and BytesOut their UDP payloads.
	PacketsIn, PacketsOut, BytesIn, BytesOut int64
	// GatewayTicks is the gateway's CPU over the window with the agents,
	// BaseTicks over a window as long before they started; AgentTicks
	// the agents' CPU over the window, all together. In clock ticks.
	GatewayTicks, BaseTicks, AgentTicks int64
}

// Per1000 scales a count over the window to a rate per second for 1,000
// agents.
func (c IdleCost) Per1000(n int64) float64 {
	if c.Agents == 0 || c.Window <= 0 {
		return 0
	}
	return float64(n) / c.Window.Seconds() / float64(c.Agents) * 1000
}

// UDPCounter is a UDP relay on 127.0.0.1 in front of one upstream address
// that counts what goes through it, one upstream socket per peer. Close
// stops it and waits for its goroutines.
type UDPCounter struct {
	ln       *net.UDPConn
	upstream *net.UDPAddr
	wg       sync.WaitGroup

	mu    sync.Mutex
	peers map[string]*net.UDPConn // guarded by mu
	shut  bool                    // guarded by mu

	pktUp, pktDown, bytesUp, bytesDown atomic.Int64
}

// StartUDPCounter relays datagrams from a new port on 127.0.0.1 to
// upstream and back.
func StartUDPCounter(upstream string) (*UDPCounter, error) {
	ua, err := net.ResolveUDPAddr("udp", upstream)
	if err != nil {
		return nil, fmt.Errorf("udp counter: %w", err)
	}
	ln, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, fmt.Errorf("udp counter: %w", err)
	}
	u := &UDPCounter{ln: ln, upstream: ua, peers: map[string]*net.UDPConn{}}
	u.wg.Go(u.serve)
	return u, nil
}

// Addr is the address agents dial instead of upstream.
func (u *UDPCounter) Addr() string { return u.ln.LocalAddr().String() }

// Counts returns the datagrams and payload bytes relayed so far: up is
// towards upstream.
func (u *UDPCounter) Counts() (pktUp, pktDown, bytesUp, bytesDown int64) {
	return u.pktUp.Load(), u.pktDown.Load(), u.bytesUp.Load(), u.bytesDown.Load()
}

func (u *UDPCounter) serve() {
	buf := make([]byte, 64<<10)
	for {
		n, from, err := u.ln.ReadFromUDP(buf)
		if err != nil {
			return
		}
		up := u.peer(from)
		if up == nil {
			continue
		}
		u.pktUp.Add(1)
		u.bytesUp.Add(int64(n))
		_, _ = up.Write(buf[:n])
	}
}

// peer returns the upstream socket of from, opening it on first use.
func (u *UDPCounter) peer(from *net.UDPAddr) *net.UDPConn {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.shut {
		return nil
	}
	if c, ok := u.peers[from.String()]; ok {
		return c
	}
	c, err := net.DialUDP("udp", nil, u.upstream)
	if err != nil {
		return nil
	}
	u.peers[from.String()] = c
	u.wg.Go(func() {
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue // an ICMP error while upstream is away
			}
			u.pktDown.Add(1)
			u.bytesDown.Add(int64(n))
			_, _ = u.ln.WriteToUDP(buf[:n], from)
		}
	})
	return c
}

// Close stops the relay and waits for its goroutines.
func (u *UDPCounter) Close() {
	u.ln.Close()
	u.mu.Lock()
	u.shut = true
	for _, c := range u.peers {
		c.Close()
	}
	u.mu.Unlock()
	u.wg.Wait()
}
