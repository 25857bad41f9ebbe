package load

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

func TestPercentile(t *testing.T) {
	ms := func(xs ...int) []time.Duration {
		out := make([]time.Duration, len(xs))
		for i, x := range xs {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	thousand := make([]int, 1000)
	for i := range thousand {
		thousand[i] = i + 1
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample p50", ms(7), 50, 7 * time.Millisecond},
		{"one sample p99", ms(7), 99, 7 * time.Millisecond},
		{"two samples p50 is the lower", ms(1, 2), 50, time.Millisecond},
		{"odd count p50 is the middle", ms(1, 2, 3), 50, 2 * time.Millisecond},
		{"1..100 p50", ms(hundred...), 50, 50 * time.Millisecond},
		{"1..100 p99", ms(hundred...), 99, 99 * time.Millisecond},
		{"1..100 p100", ms(hundred...), 100, 100 * time.Millisecond},
		{"1..1000 p99 is the 990th", ms(thousand...), 99, 990 * time.Millisecond},
		{"1..1000 p99.9", ms(thousand...), 99.9, 999 * time.Millisecond},
		{"tiny p is the minimum", ms(4, 5, 6), 0.001, 4 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("percentile(%v) = %v, want %v", tt.p, got, tt.want)
			}
		})
	}
}

func TestSummarizeDoesNotReorder(t *testing.T) {
	in := []time.Duration{5, 1, 4, 2, 3}
	st := Summarize(in)
	want := Stats{N: 5, P50: 3, P99: 5, Mean: 3, Max: 5}
	if st != want {
		t.Errorf("summarize = %+v, want %+v", st, want)
	}
	if in[0] != 5 || in[1] != 1 {
		t.Errorf("summarize sorted its input: %v", in)
	}
}

// TestMuxTarget runs each exchange through the mux target, as sessions
// through `outpost connect` do.
func TestMuxTarget(t *testing.T) {
	tg, err := StartTargets(time.Now().Add(time.Minute), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dial := func() *net.TCPConn {
		t.Helper()
		c, err := dialTCP(ctx, tg.MuxAddr())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		return c
	}
	c := dial()
	if err := upload(c, []byte{modeSink}, 1<<20+3); err != nil {
		t.Errorf("upload: %v", err)
	}
	c.Close()
	c = dial()
	if err := download(c, []byte{modeSource}, 1<<20+5); err != nil {
		t.Errorf("download: %v", err)
	}
	c.Close()
	if err := echoSession(ctx, tg.MuxAddr(), []byte{modeEcho}); err != nil {
		t.Errorf("echo: %v", err)
	}
}

// TestHold checks that Hold opens exactly n sessions when all succeed,
// stops at the first failure, and reports the time limit.
func TestHold(t *testing.T) {
	ctx := context.Background()
	var opened atomic.Int64
	ok := func(context.Context) (int, error) { return int(opened.Add(1)), nil }
	held, st := Hold(ctx, 100, 8, time.Minute, ok)
	if len(held) != 100 || st.Opened != 100 || st.Attempted != 100 || st.Stop != "" || opened.Load() != 100 {
		t.Errorf("all succeed: %d held, %+v, %d opened", len(held), st, opened.Load())
	}

	var calls atomic.Int64
	failing := func(context.Context) (int, error) {
		if calls.Add(1) == 10 {
			return 0, errors.New("no credit")
		}
		return 1, nil
	}
	held, st = Hold(ctx, 100, 1, time.Minute, failing)
	if len(held) != 9 || st.Opened != 9 || st.Attempted != 10 || st.Stop != "session 10: no credit" {
		t.Errorf("tenth fails: %d held, %+v", len(held), st)
	}

	blocking := func(ctx context.Context) (int, error) {
		<-ctx.Done()
		return 0, ctx.Err()
	}
	held, st = Hold(ctx, 5, 2, 10*time.Millisecond, blocking)
	if len(held) != 0 || st.Opened != 0 || !strings.Contains(st.Stop, "deadline exceeded") {
		t.Errorf("blocked: %d held, %+v", len(held), st)
	}
	_, st = Hold(ctx, 5, 2, time.Nanosecond, ok)
	if st.Opened == 5 || st.Stop != "time limit (1ns) reached" {
		t.Errorf("no time: %+v, want the time limit", st)
	}
}

func TestParseBenchOutput(t *testing.T) {
	const out = `goos: linux
goarch: amd64
pkg: github.com/outposthq/outpost/server/internal/routing
cpu: AMD EPYC
BenchmarkLookupIP-2           	 3848348	       329.5 ns/op	       0 B/op	       0 allocs/op
BenchmarkLookupName-2         	 5021178	       269.6 ns/op	      16 B/op	       1 allocs/op
BenchmarkBroken-2             	 x	       1 ns/op
BenchmarkNoMem	 100	 12 ns/op
PASS
ok  	github.com/outposthq/outpost/server/internal/routing	5.271s
`
	got := parseBenchOutput(out)
	want := []LookupBench{
		{Name: "LookupIP", Iterations: 3848348, NsPerOp: 329.5, BytesPerOp: 0, AllocsPerOp: 0},
		{Name: "LookupName", Iterations: 5021178, NsPerOp: 269.6, BytesPerOp: 16, AllocsPerOp: 1},
		{Name: "NoMem", Iterations: 100, NsPerOp: 12, BytesPerOp: -1, AllocsPerOp: -1},
	}
	if len(got) != len(want) {
		t.Fatalf("parseBenchOutput = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d: %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestStoreBenches(t *testing.T) {
	const out = `pkg: github.com/outposthq/outpost/server/internal/store
BenchmarkUseSessionToken/sqlite-2         	     100	  17564505 ns/op	        56.94 ops/s	       177.6 p99-ms
BenchmarkRecordSessions/postgres-2        	     100	  11044424 ns/op	        99.41 p99-ms	        64.00 rows/op	      5795 rows/s
BenchmarkNoRate/sqlite-2        	     100	  11044424 ns/op	        99.41 p99-ms
BenchmarkLookupIP-2           	 3848348	       329.5 ns/op	       0 B/op	       0 allocs/op
PASS
`
	got := storeBenches(parseBench(out))
	want := []StoreBench{
		{Name: StoreTokenUse, Backend: "sqlite", Rate: 56.94, Unit: "ops/s", P99Ms: 177.6},
		{Name: StoreAuditBatch, Backend: "postgres", Rate: 5795, Unit: "rows/s", P99Ms: 99.41, Batch: 64},
	}
	if !slices.Equal(got, want) {
		t.Errorf("storeBenches = %+v, want %+v", got, want)
	}
}

func TestRehomeTimes(t *testing.T) {
	back := map[string]time.Duration{"a": 3 * time.Second, "b": time.Second, "c": 2 * time.Second}
	st, missing := RehomeTimes([]string{"a", "b", "d"}, back)
	if missing != 1 || st.N != 2 || st.P50 != time.Second || st.Max != 3*time.Second {
		t.Errorf("RehomeTimes = %+v, missing %d; want 2 agents (p50 1 s, max 3 s), 1 missing", st, missing)
	}
}

func TestHeldBy(t *testing.T) {
	alive := func(id string) bool { return id != "dead" }
	for _, tt := range []struct {
		ids  []string
		want int
	}{
		{nil, 0},
		{[]string{"r1", "r2"}, 2},
		{[]string{"r1", "dead"}, 1},
		{[]string{"r1", "r1", "dead", "r2"}, 2},
	} {
		if got := HeldBy(tt.ids, alive); got != tt.want {
			t.Errorf("HeldBy(%v) = %d, want %d", tt.ids, got, tt.want)
		}
	}
}
