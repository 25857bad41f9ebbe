package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/outposthq/outpost/agent"
	"github.com/outposthq/outpost/bench/internal/proc"
	"github.com/outposthq/outpost/dataplane/transport"
)

// The agent child (-mode=agent) runs the agent library — what `outpost
// agent run` runs — with one setting the binary does not expose: the QUIC
// limit on streams the gateway may open (transport.Config
// MaxIncomingStreams, 4,096 by default), which caps an agent's concurrent
// sessions. The capacity run uses it, after the real agent binary, to see
// whether the tunnel carries more sessions than that default. It uses the
// real agent's enrolled identity (its config directory), so it runs only
// after the real agent has stopped. Like the gateway child it prints a
// hello line, answers opRuntime and opHeapProfile requests on stdin, and
// exits when stdin ends or on SIGTERM/SIGINT.

// agentHello is the agent child's first line.
type agentHello struct {
	AgentID string `json:"agent_id"`
}

// serveAgent is the agent child's life (see runChild).
func serveAgent(ctx context.Context, configDir string, maxStreams int, log hclog.Logger) error {
	id, ok := agent.Enrolled(configDir)
	if !ok {
		return fmt.Errorf("no enrolled agent in %q", configDir)
	}
	if maxStreams <= 0 {
		return errors.New("-max-streams must be positive")
	}
	r, err := agent.NewRunner(agent.RunnerConfig{
		ConfigDir:     configDir,
		QUIC:          transport.Config{MaxIncomingStreams: int64(maxStreams)},
		DrainTimeout:  2 * time.Second,
		WatchInterval: -1,
	}, log.Named("agent"))
	if err != nil {
		return err
	}
	return proc.Server[request]{
		Run:   r.Run,
		Hello: func(context.Context) (any, error) { return agentHello{AgentID: id}, nil },
		Answer: func(_ context.Context, req request) any {
			if resp, ok := answerCommon(req); ok {
				return resp
			}
			return unknownOp(req)
		},
	}.Serve(ctx)
}
