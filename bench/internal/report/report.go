// Package report turns one run's Results into what the benchmark prints:
// the Markdown table of every figure against its target (Table), and
// bench/RESULTS.md (File) — the machine and the run, the same table, the
// gateway's Go runtime figures, and the "Where the time goes" analysis
// computed from the same measurements. It measures nothing itself.
package report

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/outposthq/outpost/bench/internal/load"
	"github.com/outposthq/outpost/bench/internal/proc"
)

// Targets the figures are judged against: the fast-sessions issue's,
// each a ratio to a reference measured in the same run.
const (
	// A single session through `outpost connect` carries at least this
	// part of the raw quic-go two-process throughput (b); 8 parallel
	// sessions, at least targetParallelRatio of the single one.
	targetThroughputRatio = 0.65
	targetParallelRatio   = 1.0
	// CPU-seconds per GB of every tunnel process, at most this many times
	// raw quic-go's (both ends).
	targetCPURatio = 1.4
	// Session setup on a warm standing connection: p50 and p99 at most
	// this many times the raw quic-go stream open + echo.
	targetSetupRatio = 3.0
	// The same with the gateway on PostgreSQL: at most this many times
	// the same benchmark on SQLite.
	targetStoreSetupRatio = 1.25
	targetLookup          = 1000.0 // ns per route lookup, with no allocation
	targetCapacity        = load.TargetCapacity
)

// idleTargets are the Go memory (heap + stacks) each process may add per
// idle session through `outpost connect`, in bytes: the gateway
// ≤ idle + 16 MB, connect and agent ≤ idle + 12 MB per 1,000 sessions.
var idleTargets = map[string]float64{"gateway": 16_000, "agent": 12_000, "outpost connect": 12_000}

// perGB returns the CPU seconds per 10^9 bytes of ticks at hz.
func perGB(ticks, bytes, hz int64) float64 {
	if bytes == 0 || hz == 0 {
		return 0
	}
	return float64(ticks) / float64(hz) / (float64(bytes) / 1e9)
}

