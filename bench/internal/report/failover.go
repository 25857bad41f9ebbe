package report

import (
	"fmt"
	"time"

	"github.com/outposthq/outpost/bench/internal/load"
)

// targetFailoverP99 is the most a session may take to open in the seconds
// after the agent routing prefers was killed.
const targetFailoverP99 = 3 * time.Second

// targetDetection is the most the gateway may take to show a killed idle
// agent unresponsive (skipped by routing, so shown by ListAgents).
const targetDetection = 5 * time.Second

// failoverRows are the setup of the sessions after a kill -9 of the
// preferred agent, and the liveness cost of idle agents (none when the
// failover phase did not run).
func (r *Results) failoverRows() []row {
	var rows []row
	if f := r.Failover; f.Latency.N+f.Failed > 0 {
		what := fmt.Sprintf("Session setup %%s, started in the %v after kill -9 of the preferred agent (%d, one every %v, WebSocket entry, routed)",
			load.FailoverWindow, f.Latency.N+f.Failed, load.FailoverEvery)
		failed := fmt.Sprintf("; %d failed", f.Failed)
		if f.Failed > 0 {
			failed += ": " + f.FirstError
		}
		rows = append(rows, row{fmt.Sprintf(what, "p50"), ms(f.Latency.P50) + failed, "— (none set)", "—"})
		ok := f.Latency.P99 <= targetFailoverP99 && f.Failed == 0
		rows = append(rows, row{fmt.Sprintf(what, "p99"), fmt.Sprintf("%s (max %s)%s", ms(f.Latency.P99), ms(f.Latency.Max), failed),
			"≤ " + ms(targetFailoverP99) + ", none failed",
			fmt.Sprintf("%.2f × target — %s", float64(f.Latency.P99)/float64(targetFailoverP99), verdict(ok))})
	}
	if d := r.Detection; d > 0 {
		rows = append(rows, row{"kill -9 of an idle agent → shown unresponsive by the gateway's API (liveness)", fmt.Sprintf("%.2f s", d.Seconds()),
			fmt.Sprintf("≤ %.0f s", targetDetection.Seconds()), fmt.Sprintf("%.2f × target — %s", float64(d)/float64(targetDetection), verdict(d <= targetDetection))})
	}
	if c := r.IdleCost; c.Agents > 0 && r.ClockHz > 0 {
		from := fmt.Sprintf("extrapolated from %d idle agents over %v", c.Agents, c.Window)
		rows = append(rows, row{
			"Liveness traffic per 1,000 idle agents (the gateway's keep-alive PINGs and their ACKs, periodic control messages)",
			fmt.Sprintf("%.0f packets/s (%.0f to the gateway, %.0f from it; %.2f per agent), %.1f kB/s of UDP payload; %s",
				c.Per1000(c.PacketsIn+c.PacketsOut), c.Per1000(c.PacketsIn), c.Per1000(c.PacketsOut),
				c.Per1000(c.PacketsIn+c.PacketsOut)/1000, c.Per1000(c.BytesIn+c.BytesOut)/1e3, from),
			"— (none set)", "—"})
		hz := float64(r.ClockHz)
		rows = append(rows, row{
			"CPU per 1,000 idle agents, in cores",
			fmt.Sprintf("gateway %.3f (its own, %.3f, taken off: measured with none as long before); the agents %.2f in all; %s",
				c.Per1000(c.GatewayTicks-c.BaseTicks)/hz, float64(c.BaseTicks)/hz/c.Window.Seconds(), c.Per1000(c.AgentTicks)/hz, from),
			"— (none set)", "—"})
	}
	return rows
}
