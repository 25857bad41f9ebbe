package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/outposthq/outpost/bench/internal/load"
	"github.com/outposthq/outpost/bench/internal/proc"
	"github.com/outposthq/outpost/bench/internal/report"
	"github.com/outposthq/outpost/client"
)

// options are the run's inputs other than its size.
type options struct {
	outpost       string // prebuilt outpost binary, or "" to build one
	cpuprofile    string // prefix of the gateway CPU profiles to keep, or ""
	childLogLevel string
	root          string // module root
	only          string // "" (everything) or onlyCluster
}

// onlyCluster is the -only value that runs the cluster part alone.
const onlyCluster = "cluster"

// bench is one run's moving parts: the processes it started, and the rig
// the loads run against.
type bench struct {
	s   load.Settings
	o   options
	log hclog.Logger
	res *report.Results
	tmp string // the run's temporary directory
	bin string // the outpost binary
	exe string // this program's binary

	rig      load.Rig
	gw       gatewayChild // the gateway child
	gwHello  hello
	agentDir string
	agent    *proc.Child    // the real agent binary
	libAgent *proc.CtlChild // the agent library child; runs once agent has stopped
	client   *connectProc   // outpost connect --listen, the real client
	// agentPprof and connectPprof are where the agent binary and the
	// client serve their Go profiles (--pprof-listen).
	agentPprof, connectPprof string
	quicChild                *proc.CtlChild // raw QUIC server in a child process
}

// runBench sets everything up, measures, and tears everything down (also
// on failure) before returning. With o.only "cluster" it runs only the
// cluster part (cluster.go).
func runBench(ctx context.Context, s load.Settings, o options, log hclog.Logger) (*report.Results, error) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		return nil, fmt.Errorf("this benchmark reads /proc (Linux only): %w", err)
	}
	ctx, cancel := context.WithTimeoutCause(ctx, s.Timeout, fmt.Errorf("benchmark took longer than %v (-timeout)", s.Timeout))
	defer cancel()
	limit, lerr := proc.RaiseFileLimit(fileLimit)
	if lerr != nil && !errors.Is(lerr, proc.ErrBelowWant) {
		log.Warn("could not raise the open-file limit", "error", lerr)
	}
	hz, fromAuxv := proc.ClockTicks()
	b := &bench{s: s, o: o, log: log, res: &report.Results{
		Settings:    s,
		ClusterOnly: o.only == onlyCluster,
		Machine:     proc.DescribeMachine(limit, fileLimit, lerr),
		ClockHz:     hz,
		ClockSource: "AT_CLKTCK from /proc/self/auxv",
		LoadAtStart: proc.ReadTrimmed("/proc/loadavg"),
	}}
	if !fromAuxv {
		b.res.ClockSource = "assumed: auxv unreadable"
	}

	// First, while nothing else runs: the route lookup and store
	// benchmarks.
	var err error
	if !b.res.ClusterOnly {
		if b.res.Lookups, err = load.RouteLookups(ctx, o.root, s.Benchtime, log); err != nil {
			return nil, err
		}
		if b.res.StoreWrites, err = load.StoreWrites(ctx, o.root, s.Benchtime, log); err != nil {
			return nil, err
		}
		if b.res.StoreSetups, err = load.StoreSetups(ctx, o.root, s.Sessions, log); err != nil {
			return nil, err
		}
	}

	if b.tmp, err = os.MkdirTemp("", "outpost-bench-"); err != nil {
		return nil, err
	}
	defer os.RemoveAll(b.tmp)
	fsync, err := proc.FsyncProbe(b.tmp, 50)
	if err != nil {
		return nil, fmt.Errorf("fsync probe: %w", err)
	}
	b.res.Fsync = load.Summarize(fsync)
	b.rig = load.Rig{Settings: s, Log: log, Dir: b.tmp, KeepPrefix: o.cpuprofile, Check: b.checkChildren}

	b.rig.Targets, err = load.StartTargets(time.Now().Add(s.Timeout), log.Named("target"))
	if err != nil {
		return nil, fmt.Errorf("targets: %w", err)
	}
	defer b.rig.Targets.Close()

	b.bin = o.outpost
	if b.bin == "" {
		log.Info("building the outpost binary", "dir", b.tmp)
		if b.bin, err = buildOutpost(ctx, o.root, b.tmp); err != nil {
			return nil, err
		}
	}
	if b.exe, err = os.Executable(); err != nil {
		return nil, fmt.Errorf("find this program's binary: %w", err)
	}

	quicLocalSrv, certPEM, err := load.StartQUICServer(log.Named("rawquic"))
	if err != nil {
		return nil, err
	}
	defer quicLocalSrv.Close()
	if b.rig.QUICLocal, err = load.DialQUIC(ctx, quicLocalSrv.Addr(), certPEM); err != nil {
		return nil, err
	}
	defer b.rig.QUICLocal.Close()
	var qh quicHello
	b.quicChild, err = proc.StartCtl(ctx, "raw QUIC", b.exe, []string{"-mode=quic", "-log-level", o.childLogLevel}, &qh)
	if err != nil {
		return nil, err
	}
	defer b.quicChild.Stop()
	b.rig.QUICPID = b.quicChild.PID()
	if b.rig.QUICRemote, err = load.DialQUIC(ctx, qh.Addr, []byte(qh.CertPEM)); err != nil {
		return nil, err
	}
	defer b.rig.QUICRemote.Close()
	log.Info("raw QUIC servers up", "local", quicLocalSrv.Addr(), "child", qh.Addr, "child_pid", b.quicChild.PID())

	if !b.res.ClusterOnly {
		if err := b.single(ctx); err != nil {
			return nil, err
		}
	}
	// Last, once the single gateway and its agents have stopped.
	if err := b.cluster(ctx); err != nil {
		return nil, err
	}
	return b.res, nil
}

