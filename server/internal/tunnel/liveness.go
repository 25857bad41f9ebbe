package tunnel

import (
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/quic-go/quic-go"

	"github.com/outposthq/outpost/server/internal/registry"
)

// Transport liveness: an agent whose connection stops delivering packets
// (killed, frozen, cut off) is marked silent in the registry within seconds,
// long before its missing control messages would make it unresponsive
// (registry.UnresponsiveAfter) or the QUIC idle timeout would close it. A
// healthy agent is never quiet that long: the gateway sends a keep-alive PING
// whenever it has received nothing for the keep-alive period, and any live
// QUIC stack acknowledges it within a round trip, whatever its own
// keep-alive.

// DefaultSilenceTimeout is Config.SilenceTimeout's default (when it is at
// least twice the keep-alive period).
const DefaultSilenceTimeout = 3 * time.Second

// quicMaxAckDelay is the max_ack_delay QUIC peers use unless they announce
// another (RFC 9000 §18.2): a PING may wait this long for its ACK.
const quicMaxAckDelay = 25 * time.Millisecond

// liveness watches the packet counter of every registered agent connection
// from one goroutine, which runs while at least one connection is watched and
// is tracked by the server's WaitGroup. It is safe for concurrent use.
type liveness struct {
	reg *registry.Registry
	// timeout is the configured silence timeout; keepAlive the gateway's
	// effective keep-alive period. A connection's own threshold also grows
	// with its round-trip time (threshold).
	timeout, keepAlive time.Duration
	interval           time.Duration // between two sweeps
	wg                 *sync.WaitGroup

	mu      sync.Mutex
	watched map[*registry.Entry]*watch // guarded by mu
	stop    chan struct{}              // closed to end the sweeper; nil when none runs
}

// watch is what the sweeper knows of one connection. Guarded by liveness.mu.
type watch struct {
	conn    *quic.Conn
	log     hclog.Logger
	packets uint64    // PacketsReceived at the last change
	heardAt time.Time // when packets last changed (monotonic)
	silent  bool
}

// newLiveness returns a monitor marking agents silent after timeout without
// a packet; keepAlive is the connections' keep-alive period. Its sweeper is
// counted in wg, which must be counting a caller of watch already.
func newLiveness(reg *registry.Registry, timeout, keepAlive time.Duration, wg *sync.WaitGroup) *liveness {
	return &liveness{
		reg: reg, timeout: timeout, keepAlive: keepAlive, wg: wg,
		interval: min(max(timeout/10, 10*time.Millisecond), 250*time.Millisecond),
		watched:  make(map[*registry.Entry]*watch),
	}
}

// watch starts watching e's connection conn. The caller must be counted in
// the WaitGroup and must call forget(e) before it is done.
func (l *liveness) watch(e *registry.Entry, conn *quic.Conn, log hclog.Logger) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.watched[e] = &watch{conn: conn, log: log, packets: conn.ConnectionStats().PacketsReceived, heardAt: time.Now()}
	if l.stop == nil {
		l.stop = make(chan struct{})
		l.wg.Add(1)
		go l.run(l.stop)
	}
}

// forget stops watching e; the sweeper ends with the last connection.
func (l *liveness) forget(e *registry.Entry) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.watched, e)
	if len(l.watched) == 0 && l.stop != nil {
		close(l.stop)
		l.stop = nil
	}
}

func (l *liveness) run(stop <-chan struct{}) {
	defer l.wg.Done()
	t := time.NewTicker(l.interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			for _, c := range l.sweep(now) {
				c.log()
			}
		}
	}
}

// change is a liveness change of one agent, logged after the sweep.
type change struct {
	w      *watch
	silent bool
	quiet  time.Duration // how long nothing had arrived
}

func (c change) log() {
	if c.silent {
		c.w.log.Info("no packet from the agent: marked unresponsive, new sessions skip it",
			"silent_for", c.quiet.Round(time.Millisecond))
		return
	}
	c.w.log.Info("agent heard from again: online", "silent_for", c.quiet.Round(time.Millisecond))
}

// sweep compares every watched connection's packet counter with the last
// sweep's and returns the agents whose liveness changed (the registry knows
// already).
func (l *liveness) sweep(now time.Time) []change {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []change
	for e, w := range l.watched {
		st := w.conn.ConnectionStats()
		if st.PacketsReceived != w.packets {
			if w.silent {
				w.silent = false
				l.reg.SetSilent(e, false)
				out = append(out, change{w: w, quiet: now.Sub(w.heardAt)})
			}
			w.packets, w.heardAt = st.PacketsReceived, now
			continue
		}
		if quiet := now.Sub(w.heardAt); !w.silent && quiet >= l.threshold(st) {
			w.silent = true
			l.reg.SetSilent(e, true)
			out = append(out, change{w: w, silent: true, quiet: quiet})
		}
	}
	return out
}

// threshold is how long a connection with stats st may stay quiet: the
// silence timeout, or longer on a slow path, where QUIC stretches the
// keep-alive to 1.5 probe timeouts and a lost PING takes another probe
// timeout or two to repeat.
func (l *liveness) threshold(st quic.ConnectionStats) time.Duration {
	pto := st.SmoothedRTT + max(4*st.MeanDeviation, time.Millisecond) + quicMaxAckDelay
	return max(l.timeout, max(l.keepAlive, pto*3/2)+3*pto)
}
