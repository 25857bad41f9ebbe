package main

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/outposthq/outpost/bench/internal/proc"
)

// Targets the figures are judged against.
const (
	targetThroughputRatio = 0.90
	targetSetupP50        = 350 * time.Microsecond
	targetSetupP99        = time.Millisecond
	targetRSS             = 30_000_000 // bytes (30 MB)
)

// The ways bytes go from the benchmark client to a target.
type pathID int

const (
	pathTCP             pathID = iota // loopback TCP, both ends in this process
	pathQUICLocal                     // raw QUIC, both ends in this process
	pathQUIC                          // raw QUIC, server in a child process: "b"
	pathRaw                           // TCP → bench entry → gateway → QUIC → agent → TCP target
	pathConnect                       // TCP → outpost connect → WebSocket → gateway → QUIC → agent → TCP: "c"
	pathConnectParallel               // s.parallel sessions of pathConnect at once
	numPaths
)

var pathNames = [numPaths]string{
	"direct TCP",
	"raw quic-go stream, one process",
	"raw quic-go stream, two processes (b)",
	"Outpost raw session via the bench TCP entry (no WebSocket)",
	"Outpost single session via `outpost connect` (c)",
	"Outpost parallel sessions via `outpost connect`, aggregate",
}

// pathSlugs name a path's files.
var pathSlugs = [numPaths]string{"tcp", "quic-local", "quic", "raw", "connect", "connect-parallel"}

// cpuNames name the processes a path's CPU time is read from (see cpuPIDs).
var cpuNames = [numPaths][]string{
	{"client + target"},
	{"client + server"},
	{"client", "server"},
	{"gateway", "agent", "client + target"},
	{"gateway", "agent", "connect", "client + target"},
	{"gateway", "agent", "connect", "client + target"},
}

// isOutpost says whether a path goes through the gateway and the agent
// (whose first two processes are the gateway and the agent).
func isOutpost(p pathID) bool { return p >= pathRaw }

// The two directions of a transfer.
type dirID int

const (
	dirUp   dirID = iota // client → target (sink)
	dirDown              // target → client (source)
	numDirs
)

var dirNames = [numDirs]string{"client → target", "target → client"}

// cpuTotals are the CPU ticks of a path's processes (see cpuNames) while
// it carried bytes.
type cpuTotals struct {
	ticks [4]int64
	bytes int64
}

// perGB returns the CPU seconds per 10^9 bytes of ticks at hz.
func perGB(ticks, bytes, hz int64) float64 {
	if bytes == 0 || hz == 0 {
		return 0
	}
	return float64(ticks) / float64(hz) / (float64(bytes) / 1e9)
}

// The session setup measurements.
const (
	latDirect  = iota // TCP connect to the echo target
	latQUIC           // a new stream on an open raw QUIC connection (two processes)
	latRaw            // through the bench entry, the gateway and the agent
	latEntry          // through the WebSocket entry, with the client library
	latGateway        // DialAgent inside the gateway child
	numLat
)

var latNames = [numLat]string{
	"direct TCP",
	"raw quic-go stream, two processes",
	"Outpost raw session via the bench TCP entry",
	"Outpost via the WebSocket entry (connect library: TLS + upgrade + echo + close)",
	"Outpost in gateway (DialAgent + echo + close)",
}

// capacityResult is one capacity run and the memory at its peak.
type capacityResult struct {
	what            string
	streamLimit     int64 // the agent's QUIC limit on streams the gateway opens
	stats           capacityStats
	rss             [2]int64 // gateway, agent, with the sessions held
	gwGoroutines    int
	agentGoroutines int // -1: not known (the agent binary)
	gwRuntime       proc.RuntimeStats
	agentRuntime    *proc.RuntimeStats // nil: not known (the agent binary)
	agentHeap       *proc.HeapSummary  // the library agent's live heap; nil if not known
}

// profileSummary is the gateway's CPU profile of a stretch of load, with
// what that stretch carried.
type profileSummary struct {
	proc.CPUProfile
	bytes    int64 // bytes carried while it was sampled
	sessions int   // or sessions opened while it was sampled
}

