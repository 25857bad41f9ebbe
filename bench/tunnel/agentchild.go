package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/outposthq/outpost/agent"
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

// runAgentChild is the whole life of the agent child; it returns the exit
// code.
func runAgentChild(configDir string, maxStreams int, logLevel string) int {
	log := hclog.New(&hclog.LoggerOptions{Name: "bench-agent", Level: hclog.LevelFromString(logLevel), Output: os.Stderr})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serveAgent(ctx, configDir, maxStreams, log); err != nil {
		log.Error("agent child failed", "error", err)
		return 1
	}
	return 0
}

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
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	runErr := make(chan error, 1)
	wg.Go(func() { runErr <- r.Run(ctx) })

	out := json.NewEncoder(os.Stdout)
	if err := out.Encode(agentHello{AgentID: id}); err != nil {
		return fmt.Errorf("write hello: %w", err)
	}
	lines, stopReading := stdinLines()
	defer stopReading()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-runErr:
			return fmt.Errorf("agent stopped early: %v", err)
		case line, ok := <-lines:
			if !ok {
				return nil
			}
			var req request
			resp := response{}
			switch err := json.Unmarshal(line, &req); {
			case err != nil:
				resp.Error = "bad request: " + err.Error()
			case req.Op == opRuntime:
				st := readRuntimeStats()
				resp.Runtime = &st
			case req.Op == opHeapProfile:
				if err := writeHeapProfile(req.Path); err != nil {
					resp.Error = err.Error()
				}
			default:
				resp.Error = fmt.Sprintf("unknown op %q", req.Op)
			}
			if err := out.Encode(resp); err != nil {
				return fmt.Errorf("write response: %w", err)
			}
		}
	}
}
