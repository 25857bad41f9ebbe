// Command tunnel benchmarks Outpost end to end on loopback and prints one
// Markdown table: single-stream throughput (direct TCP; a raw quic-go
// stream with Outpost's QUIC configuration, in one process and across two;
// a session through `outpost connect`, the WebSocket entry, the gateway, QUIC
// and the agent, alone and 8 in parallel; and a raw session through a
// benchmark-only TCP entry), the CPU each process spends per GB, session
// setup latency, the memory of the gateway and the agent with idle
// sessions, the most sessions one agent carries, session setup right after
// a kill -9 of the agent routing prefers, the liveness traffic and CPU of
// idle agents, and the gateway's route lookup and store (token use, audit)
// benchmarks; and, with a PostgreSQL server, a cluster part (cluster.go):
// session setup and throughput through a replica that holds the agent vs
// one that forwards over the peer link, and how soon HA agents are back at
// two replicas after a kill -9 of one (-only cluster runs it alone).
//
// Run it from the repository root (make bench runs the full mode):
//
//	go run ./bench/tunnel          # about 4 minutes on 2 cores, bounded at 9
//	go run ./bench/tunnel -quick   # about a minute
//
// The agent and the client (`outpost connect --listen`) are the real outpost
// binary, built into a temporary directory and run as child processes. The
// gateway is this program re-executed with -mode=gateway (gateway.go): the
// real gateway library, plus a benchmark-only TCP entry (entry.go) for the
// raw-session rows. The two-process QUIC baseline's server is this program with
// -mode=quic, and the capacity run's second agent is this program with
// -mode=agent (the agent library with a raised stream limit). Everything
// listens on 127.0.0.1 only, every load is bounded in size and time, and the
// children and temporary files are removed on every exit path (children also
// die with this process: PR_SET_PDEATHSIG). The table goes to stdout and to
// bench/RESULTS.md; logs go to stderr. See bench/README.md for what each row
// means.
//
// This package is the composition: flags, the children's entry points
// (-mode), and the run's orchestration (bench.go): it starts the processes,
// hands them to the loads as a load.Rig, and gives what they measured to
// report. The parts live in bench/internal: proc (child processes and their
// measurement), load (the targets, the raw QUIC baseline and the loads) and
// report (the table and RESULTS.md).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/outposthq/outpost/bench/internal/load"
)

// Sizes of the run that are the benchmark's own (the loads' are in
// load.Settings).
const (
	// capacityHeadroom is added to the capacity for the gateway's session
	// cap and the agents' stream limit, so that neither is what stops the
	// run.
	capacityHeadroom = 1024
	// fileLimit is the RLIMIT_NOFILE the benchmark asks for (it and its
	// children hold a descriptor per capacity session on each side).
	fileLimit = 65536
)

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	fs := flag.NewFlagSet("tunnel", flag.ContinueOnError)
	var (
		quick      = fs.Bool("quick", false, "small transfers, one run each, 2,000 capacity sessions: about a minute")
		timeout    = fs.Duration("timeout", 0, "abort the whole run after this long (default 9m, or 170s with -quick)")
		outpost    = fs.String("outpost", "", "outpost binary to run the agent and the client with (default: build ./cmd/outpost)")
		resultsOut = fs.String("results", "", "where to write the Markdown results (default <repo>/bench/RESULTS.md, nowhere with -only; \"-\": nowhere)")
		cpuprofile = fs.String("cpuprofile", "", "keep the gateway child's CPU profiles as PREFIX-connect.pprof and PREFIX-raw.pprof")
		logLevel   = fs.String("log-level", "info", "log level of this program: trace, debug, info, warn, error")
		mode       = fs.String("mode", "", "internal: \"gateway\", \"quic\" or \"agent\" runs a child process of the benchmark")
		only       = fs.String("only", "", "run only this part: \"cluster\" (replicas on PostgreSQL: the peer hop and re-homing after a kill -9)")
		gwOpts     gatewayOptions
		configDir  = fs.String("config-dir", "", "internal: the agent child's config directory")
		maxStreams = fs.Int("max-streams", 0, "internal: the agent child's QUIC stream limit")
	)
	gwOpts.register(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	switch *mode {
	case "gateway":
		return runChild("gateway", *logLevel, func(ctx context.Context, log hclog.Logger) error {
			return serveGateway(ctx, gwOpts, log)
		})
	case "quic":
		return runChild("quic", *logLevel, serveQUIC)
	case "agent":
		return runChild("agent", *logLevel, func(ctx context.Context, log hclog.Logger) error {
			return serveAgent(ctx, *configDir, *maxStreams, log)
		})
	case "":
	default:
		fmt.Fprintf(os.Stderr, "unknown -mode %q\n", *mode)
		return 2
	}

	if *only != "" && *only != onlyCluster {
		fmt.Fprintf(os.Stderr, "unknown -only %q (want %q)\n", *only, onlyCluster)
		return 2
	}
	level := hclog.LevelFromString(*logLevel)
	if level == hclog.NoLevel {
		fmt.Fprintf(os.Stderr, "unknown -log-level %q\n", *logLevel)
		return 2
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "bench", Level: level, Output: os.Stderr})
	s := load.SettingsFor(*quick)
	if *timeout > 0 {
		s.Timeout = *timeout
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	start := time.Now()
	root, err := moduleRoot(ctx)
	if err != nil {
		log.Error("benchmark failed", "error", err)
		return 1
	}
	o := options{outpost: *outpost, cpuprofile: *cpuprofile, childLogLevel: "warn", root: root, only: *only}
	if level < hclog.Info {
		o.childLogLevel = level.String()
	}
	res, err := runBench(ctx, s, o, log)
	if err != nil {
		log.Error("benchmark failed", "error", err)
		return 1
	}
	res.Elapsed = time.Since(start)
	fmt.Print(res.Table())
	log.Info("benchmark done", "elapsed", res.Elapsed.Round(time.Millisecond))
	out := *resultsOut
	switch {
	case out == "" && *only != "":
		// A part alone leaves the whole run's results alone.
		out = "-"
	case out == "":
		out = filepath.Join(root, "bench", "RESULTS.md")
	}
	if out != "-" {
		if err := os.WriteFile(out, []byte(res.File(time.Now(), strings.Join(os.Args[1:], " "))), 0o644); err != nil {
			log.Error("write results", "error", err)
			return 1
		}
		log.Info("results written", "path", out)
	}
	return 0
}

// runChild is the whole life of a child mode of this program: serve runs
// with a logger named bench-NAME at logLevel on stderr and a context that
// ends on SIGTERM or SIGINT. It returns the exit code.
func runChild(name, logLevel string, serve func(context.Context, hclog.Logger) error) int {
	log := hclog.New(&hclog.LoggerOptions{Name: "bench-" + name, Level: hclog.LevelFromString(logLevel), Output: os.Stderr})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, log); err != nil {
		log.Error(name+" child failed", "error", err)
		return 1
	}
	return 0
}