// results are every figure of one run.
type results struct {
	settings
	machine     proc.Machine
	clockHz     int64
	clockSource string
	loadAtStart string // /proc/loadavg when the run began: other load skews every figure
	// fsync is how long a 4 KiB write + fsync takes in the temporary
	// directory, where the gateway's store lives.
	fsync latencyStats

	// mbps holds each transfer's rate in 10^6 bytes per second.
	mbps [numDirs][numPaths][]float64
	// seconds is the total time of a path's measured transfers.
	seconds   [numDirs][numPaths]float64
	cpu       [numDirs][numPaths]cpuTotals
	latency   [numLat]latencyStats
	rssBefore [2]int64 // gateway, agent: connected, no session
	rssIdle   [2]int64 // gateway, agent: with s.idle sessions open
	// gwRuntime is the gateway child's Go runtime view: [0] connected with
	// no session, [1] with the idle sessions.
	gwRuntime [2]proc.RuntimeStats
	// gwHeap is the gateway child's live heap with the idle sessions.
	gwHeap   *proc.HeapSummary
	capRuns  []capacityResult
	lookups  []lookupBench
	profiles [numPaths]*profileSummary // the gateway's, for profiled paths
	// wsPhases are the open, echo and close steps of the timed sessions
	// through the WebSocket entry.
	wsPhases [3]latencyStats
	// tlsHandshake times a bare TCP + TLS handshake with the gateway.
	tlsHandshake latencyStats
	// setupProfile is the gateway's CPU profile while those sessions ran.
	setupProfile *profileSummary
	elapsed      time.Duration
}

// binarySize writes n bytes as whole GiB or MiB.
func binarySize(n int64) string {
	if n >= 1<<30 && n%(1<<30) == 0 {
		return fmt.Sprintf("%d GiB", n>>30)
	}
	return fmt.Sprintf("%d MiB", n>>20)
}

// row is one line of the table.
type row struct{ what, figure, target, verdict string }

func verdict(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

func ms(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d)/float64(time.Millisecond)) }

func mb(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/1e6) }

