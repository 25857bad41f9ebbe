package report

import (
	"fmt"
	"strings"
	"time"

	"github.com/outposthq/outpost/bench/internal/load"
	"github.com/outposthq/outpost/bench/internal/proc"
)

// topFunctions is how many functions of the headline path's gateway profile
// RESULTS.md lists.
const topFunctions = 15

// whereTheTimeGoes is the RESULTS.md section that explains the throughput
// figures with what the run measured: each path's CPU cost per GB and the
// ceiling it sets on this machine, and the gateway's CPU profile by kind
// of work.
func (r *Results) whereTheTimeGoes() string {
	var b strings.Builder
	b.WriteString("\n## Where the time goes\n\n")
	b.WriteString(r.summary())
	cores := float64(r.Machine.CPUs)
	fmt.Fprintf(&b, "\n### CPU budget of each path\n\n"+
		"Every byte costs CPU in each process it crosses (user + system time from `/proc`, over all measured runs; "+
		"\"client + target\" is this benchmark's own ends). With %d cores, a path cannot carry more than "+
		"%d ÷ (CPU-s per GB of all its processes) GB/s, however well its processes overlap. \"Measured\" here is all the "+
		"measured runs' bytes ÷ their time (not the median), so that measured ÷ ceiling is the share of the cores the path's "+
		"processes kept busy: close to 1, the path is CPU-bound.\n\n", r.Machine.CPUs, r.Machine.CPUs)
	b.WriteString("| Path | Direction | Measured (all runs) | CPU-s per GB, by process | All processes | Ceiling: cores ÷ all | Measured ÷ ceiling |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for p := range load.NumPaths {
		for d := range load.NumDirs {
			each, total := r.cpuParts(d, p)
			var parts []string
			for i, name := range p.Processes() {
				parts = append(parts, fmt.Sprintf("%s %.2f", name, each[i]))
			}
			measured := 0.0
			if sec := r.Throughput.Seconds[d][p]; sec > 0 {
				measured = float64(r.Throughput.CPU[d][p].Bytes) / sec / 1e6
			}
			ceiling := 0.0
			if total > 0 {
				ceiling = cores / total * 1000
			}
			fmt.Fprintf(&b, "| %s | %s | %.0f MB/s | %s | %.2f | %.0f MB/s | %s |\n", r.pathName(p), d.String(), measured,
				strings.Join(parts, ", "), total, ceiling, ratioText(measured, ceiling))
		}
	}
	b.WriteString(r.profileSection())
	b.WriteString(r.setupSection())
	b.WriteString(r.memorySection())
	return b.String()
}

// profileSection compares the gateway's CPU profiles of the raw session and
// of the outpost connect session.
func (r *Results) profileSection() string {
	var b strings.Builder
	raw, conn := r.Throughput.Profiles[load.PathRaw], r.Throughput.Profiles[load.PathConnect]
	if raw == nil || conn == nil {
		b.WriteString("\n(The gateway's CPU profiles of the transfers could not be read in this run; see the log.)\n")
		return b.String()
	}
	fmt.Fprintf(&b, "\n### The gateway's CPU profile\n\n"+
		"The gateway child is CPU-profiled (`runtime/pprof`) during the measured transfers of the raw session and of the "+
		"`outpost connect` session, both directions. Its CPU-seconds per GB carried, by kind of work (pprof flat time ÷ bytes "+
		"carried while profiled; sampled %.1f s and %.1f s):\n\n", raw.Total.Seconds(), conn.Total.Seconds())
	b.WriteString("| Kind of work | raw session (bench TCP entry) | `outpost connect` (WebSocket entry) | difference |\n|---|---|---|---|\n")
	for _, name := range categoryOrder(conn, raw) {
		x, y := categoryPerGB(raw, name), categoryPerGB(conn, name)
		fmt.Fprintf(&b, "| %s | %.2f | %.2f | %+.2f |\n", name, x, y, y-x)
	}
	fmt.Fprintf(&b, "| **total** | **%.2f** | **%.2f** | **%+.2f** |\n", totalPerGB(raw), totalPerGB(conn), totalPerGB(conn)-totalPerGB(raw))
	fmt.Fprintf(&b, "\nThe gateway's top %d functions by own (flat) time on the `outpost connect` path:\n\n", topFunctions)
	b.WriteString("| Function | flat CPU-s per GB | share of the gateway's CPU | cum CPU-s per GB |\n|---|---|---|---|\n")
	for i, f := range conn.TopFlat {
		if i == topFunctions {
			break
		}
		fmt.Fprintf(&b, "| `%s` | %.2f | %.1f%% | %.2f |\n", f.Name, secPerGB(conn, f.Flat), 100*f.Flat.Seconds()/conn.Total.Seconds(), secPerGB(conn, f.Cum))
	}
	return b.String()
}

