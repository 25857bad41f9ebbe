package load

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/outposthq/outpost/bench/internal/proc"
)

// HoldStats is what one Hold found. It travels as JSON from the gateway
// child to the parent (durations in nanoseconds).
type HoldStats struct {
	// Attempted and Opened count the sessions started and those that
	// carried their byte and are held.
	Attempted int `json:"attempted"`
	Opened    int `json:"opened"`
	// Took is how long opening them took.
	Took time.Duration `json:"took_ns"`
	// Stop is why the run stopped before N, if it did.
	Stop string `json:"stop,omitempty"`
}

// Hold opens up to n sessions with open, workers at a time, and returns
// those that opened (for the caller to hold and close) with what it found.
// It stops at the first session that fails (the others in flight see their
// context cancelled) or when timeout has passed.
func Hold[S any](ctx context.Context, n, workers int, timeout time.Duration, open func(context.Context) (S, error)) ([]S, HoldStats) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var (
		mu sync.Mutex
		// Guarded by mu:
		started int
		stop    error
		held    = make([]S, 0, n)
	)
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				mu.Lock()
				if stop != nil || started >= n || ctx.Err() != nil {
					mu.Unlock()
					return
				}
				started++
				i := started
				mu.Unlock()
				s, err := open(ctx)
				mu.Lock()
				if err == nil {
					held = append(held, s)
				} else if stop == nil {
					stop = fmt.Errorf("session %d: %w", i, err)
					cancel()
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	st := HoldStats{Attempted: started, Opened: len(held), Took: time.Since(start)}
	switch {
	case stop != nil:
		st.Stop = stop.Error()
	case len(held) < n:
		st.Stop = fmt.Sprintf("time limit (%v) reached", timeout)
	}
	return held, st
}

// CapacityResult is one capacity run and the memory at its peak.
type CapacityResult struct {
	What            string // which agent ran, and how
	StreamLimit     int64  // the agent's QUIC limit on streams the gateway opens
	Stats           HoldStats
	RSS             [2]int64 // gateway, agent, with the sessions held
	GwGoroutines    int
	AgentGoroutines int // -1: not known (the agent binary)
	GwRuntime       proc.RuntimeStats
	AgentRuntime    *proc.RuntimeStats // nil: not known (the agent binary)
	AgentHeap       *proc.HeapSummary  // the library agent's live heap; nil if not known
}

// Capacity has the gateway open Settings.Capacity sessions to the echo
// target through the agent now running (what names it; streamLimit is its
// QUIC stream limit), reads both processes' memory while they are held —
// the agent's Go runtime and heap too if Agent is set — and has them
// closed. A session that fails ends the opening, not the run; a failed
// reading, or a failure to hold at all, is an error.
func (r *Rig) Capacity(ctx context.Context, what string, streamLimit int64) (CapacityResult, error) {
	s := r.Settings
	r.log().Info("capacity run", "agent", what, "sessions", s.Capacity, "workers", capacityWorkers, "bound", s.CapWait)
	res := CapacityResult{What: what, StreamLimit: streamLimit, AgentGoroutines: -1}
	st, err := r.Gateway.Hold(ctx, GatewaySessions{AgentID: r.AgentID, Target: r.Targets.EchoAddr(),
		N: s.Capacity, Workers: capacityWorkers, Timeout: s.CapWait})
	if err != nil {
		return res, err
	}
	defer func() {
		if err := r.Gateway.Release(ctx); err != nil {
			r.log().Warn("releasing the capacity sessions", "error", err)
		}
	}()
	res.Stats = st
	if res.RSS, err = r.RSS(); err != nil {
		return res, err
	}
	gw, err := r.Gateway.Runtime(ctx)
	if err != nil {
		return res, err
	}
	res.GwGoroutines = gw.Goroutines
	res.GwRuntime = gw
	if r.Agent != nil {
		ag, err := r.Agent.Runtime(ctx)
		if err != nil {
			return res, err
		}
		res.AgentGoroutines = ag.Goroutines
		res.AgentRuntime = &ag
		res.AgentHeap = r.heapProfile(ctx, r.Agent, "agent-capacity-heap")
	}
	r.log().Info("capacity", "agent", what, "opened", res.Stats.Opened, "attempted", res.Stats.Attempted, "took", res.Stats.Took,
		"stop", res.Stats.Stop, "gateway_rss", res.RSS[0], "agent_rss", res.RSS[1], "gateway_goroutines", res.GwGoroutines,
		"agent_goroutines", res.AgentGoroutines)
	return res, nil
}