// thousands writes n with thousands separators.
func thousands(n int64) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + thousands(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// pathName is a path's name, with the parallel count filled in.
func (r *results) pathName(p pathID) string {
	if p == pathConnectParallel {
		return fmt.Sprintf("Outpost %d parallel sessions via `outpost connect`, aggregate", r.parallel)
	}
	return pathNames[p]
}

// rows turns the results into the table.
func (r *results) rows() []row {
	var rows []row
	rows = append(rows, r.throughputRows()...)
	rows = append(rows, r.cpuRows()...)
	rows = append(rows, r.latencyRows()...)
	rows = append(rows, r.rssRows()...)
	rows = append(rows, r.capacityRows()...)
	rows = append(rows, r.lookupRows()...)
	return rows
}

func (r *results) throughputRows() []row {
	var rows []row
	for d := range numDirs {
		b := median(r.mbps[d][pathQUIC])
		for p := range numPaths {
			xs := r.mbps[d][p]
			fig := fmt.Sprintf("%.0f MB/s", median(xs))
			if len(xs) > 1 {
				fig += fmt.Sprintf(" (median of %d: %.0f–%.0f)", len(xs), slices.Min(xs), slices.Max(xs))
			}
			size := binarySize(r.bytes)
			if p == pathConnectParallel {
				size = fmt.Sprintf("%d × %s", r.parallel, binarySize(r.bytes/int64(r.parallel)))
			}
			what := fmt.Sprintf("Throughput %s, %s, %s", dirNames[d], size, r.pathName(p))
			ratio := median(xs) / b
			target, v := "— (reference)", "—"
			switch p {
			case pathQUICLocal:
				target = "— (info)"
			case pathRaw:
				target = "— (comparison)"
				v = fmt.Sprintf("%.2f × b", ratio)
			case pathConnect:
				target = fmt.Sprintf("≥ %.2f × b", targetThroughputRatio)
				v = fmt.Sprintf("c/b = %.2f — %s", ratio, verdict(ratio >= targetThroughputRatio))
			case pathConnectParallel:
				target = "— (none set)"
				v = fmt.Sprintf("%.2f × b", ratio)
			}
			rows = append(rows, row{what, fig, target, v})
		}
	}
	return rows
}

// cpuParts are a path's CPU-s per GB in one direction: per process, and
// the total.
func (r *results) cpuParts(d dirID, p pathID) (each []float64, total float64) {
	c := r.cpu[d][p]
	for i := range cpuNames[p] {
		v := perGB(c.ticks[i], c.bytes, r.clockHz)
		each = append(each, v)
		total += v
	}
	return each, total
}

func (r *results) cpuRows() []row {
	var rows []row
	for p := range numPaths {
		var parts []string
		for d := range numDirs {
			each, total := r.cpuParts(d, p)
			var part string
			switch {
			case isOutpost(p):
				part = fmt.Sprintf("%s: gateway + agent %.2f (gateway %.2f + agent %.2f)", dirNames[d], each[0]+each[1], each[0], each[1])
				if len(each) == 4 {
					part += fmt.Sprintf("; connect %.2f", each[2])
				}
				part += fmt.Sprintf("; all processes %.2f", total)
			case len(each) > 1:
				part = fmt.Sprintf("%s %.2f (%s %.2f + %s %.2f)", dirNames[d], total, cpuNames[p][0], each[0], cpuNames[p][1], each[1])
			default:
				part = fmt.Sprintf("%s %.2f", dirNames[d], total)
			}
			parts = append(parts, part)
		}
		target := "— (reference)"
		if isOutpost(p) {
			target = "— (none set)"
		}
		rows = append(rows, row{"CPU-seconds per GB carried, " + r.pathName(p), strings.Join(parts, "; "), target, "—"})
	}
	return rows
}

func (r *results) latencyRows() []row {
	var rows []row
	for i, st := range r.latency {
		for _, q := range []struct {
			name   string
			value  time.Duration
			target time.Duration
		}{{"p50", st.P50, targetSetupP50}, {"p99", st.P99, targetSetupP99}} {
			what := fmt.Sprintf("Session setup %s, %s (%s sequential)", q.name, latNames[i], thousands(int64(st.N)))
			switch i {
			case latDirect, latQUIC:
				rows = append(rows, row{what, ms(q.value), "— (reference)", "—"})
				continue
			case latRaw:
				rows = append(rows, row{what, ms(q.value), "— (comparison)", fmt.Sprintf("%.2f × %s", float64(q.value)/float64(q.target), ms(q.target))})
				continue
			}
			ratio := float64(q.value) / float64(q.target)
			rows = append(rows, row{what, ms(q.value), "≤ " + ms(q.target),
				fmt.Sprintf("%.2f × target — %s", ratio, verdict(q.value <= q.target))})
		}
	}
	return rows
}

func (r *results) rssRows() []row {
	var rows []row
	for i, name := range []string{"gateway", "agent"} {
		rows = append(rows, row{
			what:    fmt.Sprintf("RSS of the %s process, %s idle sessions via the WebSocket entry", name, thousands(int64(r.idle))),
			figure:  fmt.Sprintf("%s (%s with none)", mb(r.rssIdle[i]), mb(r.rssBefore[i])),
			target:  "≤ " + mb(targetRSS),
			verdict: fmt.Sprintf("%.2f × target — %s", float64(r.rssIdle[i])/targetRSS, verdict(r.rssIdle[i] <= targetRSS)),
		})
	}
	return rows
}

func (r *results) capacityRows() []row {
	var rows []row
	for _, c := range r.capRuns {
		st := c.stats
		fig := fmt.Sprintf("%s of %s opened in %.1f s", thousands(int64(st.Opened)), thousands(int64(r.capacity)), st.Took.Seconds())
		if st.Stop != "" {
			fig += "; stopped: " + st.Stop
		}
		fig += fmt.Sprintf("; held: gateway RSS %s, %s goroutines; agent RSS %s", mb(c.rss[0]), thousands(int64(c.gwGoroutines)), mb(c.rss[1]))
		if c.agentGoroutines >= 0 {
			fig += fmt.Sprintf(", %s goroutines", thousands(int64(c.agentGoroutines)))
		}
		what := fmt.Sprintf("Concurrent sessions on one agent: %s (QUIC stream limit %s)", c.what, thousands(c.streamLimit))
		v := fmt.Sprintf("%.2f × target — %s", float64(st.Opened)/targetCapacity, verdict(st.Opened >= targetCapacity))
		if r.capacity < targetCapacity {
			v = fmt.Sprintf("— (-quick: capped at %s)", thousands(int64(r.capacity)))
		}
		rows = append(rows, row{what, fig, "≥ " + thousands(targetCapacity), v})
	}
	return rows
}

func (r *results) lookupRows() []row {
	var rows []row
	for _, l := range r.lookups {
		what := fmt.Sprintf("Route lookup, Benchmark%s (10,000 agents × 10 subnets + 1,000 domains)", l.name)
		fig := fmt.Sprintf("%.1f ns/op, %d allocs/op (%d B/op)", l.nsPerOp, l.allocsPerOp, l.bytesPerOp)
		ok := l.nsPerOp <= targetLookup && l.allocsPerOp == 0
		rows = append(rows, row{what, fig, "≤ 1 µs/op, 0 allocs/op",
			fmt.Sprintf("%.2f × target — %s", l.nsPerOp/targetLookup, verdict(ok))})
	}
	return rows
}

// table renders rows as a Markdown table.
func table(rows []row) string {
	var b strings.Builder
	b.WriteString("| Measurement | Figure | Target | Ratio — result |\n")
	b.WriteString("|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", r.what, r.figure, r.target, r.verdict)
	}
	return b.String()
}

