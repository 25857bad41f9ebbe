package load

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/outposthq/outpost/bench/internal/proc"
	"github.com/outposthq/outpost/client/wsstream"
	"github.com/outposthq/outpost/dataplane/relay"
)

// SetupResult is what the session setup load measured.
type SetupResult struct {
	// Latency times each way to open a session.
	Latency [NumSetups]Stats
	// TLSHandshake times a bare TCP + TLS handshake with the gateway.
	TLSHandshake Stats
	// WSPhases are the open, echo and close steps of the timed sessions
	// through the WebSocket entry.
	WSPhases [3]Stats
	// Profile is the gateway's CPU profile while those sessions (and their
	// warm-up) ran; nil if it could not be read.
	Profile *Profile
}

// Setup measures session setup directly, over raw QUIC, through the bench
// entry, through the WebSocket entry, and inside the gateway:
// Settings.Warmup sessions, then Settings.Sessions timed, one after the
// other, each carrying one echoed byte. It fails at the first failed
// session; a profile that cannot be read is only logged.
func (r *Rig) Setup(ctx context.Context) (SetupResult, error) {
	var res SetupResult
	s := r.Settings
	echo := r.Targets.EchoAddr()
	r.log().Info("session setup latency", "sessions", s.Sessions, "warmup", s.Warmup)
	measure := func(i Setup, once func(context.Context) error) error {
		st, err := MeasureLatency(ctx, s.Warmup, s.Sessions, once)
		if err != nil {
			return fmt.Errorf("session setup, %s: %w", i, err)
		}
		res.Latency[i] = st
		return nil
	}
	if err := measure(SetupDirect, func(ctx context.Context) error { return echoSession(ctx, echo, nil) }); err != nil {
		return res, err
	}
	if err := measure(SetupQUIC, r.QUICRemote.echoSession); err != nil {
		return res, err
	}
	prefix := r.header(echo)
	if err := measure(SetupRaw, func(ctx context.Context) error { return echoSession(ctx, r.Entry, prefix) }); err != nil {
		return res, err
	}
	// A bare TCP + TLS handshake with the gateway's API port, as the
	// entry's client makes it, without the HTTP upgrade that follows.
	var err error
	if res.TLSHandshake, err = MeasureLatency(ctx, s.Warmup, s.Sessions, r.tlsHandshake); err != nil {
		return res, fmt.Errorf("TLS handshake with the gateway: %w", err)
	}
	// The gateway is CPU-profiled while sessions go through its entry.
	prof := r.profileFile("gateway-setup", "setup")
	if err := r.Gateway.StartCPUProfile(ctx, prof); err != nil {
		return res, err
	}
	phases := &wsPhases{}
	if err := measure(SetupEntry, func(ctx context.Context) error { return r.wsEchoSession(ctx, phases) }); err != nil {
		return res, err
	}
	res.WSPhases = phases.last(s.Sessions)
	if err := measure(SetupStanding, r.standingEchoSession); err != nil {
		return res, err
	}
	// Fewer cold sessions: each pays a full TLS handshake.
	cold := min(s.Sessions, coldSessions)
	if st, err := MeasureLatency(ctx, min(s.Warmup, cold), cold, r.coldEchoSession); err != nil {
		return res, fmt.Errorf("session setup, %s: %w", SetupCold, err)
	} else {
		res.Latency[SetupCold] = st
	}
	if err := r.Gateway.StopCPUProfile(ctx); err != nil {
		return res, err
	}
	if cp, err := proc.SummarizeProfile(ctx, prof); err != nil {
		r.log().Warn("gateway CPU profile of session setup", "error", err)
	} else {
		res.Profile = &Profile{CPUProfile: cp, Sessions: s.Warmup + s.Sessions}
	}
	if res.Latency[SetupGateway], err = r.Gateway.Latency(ctx, GatewaySessions{AgentID: r.AgentID, Target: echo,
		Warmup: s.Warmup, N: s.Sessions}); err != nil {
		return res, err
	}
	for i, st := range res.Latency {
		r.log().Info("session setup", "path", Setup(i).String(), "p50", st.P50, "p99", st.P99, "mean", st.Mean, "max", st.Max)
	}
	return res, nil
}

