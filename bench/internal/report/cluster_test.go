package report

import (
	"strings"
	"testing"
	"time"

	"github.com/outposthq/outpost/bench/internal/load"
)

// The cluster rows judge the hop's added setup in QUIC round trips of the
// same run, and the forwarded throughput against the local one; a part
// that did not run is one row saying why; the table of a cluster-only run
// holds the cluster rows alone.
func TestClusterRows(t *testing.T) {
	if rows := (&Results{}).clusterRows(); len(rows) != 0 {
		t.Errorf("rows of a run without the cluster part: %+v", rows)
	}
	skipped := &Results{Cluster: &load.ClusterResult{Skipped: "no PostgreSQL server binaries"}}
	if rows := skipped.clusterRows(); len(rows) != 1 || !strings.Contains(rows[0].figure, "not run: no PostgreSQL") {
		t.Errorf("skipped part: %+v", rows)
	}

	stats := func(p50, p99 time.Duration) load.Stats { return load.Stats{N: 10, P50: p50, P99: p99, Max: p99} }
	c := &load.ClusterResult{
		RTT: stats(100*time.Microsecond, 400*time.Microsecond),
		// p50: + 80 µs, within one round trip; p99: + 500 µs, more.
		Setup:   [load.NumHops]load.Stats{stats(time.Millisecond, 2*time.Millisecond), stats(1080*time.Microsecond, 2500*time.Microsecond)},
		Gateway: [load.NumHops]load.Stats{stats(time.Millisecond, 2*time.Millisecond), stats(2*time.Millisecond, 4*time.Millisecond)},
		Bytes:   64 << 20,
		Rehome:  load.Rehome{Agents: 20, K: 2, Replicas: 3, Affected: 14, Missing: 1, Limit: time.Minute, Times: stats(6*time.Second, 7*time.Second)},
	}
	c.MBps[load.DirUp] = [load.NumHops][]float64{{100, 110, 90}, {85}}
	c.MBps[load.DirDown] = [load.NumHops][]float64{{100}, {70}}
	// 0.5 GB carried for 100 + 0 + 50 + 50 ticks at 100 Hz: 2, 0, 1 and 1
	// CPU-s per GB, 4 in all: 500 MB/s on 2 cores at most.
	c.CPU[load.DirUp][load.HopLocal] = load.CPUTotals{Ticks: [4]int64{100, 0, 50, 50}, Bytes: 500_000_000}
	r := &Results{Cluster: c, ClusterOnly: true, ClockHz: 100}
	r.Machine.CPUs = 2
	table := r.Table()
	for _, want := range []string{
		"the hop adds 0.080 ms = 0.80 QUIC round trips (0.100 ms) — PASS",
		"the hop adds 0.500 ms = 1.25 QUIC round trips (0.400 ms) — FAIL",
		"the hop adds 1.000 ms = 10.00 QUIC round trips (0.100 ms) |", // in the gateway: compared, not judged
		"100 MB/s (median of 3: 90–110); CPU-s per GB: replica A 2.00, replica B 0.00, agent 1.00, client + target 1.00; all 4.00 (ceiling on 2 cores: 500 MB/s)",
		"0.85 × local — PASS",
		"0.70 × local — FAIL",
		"14 agents were on it: back after p50 6.00 s, max 7.00 s; 1 not back within 1m0s",
		"FAIL: not all back",
	} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
	if strings.Contains(table, "Route lookup") || strings.Contains(table, "Throughput client") {
		t.Errorf("a cluster-only table holds other rows:\n%s", table)
	}
	if file := r.File(time.Unix(0, 0), "-only cluster"); strings.Contains(file, "Go runtime of the gateway child") {
		t.Errorf("a cluster-only file holds the single gateway's sections:\n%s", file)
	}
}