// Results are every figure of one run, as the loads measured them; the
// caller fills them in. The zero value is an empty report.
type Results struct {
	load.Settings
	Machine     proc.Machine
	ClockHz     int64  // the unit of the CPU ticks (proc.ClockTicks)
	ClockSource string // where ClockHz comes from
	LoadAtStart string // /proc/loadavg when the run began: other load skews every figure
	// Fsync is how long a 4 KiB write + fsync takes in the temporary
	// directory, where the gateway's store lives.
	Fsync load.Stats

	Throughput load.ThroughputResult
	Setup      load.SetupResult
	RSSBefore  [2]int64 // gateway, agent: connected, no session
	RSSIdle    [2]int64 // gateway, agent: with Settings.Idle sessions open
	// GwRuntime is the gateway child's Go runtime view: [0] connected with
	// no session, [1] with the idle sessions.
	GwRuntime [2]proc.RuntimeStats
	// GwHeap is the gateway child's live heap with the idle sessions; nil
	// if it could not be read.
	GwHeap *proc.HeapSummary
	// IdleConnect is every process's Go runtime with and without
	// Settings.Idle sessions through `outpost connect`.
	IdleConnect load.IdleConnectResult
	CapRuns     []load.CapacityResult
	// Failover times the sessions opened after a kill -9 of the preferred
	// agent; Detection is how long after the kill the gateway's API showed
	// that agent unresponsive (zero: not measured); IdleCost is the
	// liveness traffic of idle agents.
	Failover  load.FailoverSetup
	Detection time.Duration
	IdleCost  load.IdleCost
	Lookups   []load.LookupBench
	// StoreWrites are the store's benchmarks of a session's writes; a
	// backend that could not run has none.
	StoreWrites []load.StoreBench
	// StoreSetups are session setup on a standing connection with the
	// gateway on each store (in one process); a backend that could not
	// run has none.
	StoreSetups []load.StoreBench
	// Cluster is the cluster part (replicas on PostgreSQL: the peer hop,
	// re-homing after a kill -9); nil if it was not run.
	Cluster *load.ClusterResult
	// ClusterOnly is set when the run was the cluster part alone (-only
	// cluster): the table and the file hold its rows only.
	ClusterOnly bool
	Elapsed     time.Duration // the whole run
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

// kib writes b bytes in kilobytes (10^3), one decimal.
func kib(b int64) string { return fmt.Sprintf("%.1f KB", float64(b)/1e3) }

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
func (r *Results) pathName(p load.Path) string {
	if p == load.PathConnectParallel {
		return fmt.Sprintf("Outpost %d parallel sessions via `outpost connect`, aggregate", r.Parallel)
	}
	return p.String()
}

// rows turns the results into the table.
func (r *Results) rows() []row {
	if r.ClusterOnly {
		return r.clusterRows()
	}
	var rows []row
	rows = append(rows, r.throughputRows()...)
	rows = append(rows, r.cpuRows()...)
	rows = append(rows, r.latencyRows()...)
	rows = append(rows, r.rssRows()...)
	rows = append(rows, r.idleConnectRows()...)
	rows = append(rows, r.capacityRows()...)
	rows = append(rows, r.failoverRows()...)
	rows = append(rows, r.lookupRows()...)
	rows = append(rows, r.storeRows()...)
	rows = append(rows, r.storeSetupRows()...)
	rows = append(rows, r.clusterRows()...)
	return rows
}

func (r *Results) throughputRows() []row {
	var rows []row
	for d := range load.NumDirs {
		b := median(r.Throughput.MBps[d][load.PathQUIC])
		for p := range load.NumPaths {
			xs := r.Throughput.MBps[d][p]
			fig := fmt.Sprintf("%.0f MB/s", median(xs))
			if len(xs) > 1 {
				fig += fmt.Sprintf(" (median of %d: %.0f–%.0f)", len(xs), slices.Min(xs), slices.Max(xs))
			}
			size := binarySize(r.Bytes)
			if p == load.PathConnectParallel {
				size = fmt.Sprintf("%d × %s", r.Parallel, binarySize(r.Bytes/int64(r.Parallel)))
			}
			what := fmt.Sprintf("Throughput %s, %s, %s", d.String(), size, r.pathName(p))
			ratio := median(xs) / b
			target, v := "— (reference)", "—"
			switch p {
			case load.PathQUICLocal:
				target = "— (info)"
			case load.PathRaw:
				target = "— (comparison)"
				v = fmt.Sprintf("%.2f × b", ratio)
			case load.PathConnect:
				target = fmt.Sprintf("≥ %.2f × b", targetThroughputRatio)
				v = fmt.Sprintf("c/b = %.2f — %s", ratio, verdict(ratio >= targetThroughputRatio))
			case load.PathConnectParallel:
				single := median(r.Throughput.MBps[d][load.PathConnect])
				target = fmt.Sprintf("≥ %.2f × c (single)", targetParallelRatio)
				if single > 0 {
					pr := median(xs) / single
					v = fmt.Sprintf("%.2f × c, %.2f × b — %s", pr, ratio, verdict(pr >= targetParallelRatio))
				}
			}
			rows = append(rows, row{what, fig, target, v})
		}
	}
	return rows
}

// cpuParts are a path's CPU-s per GB in one direction: per process, and
// the total.
func (r *Results) cpuParts(d load.Dir, p load.Path) (each []float64, total float64) {
	c := r.Throughput.CPU[d][p]
	for i := range p.Processes() {
		v := perGB(c.Ticks[i], c.Bytes, r.ClockHz)
		each = append(each, v)
		total += v
	}
	return each, total
}

func (r *Results) cpuRows() []row {
	var rows []row
	for p := range load.NumPaths {
		var parts []string
		for d := range load.NumDirs {
			each, total := r.cpuParts(d, p)
			var part string
			switch {
			case p.Outpost():
				part = fmt.Sprintf("%s: gateway + agent %.2f (gateway %.2f + agent %.2f)", d.String(), each[0]+each[1], each[0], each[1])
				if len(each) == 4 {
					part += fmt.Sprintf("; connect %.2f", each[2])
				}
				part += fmt.Sprintf("; all processes %.2f", total)
			case len(each) > 1:
				part = fmt.Sprintf("%s %.2f (%s %.2f + %s %.2f)", d.String(), total, p.Processes()[0], each[0], p.Processes()[1], each[1])
			default:
				part = fmt.Sprintf("%s %.2f", d.String(), total)
			}
			parts = append(parts, part)
		}
		target, v := "— (reference)", "—"
		switch {
		case p == load.PathConnect:
			// Every tunnel process against raw quic-go's both ends, the
			// worse direction judged.
			target = fmt.Sprintf("all processes ≤ %.1f × raw quic-go (both ends)", targetCPURatio)
			var worst float64
			for d := range load.NumDirs {
				_, total := r.cpuParts(d, p)
				_, ref := r.cpuParts(d, load.PathQUIC)
				if ref > 0 {
					worst = max(worst, total/ref)
				}
			}
			if worst > 0 {
				v = fmt.Sprintf("%.2f × raw (worse direction) — %s", worst, verdict(worst <= targetCPURatio))
			}
		case p.Outpost():
			target = "— (none set)"
		}
		rows = append(rows, row{"CPU-seconds per GB carried, " + r.pathName(p), strings.Join(parts, "; "), target, v})
	}
	return rows
}

// latencyRows judge session setup against the raw quic-go stream open +
// echo of the same run: the warm standing connection has the target, the
// other Outpost paths are compared with it.
func (r *Results) latencyRows() []row {
	var rows []row
	ref := r.Setup.Latency[load.SetupQUIC]
	for i, st := range r.Setup.Latency {
		i := load.Setup(i)
		for _, q := range []struct {
			name       string
			value, ref time.Duration
		}{{"p50", st.P50, ref.P50}, {"p99", st.P99, ref.P99}} {
			what := fmt.Sprintf("Session setup %s, %s (%s sequential)", q.name, i, thousands(int64(st.N)))
			ratio := 0.0
			if q.ref > 0 {
				ratio = float64(q.value) / float64(q.ref)
			}
			switch i {
			case load.SetupDirect, load.SetupQUIC:
				rows = append(rows, row{what, ms(q.value), "— (reference)", "—"})
			case load.SetupStanding:
				rows = append(rows, row{what, ms(q.value), fmt.Sprintf("≤ %.0f × raw quic-go %s", targetSetupRatio, q.name),
					fmt.Sprintf("%.2f × raw quic-go (%s) — %s", ratio, ms(q.ref), verdict(ratio > 0 && ratio <= targetSetupRatio))})
			default:
				rows = append(rows, row{what, ms(q.value), "— (comparison)", fmt.Sprintf("%.2f × raw quic-go (%s)", ratio, ms(q.ref))})
			}
		}
	}
	return rows
}

func (r *Results) rssRows() []row {
	var rows []row
	for i, name := range []string{"gateway", "agent"} {
		growth := r.RSSIdle[i] - r.RSSBefore[i]
		rows = append(rows, row{
			what:    fmt.Sprintf("RSS of the %s process, %s idle sessions via the WebSocket entry", name, thousands(int64(r.Idle))),
			figure:  fmt.Sprintf("%s (%s with none: + %s)", mb(r.RSSIdle[i]), mb(r.RSSBefore[i]), mb(growth)),
			target:  "— (comparison: the idle-session targets apply through `outpost connect`, below)",
			verdict: fmt.Sprintf("%.1f KB per session", float64(growth)/float64(max(r.Idle, 1))/1e3),
		})
	}
	return rows
}

// idleConnectRows judge what each process's Go memory (heap in use and
// stacks in use, after a GC) grew by per idle session through `outpost
// connect`.
func (r *Results) idleConnectRows() []row {
	var rows []row
	n := r.IdleConnect.Sessions
	for _, p := range r.IdleConnect.Procs {
		heap, stack, g := p.PerSession(n)
		target, ok := idleTargets[p.Name]
		if !ok {
			continue
		}
		v := heap + stack
		rows = append(rows, row{
			what: fmt.Sprintf("Go heap + stacks per idle session, %s, %s idle sessions via `outpost connect`", p.Name, thousands(int64(n))),
			figure: fmt.Sprintf("%s (heap %s, stacks %s, %.2f goroutines per session; RSS %s → %s)",
				kib(int64(v)), kib(int64(heap)), kib(int64(stack)), g, mb(p.RSSBefore), mb(p.RSSIdle)),
			target:  "≤ " + kib(int64(target)),
			verdict: fmt.Sprintf("%.2f × target — %s", v/target, verdict(v <= target)),
		})
	}
	return rows
}

func (r *Results) capacityRows() []row {
	var rows []row
	for _, c := range r.CapRuns {
		st := c.Stats
		fig := fmt.Sprintf("%s of %s opened in %.1f s", thousands(int64(st.Opened)), thousands(int64(r.Capacity)), st.Took.Seconds())
		if st.Stop != "" {
			fig += "; stopped: " + st.Stop
		}
		fig += fmt.Sprintf("; held: gateway RSS %s, %s goroutines; agent RSS %s", mb(c.RSS[0]), thousands(int64(c.GwGoroutines)), mb(c.RSS[1]))
		if c.AgentGoroutines >= 0 {
			fig += fmt.Sprintf(", %s goroutines", thousands(int64(c.AgentGoroutines)))
		}
		what := fmt.Sprintf("Concurrent sessions on one agent: %s (QUIC stream limit %s)", c.What, thousands(c.StreamLimit))
		v := fmt.Sprintf("%.2f × target — %s", float64(st.Opened)/targetCapacity, verdict(st.Opened >= targetCapacity))
		if r.Capacity < targetCapacity {
			v = fmt.Sprintf("— (-quick: capped at %s)", thousands(int64(r.Capacity)))
		}
		rows = append(rows, row{what, fig, "≥ " + thousands(targetCapacity), v})
	}
	return rows
}

func (r *Results) lookupRows() []row {
	var rows []row
	for _, l := range r.Lookups {
		what := fmt.Sprintf("Route lookup, Benchmark%s (10,000 agents × 10 subnets + 1,000 domains)", l.Name)
		fig := fmt.Sprintf("%.1f ns/op, %d allocs/op (%d B/op)", l.NsPerOp, l.AllocsPerOp, l.BytesPerOp)
		ok := l.NsPerOp <= targetLookup && l.AllocsPerOp == 0
		rows = append(rows, row{what, fig, "≤ 1 µs/op, 0 allocs/op",
			fmt.Sprintf("%.2f × target — %s", l.NsPerOp/targetLookup, verdict(ok))})
	}
	return rows
}

// storeRows are the store benchmarks: single-use token consumption (on
// every session's setup) and the session audit, batched as the audit
// writer writes it and, for comparison, one row per commit as before.
// storeSetupRows compare session setup with the gateway on PostgreSQL to
// the same benchmark on SQLite.
func (r *Results) storeSetupRows() []row {
	find := func(backend string) (load.StoreBench, bool) {
		i := slices.IndexFunc(r.StoreSetups, func(s load.StoreBench) bool { return s.Name == load.StoreSetup && s.Backend == backend })
		if i < 0 {
			return load.StoreBench{}, false
		}
		return r.StoreSetups[i], true
	}
	lite, liteOK := find("sqlite")
	pg, pgOK := find("postgres")
	var rows []row
	for _, q := range []struct {
		name     string
		lite, pg float64
	}{{"p50", lite.P50Ms, pg.P50Ms}, {"p99", lite.P99Ms, pg.P99Ms}} {
		what := "Session setup " + q.name + " on a standing connection, gateway on %s (gateway, agent and client library in one process)"
		if liteOK {
			rows = append(rows, row{fmt.Sprintf(what, "SQLite"), fmt.Sprintf("%.3f ms", q.lite), "— (reference)", "—"})
		}
		rw := row{what: fmt.Sprintf(what, "PostgreSQL (the test server: fsync off)"), target: fmt.Sprintf("≤ %.2f × SQLite", targetStoreSetupRatio), verdict: "—"}
		switch {
		case pgOK && liteOK && q.lite > 0:
			ratio := q.pg / q.lite
			rw.figure = fmt.Sprintf("%.3f ms", q.pg)
			rw.verdict = fmt.Sprintf("%.2f × SQLite — %s", ratio, verdict(ratio <= targetStoreSetupRatio))
		case pgOK:
			rw.figure = fmt.Sprintf("%.3f ms", q.pg)
		default:
			rw.figure = "not run: no PostgreSQL server binaries (apt-get install postgresql)"
		}
		rows = append(rows, rw)
	}
	return rows
}

func (r *Results) storeRows() []row {
	what := map[string]string{
		load.StoreTokenUse:    "Store: single-use session token consumption (one commit each, on every session's setup)",
		load.StoreAuditBatch:  "Store: session audit, in batches (one commit each, as the audit writer writes them)",
		load.StoreAuditSingle: "Store: session audit, one row per commit (as sessions wrote it before the audit writer)",
	}
	backends := map[string]string{
		"sqlite":   "SQLite (WAL, synchronous=FULL, in the temporary directory)",
		"postgres": "PostgreSQL (the test server: fsync off)",
	}
	var rows []row
	for _, name := range []string{load.StoreTokenUse, load.StoreAuditBatch, load.StoreAuditSingle} {
		for _, backend := range load.StoreBackends {
			rw := row{what: what[name] + ", " + backends[backend], target: "— (none set)", verdict: "—"}
			if name == load.StoreAuditSingle {
				rw.target = "— (comparison)"
			}
			i := slices.IndexFunc(r.StoreWrites, func(s load.StoreBench) bool { return s.Name == name && s.Backend == backend })
			switch {
			case i >= 0:
				s := r.StoreWrites[i]
				per := "token"
				switch {
				case s.Batch > 1:
					per = fmt.Sprintf("batch of %d", s.Batch)
				case s.Unit == "rows/s":
					per = "row"
				}
				rw.figure = fmt.Sprintf("%s %s; p99 %.3f ms per %s", thousands(int64(s.Rate+0.5)), s.Unit, s.P99Ms, per)
			case backend == "postgres":
				rw.figure = "not run: no PostgreSQL server binaries (apt-get install postgresql)"
			default:
				rw.figure = "not run"
			}
			rows = append(rows, rw)
		}
	}
	return rows
}

// Table is the results' Markdown table, as the benchmark prints it.
func (r *Results) Table() string { return table(r.rows()) }

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

// File is the content of bench/RESULTS.md: the machine, the run (written
// at now by the benchmark with the arguments args), the table, and where
// the time goes.
func (r *Results) File(now time.Time, args string) string {
	var b strings.Builder
	mode := "full"
	if r.Quick {
		mode = "quick (-quick)"
	}
	cmd := "go run ./bench/tunnel"
	if args != "" {
		cmd += " " + args
	}
	b.WriteString("# Outpost benchmark — results\n\n")
	fmt.Fprintf(&b, "Written by `%s` (what `make bench` runs) on %s. See `bench/README.md` for what each row means.\n\n",
		cmd, now.UTC().Format("2006-01-02 15:04 MST"))
	m := r.Machine
	b.WriteString("| Machine / run | |\n|---|---|\n")
	fmt.Fprintf(&b, "| CPUs (nproc) | %d × %s |\n", m.CPUs, m.CPUModel)
	fmt.Fprintf(&b, "| Kernel (uname -r) | %s |\n", m.Kernel)
	fmt.Fprintf(&b, "| net.core.rmem_max / wmem_max | %s / %s bytes |\n", m.RmemMax, m.WmemMax)
	fmt.Fprintf(&b, "| UDP offload | %s |\n", m.UDPOffload)
	fmt.Fprintf(&b, "| Go | %s |\n", m.GoVersion)
	fmt.Fprintf(&b, "| 4 KiB write + fsync in the gateway's data directory (50 samples) | p50 %s, p99 %s |\n", ms(r.Fsync.P50), ms(r.Fsync.P99))
	fmt.Fprintf(&b, "| Open-file limit (RLIMIT_NOFILE, inherited by the children) | %s |\n", m.FileLimit)
	fmt.Fprintf(&b, "| Clock ticks | %d Hz (%s) |\n", r.ClockHz, r.ClockSource)
	fmt.Fprintf(&b, "| Load average at start (/proc/loadavg) | %s |\n", r.LoadAtStart)
	fmt.Fprintf(&b, "| Mode | %s: %s per transfer (%d parallel sessions share it in the parallel row), %d run(s) per path and direction after a %s warm-up; %s + %s sequential sessions per setup figure; %s idle sessions; up to %s capacity sessions; route lookups and store benchmarks with -benchtime %s |\n",
		mode, binarySize(r.Bytes), r.Parallel, r.Reps, binarySize(r.WarmBytes), thousands(int64(r.Warmup)), thousands(int64(r.Sessions)),
		thousands(int64(r.Idle)), thousands(int64(r.Capacity)), r.Benchtime)
	fmt.Fprintf(&b, "| Run time | %s |\n", r.Elapsed.Round(time.Second))
	b.WriteString("\n")
	b.WriteString(table(r.rows()))
	if r.ClusterOnly {
		return b.String()
	}
	b.WriteString("\nGo runtime of the gateway child (from runtime.ReadMemStats), without and with the idle sessions:\n\n")
	b.WriteString("| | goroutines | heap in use | stacks in use | total from OS (Sys) |\n|---|---|---|---|---|\n")
	for i, what := range []string{"no session", thousands(int64(r.Idle)) + " idle sessions via the WebSocket entry"} {
		rt := r.GwRuntime[i]
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s |\n", what, rt.Goroutines,
			mb(int64(rt.HeapInuse)), mb(int64(rt.StackInuse)), mb(int64(rt.Sys)))
	}
	b.WriteString(r.whereTheTimeGoes())
	return b.String()
}

// median returns the middle value of xs (the mean of the two middle ones
// for an even count), or 0 for none. xs is not modified.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}
