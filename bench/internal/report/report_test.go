package report

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/outposthq/outpost/bench/internal/load"
	"github.com/outposthq/outpost/bench/internal/proc"
)

func TestMedian(t *testing.T) {
	tests := []struct {
		xs   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{3, 1}, 2},
		{[]float64{9, 1, 5}, 5},
		{[]float64{4, 1, 3, 2}, 2.5},
	}
	for _, tt := range tests {
		if got := median(tt.xs); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.xs, got, tt.want)
		}
	}
}

func TestPerGB(t *testing.T) {
	// 250 ticks at 100 Hz for 0.5 GB is 5 CPU-seconds per GB.
	if got := perGB(250, 500_000_000, 100); got != 5 {
		t.Errorf("perGB = %v, want 5", got)
	}
	if got := perGB(250, 0, 100); got != 0 {
		t.Errorf("perGB with no bytes = %v, want 0", got)
	}
}

func TestThousands(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 10000: "10,000", 1234567: "1,234,567", -4096: "-4,096"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestCapacityRowsQuick(t *testing.T) {
	r := &Results{Settings: load.SettingsFor(true)}
	r.CapRuns = []load.CapacityResult{{What: "x", StreamLimit: 4096, Stats: load.HoldStats{Attempted: 2000, Opened: 2000}, AgentGoroutines: -1}}
	rows := r.capacityRows()
	if len(rows) != 1 || !strings.Contains(rows[0].verdict, "capped") || strings.Contains(rows[0].figure, "goroutines; agent RSS 0.0 MB,") {
		t.Errorf("quick capacity row = %+v", rows)
	}
	r = &Results{Settings: load.SettingsFor(false)}
	r.CapRuns = []load.CapacityResult{{What: "x", StreamLimit: 4096, Stats: load.HoldStats{Attempted: 4097, Opened: 4096, Stop: "no credit"}, AgentGoroutines: -1}}
	rows = r.capacityRows()
	if len(rows) != 1 || !strings.Contains(rows[0].verdict, "0.41 × target — FAIL") || !strings.Contains(rows[0].figure, "4,096 of 10,000") {
		t.Errorf("full capacity row = %+v", rows)
	}
}

// TestProfilePerGB checks the CPU-s per GB of a profile's categories and
// total.
func TestProfilePerGB(t *testing.T) {
	ps := &load.Profile{CPUProfile: proc.CPUProfile{
		Total: 2500 * time.Millisecond,
		Categories: []proc.CategoryTime{
			{Name: "system calls", Time: 1200 * time.Millisecond},
			{Name: "cryptography", Time: 500 * time.Millisecond},
			{Name: "other", Time: 200 * time.Millisecond},
		},
	}, Bytes: 1e9}
	if got := categoryPerGB(ps, "cryptography"); got != 0.5 {
		t.Errorf("cryptography per GB = %v, want 0.5", got)
	}
	if got := categoryPerGB(ps, "other"); got != 0.2 {
		t.Errorf("other per GB = %v, want 0.2", got)
	}
	if got := categoryPerGB(ps, "not there"); got != 0 {
		t.Errorf("unknown category per GB = %v, want 0", got)
	}
	if got := totalPerGB(ps); got != 2.5 {
		t.Errorf("total per GB = %v, want 2.5", got)
	}
	ps.Bytes = 0
	if got := totalPerGB(ps); got != 0 {
		t.Errorf("total per GB with no bytes = %v, want 0", got)
	}
}

// TestFailoverRows checks the failover verdict (p99 and no failure) and
// the extrapolation of the idle cost to 1,000 agents.
func TestFailoverRows(t *testing.T) {
	r := &Results{ClockHz: 100}
	r.Failover = load.FailoverSetup{Latency: load.Stats{N: 150, P50: 5 * time.Millisecond, P99: time.Second, Max: time.Second}}
	r.IdleCost = load.IdleCost{Agents: 10, Window: 10 * time.Second, PacketsIn: 150, PacketsOut: 100,
		BytesIn: 5000, BytesOut: 3000, GatewayTicks: 12, BaseTicks: 2, AgentTicks: 5}
	rows := r.failoverRows()
	if len(rows) != 4 {
		t.Fatalf("%d rows, want 4: %+v", len(rows), rows)
	}
	if !strings.Contains(rows[1].verdict, "0.33 × target — PASS") {
		t.Errorf("p99 row = %+v", rows[1])
	}
	if !strings.Contains(rows[2].figure, "2500 packets/s (1500 to the gateway, 1000 from it; 2.50 per agent), 80.0 kB/s") {
		t.Errorf("traffic row = %+v", rows[2])
	}
	if !strings.Contains(rows[3].figure, "gateway 1.000 (its own, 0.002,") || !strings.Contains(rows[3].figure, "the agents 0.50 in all") {
		t.Errorf("CPU row = %+v", rows[3])
	}
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{{3200 * time.Millisecond, "0.64 × target — PASS"}, {5100 * time.Millisecond, "1.02 × target — FAIL"}} {
		r.Detection = tc.d
		rows := r.failoverRows()
		if len(rows) != 5 || rows[2].figure != fmt.Sprintf("%.2f s", tc.d.Seconds()) || rows[2].verdict != tc.want {
			t.Errorf("detection %v: rows %+v", tc.d, rows)
		}
	}
	r.Detection = 0
	r.Failover.Failed, r.Failover.FirstError = 1, "boom"
	if rows := r.failoverRows(); !strings.Contains(rows[1].verdict, "FAIL") || !strings.Contains(rows[1].figure, "1 failed: boom") {
		t.Errorf("p99 row with a failure = %+v", rows[1])
	}
	if rows := (&Results{}).failoverRows(); len(rows) != 0 {
		t.Errorf("no failover phase: %+v", rows)
	}
}

func TestStoreRows(t *testing.T) {
	r := &Results{StoreWrites: []load.StoreBench{
		{Name: load.StoreTokenUse, Backend: "sqlite", Rate: 1234.4, Unit: "ops/s", P99Ms: 2.5},
		{Name: load.StoreAuditBatch, Backend: "sqlite", Rate: 45678, Unit: "rows/s", P99Ms: 3.25, Batch: 64},
	}}
	rows := r.storeRows()
	if len(rows) != 6 {
		t.Fatalf("%d store rows, want 6: %+v", len(rows), rows)
	}
	for i, want := range []string{
		"1,234 ops/s; p99 2.500 ms per token",
		"not run: no PostgreSQL server binaries",
		"45,678 rows/s; p99 3.250 ms per batch of 64",
		"not run: no PostgreSQL",
		"not run",
		"not run: no PostgreSQL",
	} {
		if !strings.HasPrefix(rows[i].figure, want) {
			t.Errorf("row %d (%s): %q, want %q", i, rows[i].what, rows[i].figure, want)
		}
	}
	if !strings.Contains(rows[0].what, "single-use session token consumption") || !strings.Contains(rows[1].what, "PostgreSQL") ||
		rows[4].target != "— (comparison)" {
		t.Errorf("rows %+v", rows)
	}
}

func TestStoreSetupRows(t *testing.T) {
	r := &Results{StoreSetups: []load.StoreBench{
		{Name: load.StoreSetup, Backend: "sqlite", Unit: "ops/s", P50Ms: 0.5, P99Ms: 2},
		{Name: load.StoreSetup, Backend: "postgres", Unit: "ops/s", P50Ms: 0.6, P99Ms: 2.6},
	}}
	rows := r.storeSetupRows()
	if len(rows) != 4 {
		t.Fatalf("%d rows, want 4: %+v", len(rows), rows)
	}
	if !strings.Contains(rows[1].verdict, "1.20 × SQLite — PASS") || !strings.Contains(rows[3].verdict, "1.30 × SQLite — FAIL") {
		t.Errorf("verdicts %q, %q", rows[1].verdict, rows[3].verdict)
	}
	r.StoreSetups = r.StoreSetups[:1]
	if rows := r.storeSetupRows(); !strings.HasPrefix(rows[1].figure, "not run: no PostgreSQL") {
		t.Errorf("without PostgreSQL: %+v", rows[1])
	}
}
