package load

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/outposthq/outpost/bench/internal/proc"
)

// WaitReady retries a raw session through the bench entry to the echo
// target until the agent is connected and answers (bounded: 60 s). It fails
// early if Check does.
func (r *Rig) WaitReady(ctx context.Context) error {
	return r.WaitAgent(ctx, r.AgentID)
}

// WaitAgent is WaitReady for the agent with id agentID.
func (r *Rig) WaitAgent(ctx context.Context, agentID string) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	start := time.Now()
	header := []byte(agentID + " " + r.Targets.EchoAddr() + "\n")
	for {
		err := echoSession(ctx, r.Entry, header)
		if err == nil {
			r.log().Info("tunnel ready", "agent_id", agentID, "after", time.Since(start).Round(time.Millisecond))
			return nil
		}
		if cerr := r.check(); cerr != nil {
			return cerr
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no session through the agent within 60 s; last error: %w", err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ProbeConnect opens one session through `outpost connect` to the echo
// service of the mux and checks its echo.
func (r *Rig) ProbeConnect(ctx context.Context) error {
	return echoSession(ctx, r.ConnectAddr, []byte{modeEcho})
}

// RSS reads VmRSS of the gateway and of the agent, in bytes.
func (r *Rig) RSS() ([2]int64, error) {
	var out [2]int64
	for i, pid := range []int{r.Gateway.PID(), r.AgentPID} {
		n, err := proc.RSSBytes(pid)
		if err != nil {
			return out, err
		}
		out[i] = n
	}
	return out, nil
}

// header is what a client sends the bench entry before its bytes.
func (r *Rig) header(target string) []byte {
	return []byte(r.AgentID + " " + target + "\n")
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
	ctx, cancel := context.WithTimeout(ctx, SessionTimeout)
	defer cancel()
	c, err := dialTCP(ctx, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	return EchoOnce(c, prefix)
}

// heapProfile has process p write a heap profile (kept under KeepPrefix if
// set) and summarizes it. A failure costs the memory breakdown, not the
// run: it is logged and nil returned.
func (r *Rig) heapProfile(ctx context.Context, p Process, name string) *proc.HeapSummary {
	file := r.profileFile(name, name)
	if err := p.HeapProfile(ctx, file); err != nil {
		r.log().Warn("heap profile", "process", p.Name(), "error", err)
		return nil
	}
	hs, err := proc.SummarizeHeap(ctx, file)
	if err != nil {
		r.log().Warn("heap profile", "process", p.Name(), "error", err)
		return nil
	}
	return &hs
}
