package main

import (
	"context"
	"fmt"
	"time"

	"github.com/outposthq/outpost/bench/internal/proc"
)

// The requests the benchmark sends its controlled children (proc.CtlChild)
// and their answers, one JSON object a line. The gateway child serves all
// of them; the agent child only opRuntime and opHeapProfile.
const (
	// opLatency times N sessions (after Warmup) opened with DialAgent, each
	// sending one byte to an echo Target and reading it back.
	opLatency = "latency"
	// opProfileStart starts a CPU profile written to Path.
	opProfileStart = "profile-start"
	// opProfileStop stops the CPU profile.
	opProfileStop = "profile-stop"
	// opRuntime reports the Go runtime's view of the process's memory.
	opRuntime = "runtime"
	// opHeapProfile makes a child write a heap profile to Path, after a GC
	// so that it shows live memory only.
	opHeapProfile = "heap-profile"
	// opSessionToken mints a reusable session token for Target through
	// AgentID, valid for TTL, with the gateway's own gRPC API
	// (RouteResolveService.CreateSession), as an operator's tooling would.
	opSessionToken = "session-token"
	// opCapacity opens up to N sessions with DialAgent (Workers at a time,
	// within Timeout, stopping at the first failure), each echoing one byte
	// off Target, and holds them open until opRelease.
	opCapacity = "capacity"
	// opRelease closes the sessions opCapacity holds.
	opRelease = "release"
)

type request struct {
	Op      string        `json:"op"`
	AgentID string        `json:"agent_id,omitempty"`
	Target  string        `json:"target,omitempty"`
	Warmup  int           `json:"warmup,omitempty"`
	N       int           `json:"n,omitempty"`
	Workers int           `json:"workers,omitempty"`
	Timeout time.Duration `json:"timeout_ns,omitempty"`
	TTL     time.Duration `json:"ttl_ns,omitempty"`
	Path    string        `json:"path,omitempty"`
}

type response struct {
	Error    string             `json:"error,omitempty"`
	Latency  *latencyStats      `json:"latency,omitempty"`
	Runtime  *proc.RuntimeStats `json:"runtime,omitempty"`
	Token    string             `json:"token,omitempty"`
	Capacity *capacityStats     `json:"capacity,omitempty"`
}

// call sends r to child c and waits at most timeout for its answer.
func call(ctx context.Context, c *proc.CtlChild, r request, timeout time.Duration) (response, error) {
	var resp response
	if err := c.Call(ctx, r, &resp, timeout); err != nil {
		return response{}, fmt.Errorf("%s child %s: %w", c.Name(), r.Op, err)
	}
	return resp, nil
}

// answerCommon answers the requests every controlled child serves; ok is
// false for the others.
func answerCommon(r request) (_ response, ok bool) {
	switch r.Op {
	case opRuntime:
		st := proc.ReadRuntime()
		return response{Runtime: &st}, true
	case opHeapProfile:
		if err := proc.WriteHeapProfile(r.Path); err != nil {
			return response{Error: err.Error()}, true
		}
		return response{}, true
	}
	return response{}, false
}

// unknownOp answers a request the child does not serve.
func unknownOp(r request) response {
	return response{Error: fmt.Sprintf("unknown op %q", r.Op)}
}
