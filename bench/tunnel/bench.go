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

	"github.com/outposthq/outpost/bench/internal/proc"
	"github.com/outposthq/outpost/client"
)

// options are the run's inputs other than its size.
type options struct {
	outpost       string // prebuilt outpost binary, or "" to build one
	cpuprofile    string // prefix of the gateway CPU profiles to keep, or ""
	childLogLevel string
	root          string // module root
}

// bench is one run's moving parts.
type bench struct {
	s   settings
	o   options
	log hclog.Logger
	res *results
	tmp string // the run's temporary directory
	bin string // the outpost binary
	exe string // this program's binary

	tg       *targets
	gw       *proc.CtlChild // the gateway child
	gwHello  hello
	agentDir string
	agentID  string
	agent    *proc.Child    // the real agent binary
	libAgent *proc.CtlChild // the agent library child; runs once agent has stopped

	client  *connectProc   // outpost connect --listen, the real client
	ws      *client.Client // the same client library, in this process
	tlsConf *tls.Config    // what the client library verifies the gateway with

	quicLocalSrv *quicServer    // raw QUIC server in this process
	quicLocal    *quicClient    // connected to quicLocalSrv
	quicChild    *proc.CtlChild // raw QUIC server in a child process
	quicRemote   *quicClient    // connected to quicChild's server

	// profiles are the gateway CPU profile files of each profiled path.
	profiles [numPaths][]string
	// wsPhases collects the steps of WebSocket sessions while set.
	wsPhases *wsPhases
}

// runBench sets everything up, measures, and tears everything down (also
// on failure) before returning.
func runBench(ctx context.Context, s settings, o options, log hclog.Logger) (*results, error) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		return nil, fmt.Errorf("this benchmark reads /proc (Linux only): %w", err)
	}
	ctx, cancel := context.WithTimeoutCause(ctx, s.timeout, fmt.Errorf("benchmark took longer than %v (-timeout)", s.timeout))
	defer cancel()
	limit, lerr := proc.RaiseFileLimit(fileLimit)
	if lerr != nil && !errors.Is(lerr, proc.ErrBelowWant) {
		log.Warn("could not raise the open-file limit", "error", lerr)
	}
	hz, fromAuxv := proc.ClockTicks()
	b := &bench{s: s, o: o, log: log, res: &results{
		settings:    s,
		machine:     proc.DescribeMachine(limit, fileLimit, lerr),
		clockHz:     hz,
		clockSource: "AT_CLKTCK from /proc/self/auxv",
		loadAtStart: proc.ReadTrimmed("/proc/loadavg"),
	}}
	if !fromAuxv {
		b.res.clockSource = "assumed: auxv unreadable"
	}

	// First, while nothing else runs: the route lookup benchmarks.
	log.Info("route lookup benchmarks", "package", routingPkg, "benchtime", s.benchtime)
	var err error
	if b.res.lookups, err = runLookupBench(ctx, o.root, s.benchtime); err != nil {
		return nil, err
	}
	for _, l := range b.res.lookups {
		log.Info("route lookup", "benchmark", l.name, "ns/op", l.nsPerOp, "allocs/op", l.allocsPerOp)
	}

	if b.tmp, err = os.MkdirTemp("", "outpost-bench-"); err != nil {
		return nil, err
	}
	defer os.RemoveAll(b.tmp)
	fsync, err := proc.FsyncProbe(b.tmp, 50)
	if err != nil {
		return nil, fmt.Errorf("fsync probe: %w", err)
	}
	b.res.fsync = summarize(fsync)

	b.tg, err = startTargets(time.Now().Add(s.timeout), log.Named("target"))
	if err != nil {
		return nil, fmt.Errorf("targets: %w", err)
	}
	defer b.tg.Close()

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

	b.gw, err = proc.StartCtl(ctx, "gateway", b.exe, []string{"-mode=gateway", "-data-dir", filepath.Join(b.tmp, "gateway"),
		"-entry", "127.0.0.1:0", "-max-sessions", strconv.Itoa(s.capacity + capacityHeadroom), "-log-level", o.childLogLevel}, &b.gwHello)
	if err != nil {
		return nil, err
	}
	defer b.gw.Stop()
	if b.gwHello.Entry == "" || b.gwHello.Token == "" || b.gwHello.CAPEM == "" {
		return nil, fmt.Errorf("gateway child hello is incomplete: %+v", b.gwHello)
	}
	log.Info("gateway child up", "pid", b.gw.PID(), "entry", b.gwHello.Entry, "api", b.gwHello.API, "quic", b.gwHello.QUIC)

	b.agentDir = filepath.Join(b.tmp, "agent")
	if b.agentID, err = enrollAgent(ctx, b.bin, b.agentDir, b.gwHello.Token); err != nil {
		return nil, err
	}
	// The stream limit is raised (DESIGN's default is 4,096) so that the
	// capacity run can reach its target with the real binary.
	b.agent, err = proc.Start("agent", exec.Command(b.bin, "agent", "run", "--config-dir", b.agentDir,
		"--log-level", o.childLogLevel, "--drain-timeout", "2s", "--max-sessions", strconv.Itoa(s.capacity+capacityHeadroom)))
	if err != nil {
		return nil, err
	}
	defer func() {
		b.agent.Stop(10 * time.Second)
		if b.libAgent != nil {
			b.libAgent.Stop()
		}
	}()
	log.Info("agent started", "pid", b.agent.PID(), "agent_id", b.agentID)
	if err := b.waitReady(ctx); err != nil {
		return nil, err
	}

	defer func() {
		if b.client != nil {
			b.client.Stop()
		}
	}()
	if err := b.startClient(ctx); err != nil {
		return nil, err
	}

	var certPEM []byte
	if b.quicLocalSrv, certPEM, err = startQUICServer(log.Named("rawquic")); err != nil {
		return nil, err
	}
	defer b.quicLocalSrv.Close()
	if b.quicLocal, err = dialQUIC(ctx, b.quicLocalSrv.addr(), certPEM); err != nil {
		return nil, err
	}
	defer b.quicLocal.Close()
	var qh quicHello
	b.quicChild, err = proc.StartCtl(ctx, "raw QUIC", b.exe, []string{"-mode=quic", "-log-level", o.childLogLevel}, &qh)
	if err != nil {
		return nil, err
	}
	defer b.quicChild.Stop()
	if b.quicRemote, err = dialQUIC(ctx, qh.Addr, []byte(qh.CertPEM)); err != nil {
		return nil, err
	}
	defer b.quicRemote.Close()
	log.Info("raw QUIC servers up", "local", b.quicLocalSrv.addr(), "child", qh.Addr, "child_pid", b.quicChild.PID())

	if b.res.rssBefore, err = b.rss(); err != nil {
		return nil, err
	}
	if b.res.gwRuntime[0], err = b.gwRuntime(ctx); err != nil {
		return nil, err
	}
	for _, phase := range []func(context.Context) error{b.latency, b.idleSessions, b.throughput, b.capacity} {
		if err := phase(ctx); err != nil {
			return nil, err
		}
	}
	return b.res, nil
}

