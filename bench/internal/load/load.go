// Package load holds the benchmark's loads and what they run against: the
// TCP targets (sink, source, echo and a mux of the three), the raw QUIC
// baseline's server and client, the byte exchanges over them, and the loads
// proper, run by a Rig that the caller has set up — throughput over every
// path with the CPU each process spends, session setup latency, idle
// sessions' memory, the capacity of one agent — plus the gateway's route
// lookup benchmarks and the statistics of it all.
//
// Everything it dials or listens on is on 127.0.0.1, and every load is
// bounded in size (Settings) and in time. The gateway and the agent are
// driven through the small interfaces Gateway and Process, which the caller
// implements over its child processes.
package load

import (
	"context"
	"crypto/tls"
	"path/filepath"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/outposthq/outpost/bench/internal/proc"
	"github.com/outposthq/outpost/client"
)

// Settings size one run. SettingsFor gives the two sizes the benchmark has;
// the zero value sizes nothing.
type Settings struct {
	Quick      bool          // the -quick sizes
	Bytes      int64         // per measured transfer (split across the parallel sessions)
	WarmBytes  int64         // per warm-up transfer
	Reps       int           // measured transfers per path and direction
	Parallel   int           // sessions of the parallel throughput row
	Sessions   int           // sequential sessions per setup figure
	Warmup     int           // sessions before those that are timed
	Idle       int           // sessions held open for the RSS figure
	IdleWait   time.Duration // how long they idle before RSS is read
	Capacity   int           // sessions the capacity run tries to open on one agent
	CapWait    time.Duration // bound of one capacity run's opening
	IdleAgents int           // idle agents whose liveness traffic is measured
	IdleWindow time.Duration // how long it is measured (and the gateway's baseline before)
	Benchtime  string        // go test -benchtime of the route lookup and store benchmarks
	// ClusterBytes is one transfer of the cluster part (local vs peer
	// hop), ClusterAgents the HA agents of its kill -9.
	ClusterBytes  int64
	ClusterAgents int
	Timeout       time.Duration // bound of the whole run
}

// TargetCapacity is the sessions one agent must carry: the capacity run's
// size in full mode, and its target.
const TargetCapacity = 10_000

// capacityWorkers open the capacity sessions concurrently.
const capacityWorkers = 8

// SettingsFor returns the full sizes, or the -quick ones.
func SettingsFor(quick bool) Settings {
	s := Settings{
		Quick:      quick,
		Bytes:      512 << 20,
		WarmBytes:  32 << 20,
		Reps:       3,
		Parallel:   8,
		Sessions:   1000,
		Warmup:     100,
		Idle:       1000,
		IdleWait:   2 * time.Second,
		Capacity:   TargetCapacity,
		CapWait:    90 * time.Second,
		IdleAgents: 16,
		IdleWindow: 20 * time.Second,
		Benchtime:  "1s",
		// 128 MiB × 3 runs × 2 directions × 2 entries: about 10 s.
		ClusterBytes:  128 << 20,
		ClusterAgents: 20,
		Timeout:       9 * time.Minute,
	}
	if quick {
		s.Bytes, s.WarmBytes, s.Reps = 64<<20, 16<<20, 1
		s.Sessions, s.Warmup = 300, 50
		s.Capacity, s.CapWait = 2000, 30*time.Second
		s.IdleAgents, s.IdleWindow = 8, 10*time.Second
		s.Benchtime, s.Timeout = "200ms", 170*time.Second
		s.ClusterBytes, s.ClusterAgents = 64<<20, 10
	}
	return s
}

// SessionTimeout bounds one timed session (setup, echo, close).
const SessionTimeout = 5 * time.Second

// Process is a child process of the benchmark that reports on itself.
// Implementations are used from one goroutine at a time.
type Process interface {
	// Name is what logs call it.
	Name() string
	// PID is its process id, for /proc.
	PID() int
	// Runtime returns its Go runtime's memory figures.
	Runtime(ctx context.Context) (proc.RuntimeStats, error)
	// HeapProfile has it write its live heap profile (after a GC) to path.
	HeapProfile(ctx context.Context, path string) error
}

