package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/outposthq/outpost/bench/internal/proc"
	"github.com/outposthq/outpost/client/wsstream"
	"github.com/outposthq/outpost/dataplane/relay"
)

// latency measures session setup directly, over raw QUIC, through the
// bench entry, through the WebSocket entry, and inside the gateway child.
func (b *bench) latency(ctx context.Context) error {
	echo := b.tg.echoAddr()
	b.log.Info("session setup latency", "sessions", b.s.sessions, "warmup", b.s.warmup)
	measure := func(i int, once func(context.Context) error) error {
		st, err := measureLatency(ctx, b.s.warmup, b.s.sessions, once)
		if err != nil {
			return fmt.Errorf("session setup, %s: %w", latNames[i], err)
		}
		b.res.latency[i] = st
		return nil
	}
	if err := measure(latDirect, func(ctx context.Context) error { return echoSession(ctx, echo, nil) }); err != nil {
		return err
	}
	if err := measure(latQUIC, b.quicRemote.echoSession); err != nil {
		return err
	}
	prefix := b.header(echo)
	if err := measure(latRaw, func(ctx context.Context) error { return echoSession(ctx, b.gwHello.Entry, prefix) }); err != nil {
		return err
	}
	// A bare TCP + TLS handshake with the gateway's API port, as the
	// entry's client makes it, without the HTTP upgrade that follows.
	var err error
	if b.res.tlsHandshake, err = measureLatency(ctx, b.s.warmup, b.s.sessions, b.tlsHandshake); err != nil {
		return fmt.Errorf("TLS handshake with the gateway: %w", err)
	}
	// The gateway is CPU-profiled while sessions go through its entry.
	prof := filepath.Join(b.tmp, "gateway-setup.pprof")
	if b.o.cpuprofile != "" {
		prof = b.o.cpuprofile + "-setup.pprof"
	}
	if _, err := call(ctx, b.gw, request{Op: opProfileStart, Path: prof}, 10*time.Second); err != nil {
		return err
	}
	b.wsPhases = &wsPhases{}
	if err := measure(latEntry, b.wsEchoSession); err != nil {
		return err
	}
	b.res.wsPhases = b.wsPhases.last(b.s.sessions)
	b.wsPhases = nil
	if _, err := call(ctx, b.gw, request{Op: opProfileStop}, 10*time.Second); err != nil {
		return err
	}
	if cp, err := proc.SummarizeProfile(ctx, prof); err != nil {
		b.log.Warn("gateway CPU profile of session setup", "error", err)
	} else {
		b.res.setupProfile = &profileSummary{CPUProfile: cp, sessions: b.s.warmup + b.s.sessions}
	}
	n := b.s.warmup + b.s.sessions
	resp, err := call(ctx, b.gw, request{Op: opLatency, AgentID: b.agentID, Target: echo, Warmup: b.s.warmup, N: b.s.sessions},
		15*time.Second+time.Duration(n)*10*time.Millisecond)
	if err != nil {
		return err
	}
	if resp.Latency == nil {
		return errors.New("gateway child latency: empty answer")
	}
	b.res.latency[latGateway] = *resp.Latency
	for i, st := range b.res.latency {
		b.log.Info("session setup", "path", latNames[i], "p50", st.P50, "p99", st.P99, "mean", st.Mean, "max", st.Max)
	}
	return nil
}

// wsEchoSession is one session through the WebSocket entry with the
// client library: TCP and TLS handshakes, the upgrade (the gateway checks
// the token, routes, and opens the stream through the agent, which dials
// the target), one echoed byte, and the WebSocket close handshake.
//
// While b.wsPhases is set, it records how long each of the three steps took.
func (b *bench) wsEchoSession(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, sessionTimeout)
	defer cancel()
	t0 := time.Now()
	s, err := b.ws.Open(ctx)
	if err != nil {
		return err
	}
	t1 := time.Now()
	if err := echoOnce(s, []byte{modeEcho}); err != nil {
		s.Abort(relay.ErrorCodeCanceled)
		return err
	}
	t2 := time.Now()
	err = s.Close()
	if b.wsPhases != nil {
		b.wsPhases.add(t1.Sub(t0), t2.Sub(t1), time.Since(t2))
	}
	return err
}

// tlsHandshake connects to the gateway's API port and completes a TLS
// handshake verifying the gateway against its CA, as the entry's client
// does, then closes.
func (b *bench) tlsHandshake(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, sessionTimeout)
	defer cancel()
	c, err := dialTCP(ctx, b.gwHello.API)
	if err != nil {
		return err
	}
	tc := tls.Client(c, b.tlsConf)
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
func (w *wsPhases) last(n int) [3]latencyStats {
	tail := func(xs []time.Duration) []time.Duration { return xs[max(0, len(xs)-n):] }
	return [3]latencyStats{summarize(tail(w.open)), summarize(tail(w.echo)), summarize(tail(w.close))}
}