// summary is the section's opening: the misses and what the figures say
// about them, in sentences built from the measurements.
func (r *Results) summary() string {
	var b strings.Builder
	cores := float64(r.Machine.CPUs)
	for d := range load.NumDirs {
		bq, c, raw := median(r.Throughput.MBps[d][load.PathQUIC]), median(r.Throughput.MBps[d][load.PathConnect]), median(r.Throughput.MBps[d][load.PathRaw])
		_, tb := r.cpuParts(d, load.PathQUIC)
		ec, tc := r.cpuParts(d, load.PathConnect)
		er, tr := r.cpuParts(d, load.PathRaw)
		if tb == 0 || tc == 0 || tr == 0 {
			continue
		}
		ceilC := cores / tc * 1000
		fmt.Fprintf(&b, "- **%s**: `outpost connect` carries %.0f MB/s, %.2f × b (%.0f MB/s; target ≥ %.2f × b = %.0f MB/s). ",
			d.String(), c, c/bq, bq, targetThroughputRatio, targetThroughputRatio*bq)
		fmt.Fprintf(&b, "Its processes (gateway, agent, `outpost connect`, and this benchmark's client and target) spend %.1f CPU-s per GB "+
			"against %.1f for b's client and server, so on %d cores it cannot exceed %.0f MB/s", tc, tb, r.Machine.CPUs, ceilC)
		if ceilC < targetThroughputRatio*bq {
			fmt.Fprintf(&b, " — below the target before any waiting: the miss is CPU cost, not latency. Both paths keep the cores "+
				"busy (see the budget table), so c/b follows the inverse ratio of their CPU costs: %.1f ÷ %.1f = %.2f, against %.2f measured. ",
				tb, tc, tb/tc, c/bq)
		} else {
			fmt.Fprintf(&b, "; it reaches %.0f%% of that ceiling, so part of the miss is the pipeline waiting (hops in series, flow-control windows), not CPU alone. ", 100*c/ceilC)
		}
		fmt.Fprintf(&b, "Against the raw session (%.0f MB/s, %.1f CPU-s per GB), the WebSocket entry adds the `outpost connect` process (%.2f CPU-s per GB) "+
			"and %+.2f CPU-s per GB in the gateway; the agent's share changes by %+.2f.\n", raw, tr, ec[2], ec[0]-er[0], ec[1]-er[1])
	}
	if raw, conn := r.Throughput.Profiles[load.PathRaw], r.Throughput.Profiles[load.PathConnect]; raw != nil && conn != nil {
		var diffs []string
		for _, name := range categoryOrder(conn, raw) {
			if d := categoryPerGB(conn, name) - categoryPerGB(raw, name); d >= 0.1 {
				diffs = append(diffs, fmt.Sprintf("%s %+.2f", name, d))
			}
			if len(diffs) == 3 {
				break
			}
		}
		if len(diffs) > 0 {
			fmt.Fprintf(&b, "- In the gateway's profile, the WebSocket entry's extra CPU-s per GB are mostly: %s.\n", strings.Join(diffs, "; "))
		}
		if len(conn.Categories) > 0 {
			top := conn.Categories[0]
			fmt.Fprintf(&b, "- The gateway's largest cost on the `outpost connect` path is %s: %.0f%% of its CPU (%.2f CPU-s per GB).\n",
				top.Name, 100*top.Time.Seconds()/conn.Total.Seconds(), secPerGB(conn, top.Time))
		}
	}
	e, g, st, q := r.Setup.Latency[load.SetupEntry], r.Setup.Latency[load.SetupGateway], r.Setup.Latency[load.SetupStanding], r.Setup.Latency[load.SetupQUIC]
	if e.N > 0 && g.N > 0 && st.N > 0 && q.P50 > 0 {
		fmt.Fprintf(&b, "- Session setup on a warm standing connection takes %s at p50, %.1f × the raw quic-go stream open + echo (%s), "+
			"against %s for `DialAgent` inside the gateway (no entry, no token, no audit) and %s through a WebSocket of its own, "+
			"whose TCP and TLS handshakes alone take %s (direct TCP: %s).\n",
			ms(st.P50), float64(st.P50)/float64(q.P50), ms(q.P50), ms(g.P50), ms(e.P50),
			ms(r.Setup.TLSHandshake.P50), ms(r.Setup.Latency[load.SetupDirect].P50))
	}
	if n := int64(r.Idle); n > 0 && r.RSSIdle[0] > 0 {
		var parts []string
		for i, name := range []string{"gateway", "agent"} {
			per := float64(r.RSSIdle[i]-r.RSSBefore[i]) / float64(n)
			parts = append(parts, fmt.Sprintf("the %s starts at %s and adds %.1f KB per WebSocket session",
				name, mb(r.RSSBefore[i]), per/1e3))
		}
		fmt.Fprintf(&b, "- Memory: %s (see \"Memory per session\" below).\n", strings.Join(parts, "; "))
	}
	return b.String()
}

