package main

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/outposthq/outpost/bench/internal/load"
	"github.com/outposthq/outpost/bench/internal/proc"
	"github.com/outposthq/outpost/client"
	outpostv1 "github.com/outposthq/outpost/gen/outpost/v1"
)

// failover is the last phase: Settings.IdleAgents more real agent binaries,
// all dialing the gateway through a counting UDP relay, measured idle for
// Settings.IdleWindow (the gateway's CPU also over as long a window before
// they start); then the last of them to connect — the one routing prefers
// — is killed with SIGKILL while sessions with a token that names no agent
// open every 100 ms for 15 s. The agents are stopped on every exit path.
func (b *bench) failover(ctx context.Context) error {
	s := b.s
	relay, err := load.StartUDPCounter(b.gwHello.QUIC)
	if err != nil {
		return err
	}
	defer relay.Close()
	gwTicks := func() (int64, error) { return proc.CPUTicks(b.gw.PID()) }

	b.log.Info("idle cost: gateway baseline", "window", s.IdleWindow)
	base0, err := gwTicks()
	if err != nil {
		return err
	}
	if err := sleepCtx(ctx, s.IdleWindow); err != nil {
		return err
	}
	base1, err := gwTicks()
	if err != nil {
		return err
	}

	var (
		agents []*proc.Child
		ids    []string
	)
	defer func() {
		for _, a := range agents {
			a.Stop(10 * time.Second)
		}
	}()
	for i := range s.IdleAgents {
		name := fmt.Sprintf("idle-%d", i)
		tok, err := b.gw.enrollToken(ctx, name)
		if err != nil {
			return err
		}
		dir := filepath.Join(b.tmp, name)
		id, err := enrollAgent(ctx, b.bin, dir, tok, "--quic-endpoint", relay.Addr())
		if err != nil {
			return err
		}
		a, err := proc.Start(name, exec.Command(b.bin, "agent", "run", "--config-dir", dir, "--log-level", b.o.childLogLevel, "--drain-timeout", "1s"))
		if err != nil {
			return err
		}
		agents, ids = append(agents, a), append(ids, id)
		if err := b.rig.WaitAgent(ctx, id); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	b.log.Info("idle cost: agents up; measuring", "agents", len(agents), "window", s.IdleWindow)
	if err := sleepCtx(ctx, 2*time.Second); err != nil { // the connections settle (path MTU probes)
		return err
	}
	// sample reads the relay's counts and the CPU ticks of the gateway and
	// of the idle agents.
	sample := func() (c load.IdleCost, err error) {
		c.PacketsIn, c.PacketsOut, c.BytesIn, c.BytesOut = relay.Counts()
		if c.GatewayTicks, err = gwTicks(); err != nil {
			return c, err
		}
		for _, a := range agents {
			n, err := proc.CPUTicks(a.PID())
			if err != nil {
				return c, err
			}
			c.AgentTicks += n
		}
		return c, nil
	}
	c0, err := sample()
	if err != nil {
		return err
	}
	if err := sleepCtx(ctx, s.IdleWindow); err != nil {
		return err
	}
	c1, err := sample()
	if err != nil {
		return err
	}
	b.res.IdleCost = load.IdleCost{Agents: len(agents), Window: s.IdleWindow,
		PacketsIn: c1.PacketsIn - c0.PacketsIn, PacketsOut: c1.PacketsOut - c0.PacketsOut,
		BytesIn: c1.BytesIn - c0.BytesIn, BytesOut: c1.BytesOut - c0.BytesOut,
		GatewayTicks: c1.GatewayTicks - c0.GatewayTicks, BaseTicks: base1 - base0, AgentTicks: c1.AgentTicks - c0.AgentTicks}
	b.log.Info("idle cost", "cost", fmt.Sprintf("%+v", b.res.IdleCost))

	// Sessions routed by the gateway (the token names no agent) to the mux.
	token, err := b.gw.sessionToken(ctx, "", b.rig.Targets.MuxAddr(), b.s.Timeout+10*time.Minute)
	if err != nil {
		return err
	}
	c, err := client.New(client.Config{Gateway: "https://" + b.gwHello.API, Token: token, CAPEM: []byte(b.gwHello.CAPEM),
		DialTimeout: dialTimeout, Logger: b.log.Named("connect")})
	if err != nil {
		return err
	}
	victim, victimID := agents[len(agents)-1], ids[len(ids)-1]
	b.log.Info("kill -9 of the preferred agent; sessions every 100 ms for 15 s", "agent", victim.Name(), "pid", victim.PID())
	killed := make(chan time.Time, 1)
	var (
		wg      sync.WaitGroup
		killErr error
	)
	wg.Go(func() {
		b.res.Failover, killErr = load.SessionsAfterKill(ctx, c, func() error {
			err := syscall.Kill(victim.PID(), syscall.SIGKILL)
			killed <- time.Now()
			return err
		})
	})
	b.res.Detection, err = b.detection(ctx, victimID, killed)
	wg.Wait()
	if err = errors.Join(killErr, err); err != nil {
		return err
	}
	b.log.Info("the killed agent was shown unresponsive", "after", b.res.Detection.Round(time.Millisecond))
	st := b.res.Failover
	b.log.Info("sessions after the kill", "ok", st.Latency.N, "failed", st.Failed, "p50", st.Latency.P50, "p99", st.Latency.P99, "max", st.Latency.Max)
	return b.checkChildren()
}

// detectionLimit bounds the wait for the killed agent to be shown
// unresponsive.
const detectionLimit = 30 * time.Second

// detection polls the status of agent id, killed at the time killed
// delivers, every 20 ms until the gateway's API no longer shows it online,
// and returns how long after the kill that was.
func (b *bench) detection(ctx context.Context, id string, killed <-chan time.Time) (time.Duration, error) {
	var at time.Time
	select {
	case at = <-killed:
	case <-ctx.Done():
		return 0, context.Cause(ctx)
	}
	for {
		st, err := b.gw.agentStatus(ctx, id)
		if err != nil {
			return 0, err
		}
		if st != outpostv1.AgentStatus_AGENT_STATUS_ONLINE.String() {
			return time.Since(at), nil
		}
		if time.Since(at) > detectionLimit {
			return 0, fmt.Errorf("the killed agent is still shown %s %v after the kill", st, detectionLimit)
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return 0, err
		}
	}
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}