// startClient mints a reusable session token for the mux target through
// the agent, starts `outpost connect --listen` with it, checks one session
// through it, and builds the in-process client of the same entry.
func (b *bench) startClient(ctx context.Context) error {
	resp, err := call(ctx, b.gw, request{Op: opSessionToken, AgentID: b.agentID, Target: b.tg.muxAddr(),
		TTL: b.s.timeout + 10*time.Minute}, time.Minute)
	if err != nil {
		return err
	}
	caFile := filepath.Join(b.tmp, "gateway-ca.pem")
	if err := os.WriteFile(caFile, []byte(b.gwHello.CAPEM), 0o600); err != nil {
		return err
	}
	gwURL := "https://" + b.gwHello.API
	b.client, err = startConnect(ctx, b.bin, gwURL, resp.Token, caFile, b.o.childLogLevel)
	if err != nil {
		return err
	}
	b.log.Info("outpost connect up", "pid", b.client.PID(), "listen", b.client.addr)
	b.ws, err = client.New(client.Options{Gateway: gwURL, Token: resp.Token, CAPEM: []byte(b.gwHello.CAPEM),
		DialTimeout: dialTimeout, Logger: b.log.Named("connect")})
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(b.gwHello.CAPEM)) {
		return errors.New("the gateway's CA certificate is not PEM")
	}
	b.tlsConf = &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	// The agent is up (waitReady); a session through the client must work
	// at once.
	if err := echoSession(ctx, b.client.addr, []byte{modeEcho}); err != nil {
		return fmt.Errorf("first session through outpost connect: %w", err)
	}
	return nil
}

// header is what a client sends the bench entry before its bytes.
func (b *bench) header(target string) []byte {
	return []byte(b.agentID + " " + target + "\n")
}

func dialTCP(ctx context.Context, addr string) (*net.TCPConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

// echoSession is one timed session: connect, send prefix and one byte,
// read the byte back, close.
func echoSession(ctx context.Context, addr string, prefix []byte) error {
	ctx, cancel := context.WithTimeout(ctx, sessionTimeout)
	defer cancel()
	c, err := dialTCP(ctx, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	return echoOnce(c, prefix)
}

// agentPID is the process of the agent now running.
func (b *bench) agentPID() int {
	if b.libAgent != nil {
		return b.libAgent.PID()
	}
	return b.agent.PID()
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

// waitReady retries a session through the bench entry until the agent is
// connected and answers (bounded: 60 s).
func (b *bench) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	start := time.Now()
	for {
		err := echoSession(ctx, b.gwHello.Entry, b.header(b.tg.echoAddr()))
		if err == nil {
			b.log.Info("tunnel ready", "after", time.Since(start).Round(time.Millisecond))
			return nil
		}
		if cerr := b.checkChildren(); cerr != nil {
			return cerr
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no session through the agent within 60 s; last error: %w", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// rss reads VmRSS of the gateway child and the agent.
func (b *bench) rss() ([2]int64, error) {
	var out [2]int64
	for i, pid := range []int{b.gw.PID(), b.agentPID()} {
		n, err := proc.RSSBytes(pid)
		if err != nil {
			return out, err
		}
		out[i] = n
	}
	return out, nil
}

// gwRuntime asks the gateway child for its Go runtime memory figures.
func (b *bench) gwRuntime(ctx context.Context) (proc.RuntimeStats, error) {
	return childRuntime(ctx, b.gw)
}

// childRuntime asks a child of this program for its Go runtime figures.
func childRuntime(ctx context.Context, c *proc.CtlChild) (proc.RuntimeStats, error) {
	resp, err := call(ctx, c, request{Op: opRuntime}, 10*time.Second)
	if err != nil {
		return proc.RuntimeStats{}, err
	}
	if resp.Runtime == nil {
		return proc.RuntimeStats{}, errors.New(c.Name() + " child runtime: empty answer")
	}
	return *resp.Runtime, nil
}