// single is the run against one gateway child: it starts the gateway, the
// agent and `outpost connect`, runs every phase but the cluster part, and
// stops them.
func (b *bench) single(ctx context.Context) error {
	s, o, log := b.s, b.o, b.log
	gw, err := proc.StartCtl(ctx, "gateway", b.exe, []string{"-mode=gateway", "-data-dir", filepath.Join(b.tmp, "gateway"),
		"-entry", "127.0.0.1:0", "-max-sessions", strconv.Itoa(s.Capacity + capacityHeadroom), "-log-level", o.childLogLevel}, &b.gwHello)
	if err != nil {
		return err
	}
	defer gw.Stop()
	b.gw = gatewayChild{ctlProcess{gw}}
	if b.gwHello.Entry == "" || b.gwHello.Token == "" || b.gwHello.CAPEM == "" {
		return fmt.Errorf("gateway child hello is incomplete: %+v", b.gwHello)
	}
	log.Info("gateway child up", "pid", b.gw.PID(), "entry", b.gwHello.Entry, "api", b.gwHello.API, "quic", b.gwHello.QUIC)
	b.rig.Gateway, b.rig.Entry, b.rig.API = b.gw, b.gwHello.Entry, b.gwHello.API

	b.agentDir = filepath.Join(b.tmp, "agent")
	if b.rig.AgentID, err = enrollAgent(ctx, b.bin, b.agentDir, b.gwHello.Token); err != nil {
		return err
	}
	// The stream limit is raised (DESIGN's default is 4,096) so that the
	// capacity run can reach its target with the real binary.
	if b.agentPprof, err = freeLoopbackAddr(); err != nil {
		return err
	}
	b.agent, err = proc.Start("agent", exec.Command(b.bin, "agent", "run", "--config-dir", b.agentDir,
		"--log-level", o.childLogLevel, "--drain-timeout", "2s", "--max-sessions", strconv.Itoa(s.Capacity+capacityHeadroom),
		"--pprof-listen", b.agentPprof))
	if err != nil {
		return err
	}
	defer func() {
		b.agent.Stop(10 * time.Second)
		if b.libAgent != nil {
			b.libAgent.Stop()
		}
	}()
	b.rig.AgentPID = b.agent.PID()
	log.Info("agent started", "pid", b.agent.PID(), "agent_id", b.rig.AgentID)
	if err := b.rig.WaitReady(ctx); err != nil {
		return err
	}

	defer func() {
		if b.client != nil {
			b.client.Stop()
		}
		if b.rig.WS != nil {
			b.rig.WS.Close()
		}
	}()
	if err := b.startClient(ctx); err != nil {
		return err
	}

	if b.res.RSSBefore, err = b.rig.RSS(); err != nil {
		return err
	}
	if b.res.GwRuntime[0], err = b.rig.Gateway.Runtime(ctx); err != nil {
		return err
	}
	for _, phase := range []func(context.Context) error{b.setup, b.idle, b.idleConnect, b.throughput, b.capacity, b.failover} {
		if err := phase(ctx); err != nil {
			return err
		}
	}
	return nil
}