// Gateway is the gateway under load, a process of its own.
type Gateway interface {
	Process
	// StartCPUProfile starts CPU-profiling the gateway into path;
	// StopCPUProfile ends it.
	StartCPUProfile(ctx context.Context, path string) error
	StopCPUProfile(ctx context.Context) error
	// Latency times sessions the gateway opens itself: s.Warmup, then s.N
	// timed, one after the other, each carrying one echoed byte.
	Latency(ctx context.Context, s GatewaySessions) (Stats, error)
	// Hold has the gateway open up to s.N sessions itself, s.Workers at a
	// time within s.Timeout, each carrying one echoed byte, and hold them
	// until Release (see Hold).
	Hold(ctx context.Context, s GatewaySessions) (HoldStats, error)
	// Release closes the sessions Hold holds.
	Release(ctx context.Context) error
}

// GatewaySessions are sessions the gateway opens itself, with the
// gateway library's DialAgent, to an echo target through an agent.
type GatewaySessions struct {
	AgentID string
	Target  string        // host:port of an echo target
	Warmup  int           // Latency: untimed sessions first
	N       int           // sessions timed (Latency) or held (Hold)
	Workers int           // Hold: sessions opened at once
	Timeout time.Duration // Hold: bound of the opening
}

// Rig is the system the loads run against, which the caller sets up, keeps
// current (the agent may change between loads) and tears down. Its methods
// are the loads; they are not safe for concurrent use. Log, KeepPrefix,
// Check and Agent are optional; each other field is required by some load.
type Rig struct {
	Settings Settings
	// Log receives the loads' progress. If nil, nothing is logged.
	Log hclog.Logger
	// Dir holds the profiles the loads take; the caller removes it.
	Dir string
	// KeepPrefix, if set, keeps the gateway's CPU profiles and the heap
	// profiles as KeepPrefix-NAME.pprof instead of in Dir.
	KeepPrefix string
	// Check fails when a process of the rig has exited. If nil, it is
	// never asked.
	Check func() error

	// Targets are the sink, source, echo and mux.
	Targets *Targets
	// Gateway is the gateway child.
	Gateway Gateway
	// AgentID is the agent every Outpost session goes through.
	AgentID string
	// AgentPID is the process of the agent now running.
	AgentPID int
	// Agent is that agent when it reports on itself (the agent library
	// child), nil when it does not (the agent binary).
	Agent Process

	// Entry is the gateway child's benchmark TCP entry: raw sessions.
	Entry string
	// API is the gateway's API address, and TLS verifies it: the setup
	// load times bare TLS handshakes with it.
	API string
	TLS *tls.Config
	// ConnectAddr and ConnectPID are `outpost connect --listen`, whose
	// session token's target is Targets' mux.
	ConnectAddr string
	ConnectPID  int
	// WS is the client library of the gateway's entry, in this process,
	// with the same token: its sessions on a WebSocket each
	// (OpenWebSocket) and on its standing connection (Open).
	WS *client.Client
	// NewClient makes another client library like WS, with no connection
	// yet: the setup load times the first session of a cold client with it.
	NewClient func() (*client.Client, error)
	// QUICLocal is connected to a raw QUIC server in this process,
	// QUICRemote to one in the child process QUICPID.
	QUICLocal, QUICRemote *QUICClient
	QUICPID               int
	// Memory are the processes whose Go runtime IdleConnect reads:
	// the gateway, the agent and `outpost connect`.
	Memory []MemorySource
}

// MemorySource is a process whose Go runtime the idle load reads.
type MemorySource struct {
	// Name names it in the report ("gateway", "agent", "outpost connect").
	Name string
	// PID is its process, for its RSS.
	PID int
	// Read returns its Go runtime figures after a garbage collection.
	Read func(context.Context) (proc.RuntimeStats, error)
}

// log is the rig's logger, never nil.
func (r *Rig) log() hclog.Logger {
	if r.Log == nil {
		return hclog.NewNullLogger()
	}
	return r.Log
}

// check asks Check, if set.
func (r *Rig) check() error {
	if r.Check == nil {
		return nil
	}
	return r.Check()
}

// profileFile is where a profile goes: tmpName in Dir, or keptName under
// KeepPrefix if set.
func (r *Rig) profileFile(tmpName, keptName string) string {
	if r.KeepPrefix != "" {
		return r.KeepPrefix + "-" + keptName + ".pprof"
	}
	return filepath.Join(r.Dir, tmpName+".pprof")
}