// resultsFile is the content of bench/RESULTS.md: the machine, the run,
// the table, and where the time goes.
func (r *results) resultsFile(now time.Time, args string) string {
	var b strings.Builder
	mode := "full"
	if r.quick {
		mode = "quick (-quick)"
	}
	cmd := "go run ./bench/tunnel"
	if args != "" {
		cmd += " " + args
	}
	b.WriteString("# Outpost benchmark — results\n\n")
	fmt.Fprintf(&b, "Written by `%s` (what `make bench` runs) on %s. See `bench/README.md` for what each row means.\n\n",
		cmd, now.UTC().Format("2006-01-02 15:04 MST"))
	m := r.machine
	b.WriteString("| Machine / run | |\n|---|---|\n")
	fmt.Fprintf(&b, "| CPUs (nproc) | %d × %s |\n", m.CPUs, m.CPUModel)
	fmt.Fprintf(&b, "| Kernel (uname -r) | %s |\n", m.Kernel)
	fmt.Fprintf(&b, "| net.core.rmem_max / wmem_max | %s / %s bytes |\n", m.RmemMax, m.WmemMax)
	fmt.Fprintf(&b, "| UDP offload | %s |\n", m.UDPOffload)
	fmt.Fprintf(&b, "| Go | %s |\n", m.GoVersion)
	fmt.Fprintf(&b, "| 4 KiB write + fsync in the gateway's data directory (50 samples) | p50 %s, p99 %s |\n", ms(r.fsync.P50), ms(r.fsync.P99))
	fmt.Fprintf(&b, "| Open-file limit (RLIMIT_NOFILE, inherited by the children) | %s |\n", m.FileLimit)
	fmt.Fprintf(&b, "| Clock ticks | %d Hz (%s) |\n", r.clockHz, r.clockSource)
	fmt.Fprintf(&b, "| Load average at start (/proc/loadavg) | %s |\n", r.loadAtStart)
	fmt.Fprintf(&b, "| Mode | %s: %s per transfer (%d parallel sessions share it in the parallel row), %d run(s) per path and direction after a %s warm-up; %s + %s sequential sessions per setup figure; %s idle sessions; up to %s capacity sessions; route lookups with -benchtime %s |\n",
		mode, binarySize(r.bytes), r.parallel, r.reps, binarySize(r.warmBytes), thousands(int64(r.warmup)), thousands(int64(r.sessions)),
		thousands(int64(r.idle)), thousands(int64(r.capacity)), r.benchtime)
	fmt.Fprintf(&b, "| Run time | %s |\n", r.elapsed.Round(time.Second))
	b.WriteString("\n")
	b.WriteString(table(r.rows()))
	b.WriteString("\nGo runtime of the gateway child (from runtime.ReadMemStats), without and with the idle sessions:\n\n")
	b.WriteString("| | goroutines | heap in use | stacks in use | total from OS (Sys) |\n|---|---|---|---|---|\n")
	for i, what := range []string{"no session", thousands(int64(r.idle)) + " idle sessions via the WebSocket entry"} {
		rt := r.gwRuntime[i]
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s |\n", what, rt.Goroutines,
			mb(int64(rt.HeapInuse)), mb(int64(rt.StackInuse)), mb(int64(rt.Sys)))
	}
	b.WriteString(r.whereTheTimeGoes())
	return b.String()
}