// categoryOrder lists the categories of a and b, a's order first.
func categoryOrder(a, b *load.Profile) []string {
	var out []string
	seen := map[string]bool{}
	for _, ps := range []*load.Profile{a, b} {
		for _, c := range ps.Categories {
			if !seen[c.Name] {
				seen[c.Name] = true
				out = append(out, c.Name)
			}
		}
	}
	return out
}

// secPerGB converts CPU time sampled in ps to seconds per 10^9 bytes
// carried.
func secPerGB(ps *load.Profile, d time.Duration) float64 {
	if ps.Bytes == 0 {
		return 0
	}
	return d.Seconds() / (float64(ps.Bytes) / 1e9)
}

// categoryPerGB is the CPU-s per GB of one kind of work in ps (0 if none).
func categoryPerGB(ps *load.Profile, category string) float64 {
	for _, c := range ps.Categories {
		if c.Name == category {
			return secPerGB(ps, c.Time)
		}
	}
	return 0
}

// totalPerGB is the CPU-s per GB of all of ps.
func totalPerGB(ps *load.Profile) float64 { return secPerGB(ps, ps.Total) }

func ratioText(x, y float64) string {
	if y == 0 {
		return "—"
	}
	return fmt.Sprintf("%.2f", x/y)
}

// setupSection splits a session through the WebSocket entry into its steps
// and shows the gateway's CPU per session.
func (r *Results) setupSection() string {
	var b strings.Builder
	ph, g := r.Setup.WSPhases, r.Setup.Latency[load.SetupGateway]
	if ph[0].N == 0 {
		return ""
	}
	b.WriteString("\n### Session setup through the WebSocket entry\n\n")
	fmt.Fprintf(&b, "The %s timed sessions through the entry, step by step as the client library saw them (p50 / p99):\n\n", thousands(int64(ph[0].N)))
	b.WriteString("| Step | What happens | p50 | p99 |\n|---|---|---|---|\n")
	fmt.Fprintf(&b, "| open | TCP connect, TLS 1.3 handshake (the client library resumes the TLS session after its first one, which still costs a key exchange; a bare TCP + full TLS handshake with the gateway's port takes p50 %s, p99 %s), HTTP upgrade; the gateway checks the token and counts its use before it upgrades (one synchronous SQLite commit, synchronous=FULL; a 4 KiB write + fsync here: p50 %s) | %s | %s |\n",
		ms(r.Setup.TLSHandshake.P50), ms(r.Setup.TLSHandshake.P99), ms(r.Fsync.P50), ms(ph[0].P50), ms(ph[0].P99))
	fmt.Fprintf(&b, "| first byte echoed | the gateway routes, opens the QUIC stream, the agent dials the target and answers (what `DialAgent` does: p50 %s with its echo and close), then the byte's round trip; the session's audit record is only queued (the audit writer commits it in a batch within 100 ms, off the session's path) | %s | %s |\n",
		ms(g.P50), ms(ph[1].P50), ms(ph[1].P99))
	fmt.Fprintf(&b, "| close | the WebSocket close handshake through the gateway's relay | %s | %s |\n", ms(ph[2].P50), ms(ph[2].P99))
	ps := r.Setup.Profile
	if ps == nil || ps.Sessions == 0 {
		return b.String()
	}
	perSession := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) / float64(ps.Sessions) }
	fmt.Fprintf(&b, "\nThe gateway's CPU while those sessions (and their warm-up) ran: %.3f ms per session, by kind of work:\n\n", perSession(ps.Total))
	b.WriteString("| Kind of work | CPU-ms per session | share |\n|---|---|---|\n")
	for _, c := range ps.Categories {
		fmt.Fprintf(&b, "| %s | %.3f | %.0f%% |\n", c.Name, perSession(c.Time), 100*c.Time.Seconds()/ps.Total.Seconds())
	}
	return b.String()
}