// wsEchoSession is one session through the WebSocket entry with the
// client library: TCP and TLS handshakes, the upgrade (the gateway checks
// the token, routes, and opens the stream through the agent, which dials
// the target), one echoed byte, and the WebSocket close handshake. It
// records how long each of the three steps took in phases.
func (r *Rig) wsEchoSession(ctx context.Context, phases *wsPhases) error {
	ctx, cancel := context.WithTimeout(ctx, SessionTimeout)
	defer cancel()
	t0 := time.Now()
	s, err := r.WS.OpenWebSocket(ctx)
	if err != nil {
		return err
	}
	t1 := time.Now()
	if err := EchoOnce(s, []byte{modeEcho}); err != nil {
		s.Abort(relay.ErrorCodeCanceled)
		return err
	}
	t2 := time.Now()
	err = s.Close()
	phases.add(t1.Sub(t0), t2.Sub(t1), time.Since(t2))
	return err
}

// standingEchoSession is one session on the client library's standing
// connection (made by an earlier session): a new stream (the gateway checks
// the token's use, routes, and opens the stream through the agent, which
// dials the target), one echoed byte, and the stream's close.
func (r *Rig) standingEchoSession(ctx context.Context) error {
	return clientEcho(ctx, r.WS.Open)
}

// coldSessions bounds the cold-client sessions the setup load times.
const coldSessions = 200

// coldEchoSession is the first session of a new client library, as the
// first local connection of a new `outpost connect` process meets it: the
// TCP and TLS handshakes, the upgrade to a standing connection, one
// stream with one echoed byte, and the client's close.
func (r *Rig) coldEchoSession(ctx context.Context) error {
	c, err := r.NewClient()
	if err != nil {
		return err
	}
	defer c.Close()
	return clientEcho(ctx, c.Open)
}

// tlsHandshake connects to the gateway's API port and completes a TLS
// handshake verifying the gateway against its CA, as the entry's client
// does, then closes.
func (r *Rig) tlsHandshake(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, SessionTimeout)
	defer cancel()
	c, err := dialTCP(ctx, r.API)
	if err != nil {
		return err
	}
	tc := tls.Client(c, r.TLS)
	defer tc.Close()
	return tc.HandshakeContext(ctx)
}

// wsPhases are the steps of WebSocket sessions, in the order they ran.
type wsPhases struct {
	open, echo, close []time.Duration
}

func (w *wsPhases) add(open, echo, close time.Duration) {
	w.open = append(w.open, open)
	w.echo = append(w.echo, echo)
	w.close = append(w.close, close)
}

// last summarizes the last n sessions (those after the warm-up) of each
// step.
func (w *wsPhases) last(n int) [3]Stats {
	tail := func(xs []time.Duration) []time.Duration { return xs[max(0, len(xs)-n):] }
	return [3]Stats{Summarize(tail(w.open)), Summarize(tail(w.echo)), Summarize(tail(w.close))}
}

// IdleResult is what the idle sessions load measured while the sessions
// were open.
type IdleResult struct {
	RSS            [2]int64 // gateway, agent
	GatewayRuntime proc.RuntimeStats
	// GatewayHeap is the gateway's live heap; nil if it could not be read.
	GatewayHeap *proc.HeapSummary
}

// Idle opens Settings.Idle sessions through the WebSocket entry with the
// client library, each carrying one echoed byte, lets them idle for
// Settings.IdleWait, reads the gateway's and the agent's RSS and the
// gateway's Go runtime and heap, and closes them. It fails at the first
// session that fails, or when a process has exited; a heap profile that
// cannot be read is only logged.
func (r *Rig) Idle(ctx context.Context) (IdleResult, error) {
	var res IdleResult
	s := r.Settings
	r.log().Info("opening idle sessions through the WebSocket entry", "n", s.Idle)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute+s.IdleWait)
	defer cancel()
	streams := make([]*wsstream.Stream, 0, s.Idle)
	defer func() { closeAll(streams) }()
	for i := range s.Idle {
		st, err := r.WS.OpenWebSocket(ctx)
		if err != nil {
			return res, fmt.Errorf("idle session %d: %w", i+1, err)
		}
		streams = append(streams, st)
		if err := EchoOnce(st, []byte{modeEcho}); err != nil {
			return res, fmt.Errorf("idle session %d: %w", i+1, err)
		}
	}
	select {
	case <-ctx.Done():
		return res, context.Cause(ctx)
	case <-time.After(s.IdleWait):
	}
	var err error
	if res.RSS, err = r.RSS(); err != nil {
		return res, err
	}
	if err := r.check(); err != nil {
		return res, err
	}
	if res.GatewayRuntime, err = r.Gateway.Runtime(ctx); err != nil {
		return res, err
	}
	res.GatewayHeap = r.heapProfile(ctx, r.Gateway, "gateway-idle-heap")
	return res, nil
}

