package report

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/outposthq/outpost/bench/internal/load"
)

// The cluster issue's targets for the peer hop, as ratios in the same run.
const (
	// targetHopRTTs is how many QUIC round trips the peer hop may add to
	// session setup: forwarded pX − local pX ≤ this × the raw quic-go
	// stream open + echo pX (p50 and p99 each).
	targetHopRTTs = 1.0
	// targetHopThroughput is the least part of the local single-session
	// throughput a forwarded session carries (each direction).
	targetHopThroughput = 0.8
)

// clusterRows are the cluster part's: the QUIC round trip, session setup
// and throughput local vs through a peer hop, and how soon HA agents are
// back at K after a kill -9 of a replica. One row says why the part did not
// run; none if it was not asked for.
func (r *Results) clusterRows() []row {
	c := r.Cluster
	if c == nil {
		return nil
	}
	if c.Skipped != "" {
		return []row{{"Cluster part (replicas on PostgreSQL: peer hop, kill -9 of a replica)", "not run: " + c.Skipped,
			"— (needs the PostgreSQL server binaries; as root, the postgres user)", "—"}}
	}
	var rows []row
	rtt := c.RTT
	rows = append(rows, row{fmt.Sprintf("Cluster: QUIC round trip on loopback (raw quic-go stream open + echo, two processes, %s sequential)", thousands(int64(rtt.N))),
		fmt.Sprintf("p50 %s, p99 %s", ms(rtt.P50), ms(rtt.P99)), "— (reference: the unit of the hop's setup target)", "—"})
	rows = append(rows, hopSetupRows(c.Setup, rtt, "standing connection of the connect library: stream + echo + close", true)...)
	rows = append(rows, hopSetupRows(c.Gateway, rtt, "in the entry replica: DialAgent + echo + close", false)...)
	for d := range load.NumDirs {
		local := median(c.MBps[d][load.HopLocal])
		for h := range load.NumHops {
			xs := c.MBps[d][h]
			fig := fmt.Sprintf("%.0f MB/s", median(xs))
			if len(xs) > 1 {
				fig += fmt.Sprintf(" (median of %d: %.0f–%.0f)", len(xs), slices.Min(xs), slices.Max(xs))
			}
			fig += r.hopCPU(c.CPU[d][h])
			what := fmt.Sprintf("Cluster throughput %s, %s, single session via the connect library, %s", d, binarySize(c.Bytes), load.Hop(h))
			if h == load.HopLocal {
				rows = append(rows, row{what, fig, "— (reference)", "—"})
				continue
			}
			v := "—"
			if local > 0 {
				ratio := median(xs) / local
				v = fmt.Sprintf("%.2f × local — %s", ratio, verdict(ratio >= targetHopThroughput))
			}
			rows = append(rows, row{what, fig, fmt.Sprintf("≥ %.1f × local", targetHopThroughput), v})
		}
	}
	return append(rows, r.rehomeRow())
}

// hopCPU describes the CPU-seconds per GB each process spent on a path's
// transfers, their total, and the throughput ceiling that sets on this
// machine's cores ("" when not measured).
func (r *Results) hopCPU(c load.CPUTotals) string {
	if c.Bytes == 0 || r.ClockHz == 0 {
		return ""
	}
	var parts []string
	var total float64
	for i, name := range load.ClusterProcesses {
		v := perGB(c.Ticks[i], c.Bytes, r.ClockHz)
		parts = append(parts, fmt.Sprintf("%s %.2f", name, v))
		total += v
	}
	s := fmt.Sprintf("; CPU-s per GB: %s; all %.2f", strings.Join(parts, ", "), total)
	if total > 0 && r.Machine.CPUs > 0 {
		s += fmt.Sprintf(" (ceiling on %d cores: %.0f MB/s)", r.Machine.CPUs, float64(r.Machine.CPUs)/total*1e3)
	}
	return s
}

// hopSetupRows are the p50 and p99 of sessions opened local and through
// the peer hop; judged says whether the hop's cost is held to the target
// (else it is shown for comparison).
func hopSetupRows(st [load.NumHops]load.Stats, rtt load.Stats, how string, judged bool) []row {
	var rows []row
	for _, q := range []struct {
		name            string
		local, hop, ref time.Duration
	}{
		{"p50", st[load.HopLocal].P50, st[load.HopPeer].P50, rtt.P50},
		{"p99", st[load.HopLocal].P99, st[load.HopPeer].P99, rtt.P99},
	} {
		what := func(h load.Hop) string {
			return fmt.Sprintf("Cluster session setup %s, %s (%s; %s sequential)", q.name, h, how, thousands(int64(st[h].N)))
		}
		rows = append(rows, row{what(load.HopLocal), ms(q.local), "— (reference)", "—"})
		added := q.hop - q.local
		v := fmt.Sprintf("the hop adds %s", ms(added))
		if q.ref > 0 {
			ratio := float64(added) / float64(q.ref)
			v += fmt.Sprintf(" = %.2f QUIC round trips (%s)", ratio, ms(q.ref))
			if judged {
				v += " — " + verdict(ratio <= targetHopRTTs)
			}
		}
		target := "— (comparison)"
		if judged {
			target = fmt.Sprintf("≤ local + %.0f QUIC round trip (%s − local %s ≤ raw quic-go %s)", targetHopRTTs, q.name, q.name, q.name)
		}
		rows = append(rows, row{what(load.HopPeer), ms(q.hop), target, v})
	}
	return rows
}

// rehomeRow is the time from the kill -9 of a replica until every agent it
// held is back at K surviving replicas.
func (r *Results) rehomeRow() row {
	h := r.Cluster.Rehome
	what := fmt.Sprintf("Cluster: kill -9 of the replica holding the most agents (%d agents, --ha-connections %d, %d replicas behind a round-robin UDP balancer that drops the dead one at once) → every agent back at %d surviving replicas",
		h.Agents, h.K, h.Replicas, h.K)
	fig := fmt.Sprintf("%d agents were on it: back after p50 %.2f s, max %.2f s", h.Affected, h.Times.P50.Seconds(), h.Times.Max.Seconds())
	if h.Missing > 0 {
		fig += fmt.Sprintf("; %d not back within %v", h.Missing, h.Limit)
	}
	fig += fmt.Sprintf(" (the survivors' API polled every %v; includes the replicas' QUIC idle timeout, %v, by which an agent notices a replica that died without a word)",
		h.Poll, h.IdleTimeout)
	v := "—"
	if h.Missing > 0 {
		v = "FAIL: not all back"
	}
	return row{what, fig, "— (none set; all back within the run's limit)", v}
}