// memorySection splits the memory figures per session.
func (r *Results) memorySection() string {
	var b strings.Builder
	n := int64(r.Idle)
	if n == 0 || r.RSSIdle[0] == 0 {
		return ""
	}
	kb := func(x int64) string { return fmt.Sprintf("%.1f KB", float64(x)/1e3/float64(n)) }
	g0, g1 := r.GwRuntime[0], r.GwRuntime[1]
	b.WriteString("\n### Memory per session\n\n")
	fmt.Fprintf(&b, "With %s idle sessions through the WebSocket entry, the gateway's RSS grew by %s (%s per session): %s more goroutines "+
		"(%.1f per session), heap in use +%s (%s per session: TLS connection, HTTP and WebSocket state and buffers, relay), "+
		"stacks +%s (%s per session). The agent's RSS grew by %s (%s per session).\n",
		thousands(n), mb(r.RSSIdle[0]-r.RSSBefore[0]), kb(r.RSSIdle[0]-r.RSSBefore[0]), thousands(int64(g1.Goroutines-g0.Goroutines)),
		float64(g1.Goroutines-g0.Goroutines)/float64(n), mb(int64(g1.HeapInuse)-int64(g0.HeapInuse)), kb(int64(g1.HeapInuse)-int64(g0.HeapInuse)),
		mb(int64(g1.StackInuse)-int64(g0.StackInuse)), kb(int64(g1.StackInuse)-int64(g0.StackInuse)),
		mb(r.RSSIdle[1]-r.RSSBefore[1]), kb(r.RSSIdle[1]-r.RSSBefore[1]))
	if r.GwHeap != nil {
		fmt.Fprintf(&b, "\nThe gateway's live heap with those sessions (heap profile after a GC: %s), by allocating function:\n\n", mb(r.GwHeap.Total))
		b.WriteString(heapTable(r.GwHeap, n))
	}
	for _, c := range r.CapRuns {
		if c.AgentRuntime == nil || c.Stats.Opened == 0 {
			continue
		}
		per := func(x uint64) string { return fmt.Sprintf("%.1f KB", float64(x)/1e3/float64(c.Stats.Opened)) }
		fmt.Fprintf(&b, "\nAt the capacity peak (%s, %s sessions held; the gateway holds them with `DialAgent`, without an entry), "+
			"the library agent had %s goroutines, heap in use %s (%s per session) and stacks %s (%s per session), RSS %s; "+
			"the gateway had heap in use %s (%s per session) and RSS %s.\n",
			c.What, thousands(int64(c.Stats.Opened)), thousands(int64(c.AgentRuntime.Goroutines)),
			mb(int64(c.AgentRuntime.HeapInuse)), per(c.AgentRuntime.HeapInuse), mb(int64(c.AgentRuntime.StackInuse)), per(c.AgentRuntime.StackInuse),
			mb(c.RSS[1]), mb(int64(c.GwRuntime.HeapInuse)), per(c.GwRuntime.HeapInuse), mb(c.RSS[0]))
		if c.AgentHeap != nil {
			fmt.Fprintf(&b, "\nThe library agent's live heap there (heap profile after a GC: %s), by allocating function:\n\n", mb(c.AgentHeap.Total))
			b.WriteString(heapTable(c.AgentHeap, int64(c.Stats.Opened)))
		}
	}
	return b.String()
}

// heapSites is how many allocating functions a heap table lists.
const heapSites = 10

// heapTable lists the largest allocating functions of hs, and their
// bytes per session for n sessions (the heap's baseline included).
func heapTable(hs *proc.HeapSummary, n int64) string {
	var b strings.Builder
	b.WriteString("| Allocated by | live heap | per session (live heap ÷ sessions, baseline included) | share |\n|---|---|---|---|\n")
	for i, s := range hs.Sites {
		if i == heapSites {
			break
		}
		fmt.Fprintf(&b, "| `%s` | %s | %.1f KB | %.0f%% |\n", s.Name, mb(s.Bytes), float64(s.Bytes)/1e3/float64(n), 100*float64(s.Bytes)/float64(hs.Total))
	}
	return b.String()
}