// ProcessMemory is one process's memory without and with the idle
// sessions of IdleConnect.
type ProcessMemory struct {
	Name               string
	Before, Idle       proc.RuntimeStats // after a GC each
	RSSBefore, RSSIdle int64
}

// PerSession returns the growth of heap in use, of stacks in use and of
// goroutines per session, from Before to Idle, over n sessions.
func (m ProcessMemory) PerSession(n int) (heap, stack, goroutines float64) {
	d := func(a, b uint64) float64 { return (float64(b) - float64(a)) / float64(n) }
	return d(m.Before.HeapInuse, m.Idle.HeapInuse), d(m.Before.StackInuse, m.Idle.StackInuse),
		float64(m.Idle.Goroutines-m.Before.Goroutines) / float64(n)
}

// IdleConnectResult is what IdleConnect measured.
type IdleConnectResult struct {
	Sessions int
	// Procs are Rig.Memory's processes, in order.
	Procs []ProcessMemory
}

// IdleConnect reads the Go runtime (after a GC) and the RSS of every
// process of Rig.Memory, opens Settings.Idle sessions through `outpost
// connect` (one TCP connection each to ConnectAddr, carrying one echoed
// byte), lets them idle for Settings.IdleWait and reads them all again. It
// fails at the first session that fails, or when a process has exited.
func (r *Rig) IdleConnect(ctx context.Context) (IdleConnectResult, error) {
	s := r.Settings
	res := IdleConnectResult{Sessions: s.Idle, Procs: make([]ProcessMemory, len(r.Memory))}
	read := func(ctx context.Context, idle bool) error {
		for i, m := range r.Memory {
			st, err := m.Read(ctx)
			if err != nil {
				return fmt.Errorf("%s runtime: %w", m.Name, err)
			}
			rss, err := proc.RSSBytes(m.PID)
			if err != nil {
				return err
			}
			p := &res.Procs[i]
			p.Name = m.Name
			if idle {
				p.Idle, p.RSSIdle = st, rss
			} else {
				p.Before, p.RSSBefore = st, rss
			}
		}
		return nil
	}
	// The sessions of the phase before may still be ending: the baseline
	// is read once every process's goroutine count holds still.
	settle := time.Now().Add(30 * time.Second)
	for last := []int(nil); ; {
		if err := read(ctx, false); err != nil {
			return res, err
		}
		now := make([]int, len(res.Procs))
		for i, p := range res.Procs {
			now[i] = p.Before.Goroutines
		}
		if slices.Equal(now, last) || time.Now().After(settle) {
			break
		}
		last = now
		select {
		case <-ctx.Done():
			return res, context.Cause(ctx)
		case <-time.After(500 * time.Millisecond):
		}
	}
	r.log().Info("opening idle sessions through outpost connect", "n", s.Idle)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute+s.IdleWait)
	defer cancel()
	conns := make([]*net.TCPConn, 0, s.Idle)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range s.Idle {
		c, err := dialTCP(ctx, r.ConnectAddr)
		if err != nil {
			return res, fmt.Errorf("idle session %d through outpost connect: %w", i+1, err)
		}
		conns = append(conns, c)
		_ = c.SetDeadline(time.Now().Add(SessionTimeout))
		if err := EchoOnce(c, []byte{modeEcho}); err != nil {
			return res, fmt.Errorf("idle session %d through outpost connect: %w", i+1, err)
		}
		_ = c.SetDeadline(time.Time{})
	}
	select {
	case <-ctx.Done():
		return res, context.Cause(ctx)
	case <-time.After(s.IdleWait):
	}
	if err := r.check(); err != nil {
		return res, err
	}
	if err := read(ctx, true); err != nil {
		return res, err
	}
	if h := r.heapProfile(ctx, r.Gateway, "gateway-connect-idle-heap"); h != nil {
		for _, site := range h.Sites[:min(len(h.Sites), 12)] {
			r.log().Info("gateway live heap with idle sessions through outpost connect", "site", site.Name,
				"bytes", site.Bytes, "per_session", site.Bytes/int64(s.Idle))
		}
	}
	for _, p := range res.Procs {
		heap, stack, g := p.PerSession(s.Idle)
		r.log().Info("idle sessions through outpost connect", "process", p.Name, "heap_per_session", int64(heap),
			"stack_per_session", int64(stack), "goroutines_per_session", g, "rss_before", p.RSSBefore, "rss_idle", p.RSSIdle)
	}
	return res, nil
}

// closeAll closes the streams (each a WebSocket close handshake, bounded by
// the library's own timeout) 32 at a time.
func closeAll(streams []*wsstream.Stream) {
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for _, s := range streams {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			s.Close()
		})
	}
	wg.Wait()
}