// startClient mints a reusable session token for the mux target through
// the agent, starts `outpost connect --listen` with it, checks one session
// through it, and builds the in-process client of the same entry.
func (b *bench) startClient(ctx context.Context) error {
	token, err := b.gw.sessionToken(ctx, b.rig.AgentID, b.rig.Targets.MuxAddr(), b.s.Timeout+10*time.Minute)
	if err != nil {
		return err
	}
	caFile := filepath.Join(b.tmp, "gateway-ca.pem")
	if err := os.WriteFile(caFile, []byte(b.gwHello.CAPEM), 0o600); err != nil {
		return err
	}
	gwURL := "https://" + b.gwHello.API
	if b.connectPprof, err = freeLoopbackAddr(); err != nil {
		return err
	}
	b.client, err = startConnect(ctx, b.bin, gwURL, token, caFile, b.o.childLogLevel, b.connectPprof)
	if err != nil {
		return err
	}
	b.rig.Memory = []load.MemorySource{
		{Name: "gateway", PID: b.gw.PID(), Read: b.gw.RuntimeAfterGC},
		{Name: "agent", PID: b.agent.PID(), Read: func(ctx context.Context) (proc.RuntimeStats, error) {
			return proc.PprofRuntime(ctx, b.agentPprof)
		}},
		{Name: "outpost connect", PID: b.client.PID(), Read: func(ctx context.Context) (proc.RuntimeStats, error) {
			return proc.PprofRuntime(ctx, b.connectPprof)
		}},
	}
	b.rig.ConnectAddr, b.rig.ConnectPID = b.client.addr, b.client.PID()
	b.log.Info("outpost connect up", "pid", b.client.PID(), "listen", b.client.addr)
	b.rig.NewClient = func() (*client.Client, error) {
		return client.New(client.Config{Gateway: gwURL, Token: token, CAPEM: []byte(b.gwHello.CAPEM),
			DialTimeout: dialTimeout, Logger: b.log.Named("connect")})
	}
	if b.rig.WS, err = b.rig.NewClient(); err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(b.gwHello.CAPEM)) {
		return errors.New("the gateway's CA certificate is not PEM")
	}
	b.rig.TLS = &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	// The agent is up (WaitReady); a session through the client must work
	// at once.
	if err := b.rig.ProbeConnect(ctx); err != nil {
		return fmt.Errorf("first session through outpost connect: %w", err)
	}
	return nil
}

// checkChildren fails when a child process that should run has exited.
func (b *bench) checkChildren() error {
	kids := []*proc.Child{b.gw.Child}
	if b.libAgent != nil {
		kids = append(kids, b.libAgent.Child)
	} else {
		kids = append(kids, b.agent)
	}
	if b.client != nil {
		kids = append(kids, b.client.Child)
	}
	if b.quicChild != nil {
		kids = append(kids, b.quicChild.Child)
	}
	for _, c := range kids {
		if done, err := c.Exited(); done {
			return fmt.Errorf("the %s process exited: %v", c.Name(), err)
		}
	}
	return nil
}

// setup is the session setup phase.
func (b *bench) setup(ctx context.Context) (err error) {
	b.res.Setup, err = b.rig.Setup(ctx)
	return err
}

// idle is the idle sessions phase.
func (b *bench) idle(ctx context.Context) error {
	idle, err := b.rig.Idle(ctx)
	if err != nil {
		return err
	}
	b.res.RSSIdle, b.res.GwRuntime[1], b.res.GwHeap = idle.RSS, idle.GatewayRuntime, idle.GatewayHeap
	b.log.Info("RSS", "gateway_before", b.res.RSSBefore[0], "agent_before", b.res.RSSBefore[1],
		"gateway_idle", b.res.RSSIdle[0], "agent_idle", b.res.RSSIdle[1])
	for i, when := range []string{"no session", "idle sessions"} {
		rt := b.res.GwRuntime[i]
		b.log.Info("gateway child Go runtime", "when", when, "goroutines", rt.Goroutines, "heap_inuse", rt.HeapInuse,
			"heap_alloc", rt.HeapAlloc, "stack_inuse", rt.StackInuse, "sys", rt.Sys, "num_gc", rt.NumGC)
	}
	return nil
}

// idleConnect is the phase of idle sessions through `outpost connect`:
// the Go memory each process adds per session. It runs while the agent
// binary does.
func (b *bench) idleConnect(ctx context.Context) (err error) {
	b.res.IdleConnect, err = b.rig.IdleConnect(ctx)
	return err
}

// freeLoopbackAddr returns a loopback TCP address free right now, for a
// child to listen on.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// throughput is the throughput phase.
func (b *bench) throughput(ctx context.Context) (err error) {
	b.res.Throughput, err = b.rig.Throughput(ctx)
	return err
}

// capacity finds how many concurrent sessions one agent carries: first the
// real agent binary, then — the binary having stopped — the agent library
// in a child process with its QUIC stream limit raised above the capacity.
func (b *bench) capacity(ctx context.Context) error {
	limit := b.s.Capacity + capacityHeadroom
	r, err := b.rig.Capacity(ctx, fmt.Sprintf("real agent binary, --max-sessions %d", limit), int64(limit))
	if err != nil {
		return err
	}
	b.res.CapRuns = append(b.res.CapRuns, r)

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
	if ah.AgentID != b.rig.AgentID {
		return fmt.Errorf("library agent child runs agent %q, want %q", ah.AgentID, b.rig.AgentID)
	}
	b.rig.AgentPID, b.rig.Agent = b.libAgent.PID(), ctlProcess{b.libAgent}
	if err := b.rig.WaitReady(ctx); err != nil {
		return err
	}
	r, err = b.rig.Capacity(ctx, "agent library in a bench child, same limit (memory breakdown)", int64(limit))
	if err != nil {
		return err
	}
	b.res.CapRuns = append(b.res.CapRuns, r)
	return b.checkChildren()
}