// idleSessions opens s.idle sessions through the WebSocket entry with the
// client library, each carrying one echoed byte, lets them idle, reads the
// gateway's and the agent's RSS, and closes them.
func (b *bench) idleSessions(ctx context.Context) error {
	b.log.Info("opening idle sessions through the WebSocket entry", "n", b.s.idle)
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute+b.s.idleWait)
	defer cancel()
	streams := make([]*wsstream.Stream, 0, b.s.idle)
	defer func() { closeAll(streams) }()
	for i := range b.s.idle {
		s, err := b.ws.Open(ctx)
		if err != nil {
			return fmt.Errorf("idle session %d: %w", i+1, err)
		}
		streams = append(streams, s)
		if err := echoOnce(s, []byte{modeEcho}); err != nil {
			return fmt.Errorf("idle session %d: %w", i+1, err)
		}
	}
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-time.After(b.s.idleWait):
	}
	var err error
	if b.res.rssIdle, err = b.rss(); err != nil {
		return err
	}
	if err := b.checkChildren(); err != nil {
		return err
	}
	if b.res.gwRuntime[1], err = b.gwRuntime(ctx); err != nil {
		return err
	}
	b.res.gwHeap = b.heapProfile(ctx, b.gw, "gateway-idle-heap")
	b.log.Info("RSS", "gateway_before", b.res.rssBefore[0], "agent_before", b.res.rssBefore[1],
		"gateway_idle", b.res.rssIdle[0], "agent_idle", b.res.rssIdle[1])
	for i, when := range []string{"no session", "idle sessions"} {
		rt := b.res.gwRuntime[i]
		b.log.Info("gateway child Go runtime", "when", when, "goroutines", rt.Goroutines, "heap_inuse", rt.HeapInuse,
			"heap_alloc", rt.HeapAlloc, "stack_inuse", rt.StackInuse, "sys", rt.Sys, "num_gc", rt.NumGC)
	}
	return nil
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

// capacity finds how many concurrent sessions one agent carries: first the
// real agent binary, then — the binary having stopped — the agent library
// in a child process with its QUIC stream limit raised above s.capacity.
func (b *bench) capacity(ctx context.Context) error {
	limit := b.s.capacity + capacityHeadroom
	r, err := b.capacityRun(ctx, fmt.Sprintf("real agent binary, --max-sessions %d", limit), int64(limit))
	if err != nil {
		return err
	}
	b.res.capRuns = append(b.res.capRuns, r)

	// The same agent as a bench child, to read its Go runtime and heap at
	// the peak (the binary exposes no such figures).
	b.log.Info("stopping the agent binary; starting the agent library for the memory breakdown")
	b.agent.Stop(10 * time.Second)
	var ah agentHello
	b.libAgent, err = proc.StartCtl(ctx, "library agent", b.exe, []string{"-mode=agent", "-config-dir", b.agentDir,
		"-max-streams", strconv.Itoa(limit), "-log-level", b.o.childLogLevel}, &ah)
	if err != nil {
		return err
	}
	if ah.AgentID != b.agentID {
		return fmt.Errorf("library agent child runs agent %q, want %q", ah.AgentID, b.agentID)
	}
	if err := b.waitReady(ctx); err != nil {
		return err
	}
	r, err = b.capacityRun(ctx, "agent library in a bench child, same limit (memory breakdown)", int64(limit))
	if err != nil {
		return err
	}
	b.res.capRuns = append(b.res.capRuns, r)
	return b.checkChildren()
}

// capacityRun has the gateway child open s.capacity sessions to the echo
// target through the running agent, reads both processes' memory while
// they are held, and has them closed.
func (b *bench) capacityRun(ctx context.Context, what string, streamLimit int64) (capacityResult, error) {
	b.log.Info("capacity run", "agent", what, "sessions", b.s.capacity, "workers", capacityWorkers, "bound", b.s.capWait)
	r := capacityResult{what: what, streamLimit: streamLimit, agentGoroutines: -1}
	resp, err := call(ctx, b.gw, request{Op: opCapacity, AgentID: b.agentID, Target: b.tg.echoAddr(),
		N: b.s.capacity, Workers: capacityWorkers, Timeout: b.s.capWait}, b.s.capWait+30*time.Second)
	if err != nil {
		return r, err
	}
	defer func() {
		if _, err := call(ctx, b.gw, request{Op: opRelease}, time.Minute); err != nil {
			b.log.Warn("releasing the capacity sessions", "error", err)
		}
	}()
	if resp.Capacity == nil {
		return r, errors.New("gateway child capacity: empty answer")
	}
	r.stats = *resp.Capacity
	if r.rss, err = b.rss(); err != nil {
		return r, err
	}
	gw, err := b.gwRuntime(ctx)
	if err != nil {
		return r, err
	}
	r.gwGoroutines = gw.Goroutines
	r.gwRuntime = gw
	if b.libAgent != nil {
		ag, err := childRuntime(ctx, b.libAgent)
		if err != nil {
			return r, err
		}
		r.agentGoroutines = ag.Goroutines
		r.agentRuntime = &ag
		r.agentHeap = b.heapProfile(ctx, b.libAgent, "agent-capacity-heap")
	}
	b.log.Info("capacity", "agent", what, "opened", r.stats.Opened, "attempted", r.stats.Attempted, "took", r.stats.Took,
		"stop", r.stats.Stop, "gateway_rss", r.rss[0], "agent_rss", r.rss[1], "gateway_goroutines", r.gwGoroutines,
		"agent_goroutines", r.agentGoroutines)
	return r, nil
}

// heapProfile has child c write a heap profile (kept under -cpuprofile's
// prefix if set) and summarizes it. A failure costs the memory breakdown,
// not the run: it is logged and nil returned.
func (b *bench) heapProfile(ctx context.Context, c *proc.CtlChild, name string) *proc.HeapSummary {
	file := filepath.Join(b.tmp, name+".pprof")
	if b.o.cpuprofile != "" {
		file = b.o.cpuprofile + "-" + name + ".pprof"
	}
	if _, err := call(ctx, c, request{Op: opHeapProfile, Path: file}, 30*time.Second); err != nil {
		b.log.Warn("heap profile", "process", c.Name(), "error", err)
		return nil
	}
	hs, err := proc.SummarizeHeap(ctx, file)
	if err != nil {
		b.log.Warn("heap profile", "process", c.Name(), "error", err)
		return nil
	}
	return &hs
}
