package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/outposthq/outpost/bench/internal/load"
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
	// opRuntime reports the Go runtime's view of the process's memory;
	// with GC set, after garbage collections (proc.ReadRuntime).
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
	// opEnrollToken mints an enrollment token for an agent called Name,
	// pre-approving 127.0.0.0/8.
	opEnrollToken = "enroll-token"
	// opAgentStatus reports the status of AgentID as the gateway's own gRPC
	// API shows it (AgentAdminService.GetAgent).
	opAgentStatus = "agent-status"
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
	Name    string        `json:"name,omitempty"`
	GC      bool          `json:"gc,omitempty"`
}

type response struct {
	Error    string             `json:"error,omitempty"`
	Latency  *load.Stats        `json:"latency,omitempty"`
	Runtime  *proc.RuntimeStats `json:"runtime,omitempty"`
	Token    string             `json:"token,omitempty"`
	Capacity *load.HoldStats    `json:"capacity,omitempty"`
	Status   string             `json:"status,omitempty"`
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
		st := proc.ReadRuntime(r.GC)
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

// ctlProcess is a controlled child as the loads see it (load.Process).
type ctlProcess struct{ *proc.CtlChild }

var _ load.Process = ctlProcess{}

// Runtime asks the child for its Go runtime figures.
func (c ctlProcess) Runtime(ctx context.Context) (proc.RuntimeStats, error) {
	resp, err := call(ctx, c.CtlChild, request{Op: opRuntime}, 10*time.Second)
	if err != nil {
		return proc.RuntimeStats{}, err
	}
	if resp.Runtime == nil {
		return proc.RuntimeStats{}, errors.New(c.Name() + " child runtime: empty answer")
	}
	return *resp.Runtime, nil
}

// RuntimeAfterGC asks the child for its Go runtime figures after garbage
// collections: its live heap.
func (c ctlProcess) RuntimeAfterGC(ctx context.Context) (proc.RuntimeStats, error) {
	resp, err := call(ctx, c.CtlChild, request{Op: opRuntime, GC: true}, 30*time.Second)
	if err != nil {
		return proc.RuntimeStats{}, err
	}
	if resp.Runtime == nil {
		return proc.RuntimeStats{}, errors.New(c.Name() + " child runtime: empty answer")
	}
	return *resp.Runtime, nil
}

// HeapProfile has the child write its heap profile to path.
func (c ctlProcess) HeapProfile(ctx context.Context, path string) error {
	_, err := call(ctx, c.CtlChild, request{Op: opHeapProfile, Path: path}, 30*time.Second)
	return err
}

// gatewayChild is the gateway child as the loads drive it (load.Gateway).
type gatewayChild struct{ ctlProcess }

var _ load.Gateway = gatewayChild{}

// StartCPUProfile starts the gateway's CPU profile into path.
func (g gatewayChild) StartCPUProfile(ctx context.Context, path string) error {
	_, err := call(ctx, g.CtlChild, request{Op: opProfileStart, Path: path}, 10*time.Second)
	return err
}

// StopCPUProfile stops it.
func (g gatewayChild) StopCPUProfile(ctx context.Context) error {
	_, err := call(ctx, g.CtlChild, request{Op: opProfileStop}, 10*time.Second)
	return err
}

// Latency times sessions opened inside the gateway (opLatency).
func (g gatewayChild) Latency(ctx context.Context, s load.GatewaySessions) (load.Stats, error) {
	n := s.Warmup + s.N
	resp, err := call(ctx, g.CtlChild, request{Op: opLatency, AgentID: s.AgentID, Target: s.Target, Warmup: s.Warmup, N: s.N},
		15*time.Second+time.Duration(n)*10*time.Millisecond)
	if err != nil {
		return load.Stats{}, err
	}
	if resp.Latency == nil {
		return load.Stats{}, errors.New("gateway child latency: empty answer")
	}
	return *resp.Latency, nil
}

// Hold has the gateway open and hold sessions (opCapacity).
func (g gatewayChild) Hold(ctx context.Context, s load.GatewaySessions) (load.HoldStats, error) {
	resp, err := call(ctx, g.CtlChild, request{Op: opCapacity, AgentID: s.AgentID, Target: s.Target,
		N: s.N, Workers: s.Workers, Timeout: s.Timeout}, s.Timeout+30*time.Second)
	if err != nil {
		return load.HoldStats{}, err
	}
	if resp.Capacity == nil {
		return load.HoldStats{}, errors.New("gateway child capacity: empty answer")
	}
	return *resp.Capacity, nil
}

// Release closes the sessions Hold holds (opRelease).
func (g gatewayChild) Release(ctx context.Context) error {
	_, err := call(ctx, g.CtlChild, request{Op: opRelease}, time.Minute)
	return err
}

// sessionToken mints a reusable session token for target through agentID,
// valid for ttl (opSessionToken).
func (g gatewayChild) sessionToken(ctx context.Context, agentID, target string, ttl time.Duration) (string, error) {
	resp, err := call(ctx, g.CtlChild, request{Op: opSessionToken, AgentID: agentID, Target: target, TTL: ttl}, time.Minute)
	if err != nil {
		return "", err
	}
	return resp.Token, nil
}

// enrollToken mints an enrollment token for an agent called name
// (opEnrollToken).
func (g gatewayChild) enrollToken(ctx context.Context, name string) (string, error) {
	resp, err := call(ctx, g.CtlChild, request{Op: opEnrollToken, Name: name}, time.Minute)
	if err != nil {
		return "", err
	}
	return resp.Token, nil
}

// agentStatus is the status of agentID in the gateway's API, by its enum
// name (opAgentStatus).
func (g gatewayChild) agentStatus(ctx context.Context, agentID string) (string, error) {
	resp, err := call(ctx, g.CtlChild, request{Op: opAgentStatus, AgentID: agentID}, time.Minute)
	if err != nil {
		return "", err
	}
	return resp.Status, nil
}
