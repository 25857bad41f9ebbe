package main

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/outposthq/outpost/bench/internal/proc"
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
	st := summarize(in)
	want := latencyStats{N: 5, P50: 3, P99: 5, Mean: 3, Max: 5}
	if st != want {
		t.Errorf("summarize = %+v, want %+v", st, want)
	}
	if in[0] != 5 || in[1] != 1 {
		t.Errorf("summarize sorted its input: %v", in)
	}
}

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

// TestReadHeader checks that the entry keeps the bytes a client sends right
// after its header line, in the same segment.
func TestReadHeader(t *testing.T) {
	tests := []struct {
		name      string
		send      string
		wantAgent string
		wantTgt   string
		wantEarly string
		wantErr   bool
	}{
		{"header only", "agent-1 127.0.0.1:80\n", "agent-1", "127.0.0.1:80", "", false},
		{"header and data", "agent-1 127.0.0.1:80\nxyz", "agent-1", "127.0.0.1:80", "xyz", false},
		{"one field", "agent-1\n", "", "", "", true},
		{"three fields", "a b c\n", "", "", "", true},
		{"no newline", "agent-1 127.0.0.1:80", "", "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			client, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			server, err := ln.AcceptTCP()
			if err != nil {
				t.Fatal(err)
			}
			defer server.Close()
			if _, err := client.Write([]byte(tt.send)); err != nil {
				t.Fatal(err)
			}
			client.(*net.TCPConn).CloseWrite()
			agent, target, early, err := readHeader(server)
			if (err != nil) != tt.wantErr {
				t.Fatalf("readHeader error = %v, want error %v", err, tt.wantErr)
			}
			if tt.wantErr {
				return
			}
			if agent != tt.wantAgent || target != tt.wantTgt || string(early) != tt.wantEarly {
				t.Errorf("readHeader = %q, %q, %q; want %q, %q, %q", agent, target, early, tt.wantAgent, tt.wantTgt, tt.wantEarly)
			}
		})
	}
}

func TestParseListening(t *testing.T) {
	tests := []struct {
		line string
		want string
		ok   bool
	}{
		{"listening on 127.0.0.1:40123; Ctrl-C to stop\n", "127.0.0.1:40123", true},
		{"listening on 127.0.0.1:40123; the token is single-use: serving one connection\n", "127.0.0.1:40123", true},
		{"listening on [::1]:22\n", "[::1]:22", true},
		{"2026-01-01T00:00:00Z [WARN]  connect: something\n", "", false},
		{"listening on \n", "", false},
	}
	for _, tt := range tests {
		got, ok := parseListening(tt.line)
		if got != tt.want || ok != tt.ok {
			t.Errorf("parseListening(%q) = %q, %v; want %q, %v", tt.line, got, ok, tt.want, tt.ok)
		}
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
	want := []lookupBench{
		{name: "LookupIP", iterations: 3848348, nsPerOp: 329.5, bytesPerOp: 0, allocsPerOp: 0},
		{name: "LookupName", iterations: 5021178, nsPerOp: 269.6, bytesPerOp: 16, allocsPerOp: 1},
		{name: "NoMem", iterations: 100, nsPerOp: 12, bytesPerOp: -1, allocsPerOp: -1},
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

func TestThousands(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 10000: "10,000", 1234567: "1,234,567", -4096: "-4,096"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestMuxTarget runs each exchange through the mux target, as sessions
// through `outpost connect` do.
func TestMuxTarget(t *testing.T) {
	tg, err := startTargets(time.Now().Add(time.Minute), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer tg.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dial := func() *net.TCPConn {
		t.Helper()
		c, err := dialTCP(ctx, tg.muxAddr())
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
	if err := echoSession(ctx, tg.muxAddr(), []byte{modeEcho}); err != nil {
		t.Errorf("echo: %v", err)
	}
}

func TestCapacityRowsQuick(t *testing.T) {
	r := &results{settings: settingsFor(true)}
	r.capRuns = []capacityResult{{what: "x", streamLimit: 4096, stats: capacityStats{Attempted: 2000, Opened: 2000}, agentGoroutines: -1}}
	rows := r.capacityRows()
	if len(rows) != 1 || !strings.Contains(rows[0].verdict, "capped") || strings.Contains(rows[0].figure, "goroutines; agent RSS 0.0 MB,") {
		t.Errorf("quick capacity row = %+v", rows)
	}
	r = &results{settings: settingsFor(false)}
	r.capRuns = []capacityResult{{what: "x", streamLimit: 4096, stats: capacityStats{Attempted: 4097, Opened: 4096, Stop: "no credit"}, agentGoroutines: -1}}
	rows = r.capacityRows()
	if len(rows) != 1 || !strings.Contains(rows[0].verdict, "0.41 × target — FAIL") || !strings.Contains(rows[0].figure, "4,096 of 10,000") {
		t.Errorf("full capacity row = %+v", rows)
	}
}

// TestProfilePerGB checks the CPU-s per GB of a profile's categories and
// total.
func TestProfilePerGB(t *testing.T) {
	ps := &profileSummary{CPUProfile: proc.CPUProfile{
		Total: 2500 * time.Millisecond,
		Categories: []proc.CategoryTime{
			{Name: "system calls", Time: 1200 * time.Millisecond},
			{Name: "cryptography", Time: 500 * time.Millisecond},
			{Name: "other", Time: 200 * time.Millisecond},
		},
	}, bytes: 1e9}
	if got := ps.perGB("cryptography"); got != 0.5 {
		t.Errorf("cryptography per GB = %v, want 0.5", got)
	}
	if got := ps.perGB("other"); got != 0.2 {
		t.Errorf("other per GB = %v, want 0.2", got)
	}
	if got := ps.perGB("not there"); got != 0 {
		t.Errorf("unknown category per GB = %v, want 0", got)
	}
	if got := ps.totalPerGB(); got != 2.5 {
		t.Errorf("total per GB = %v, want 2.5", got)
	}
	ps.bytes = 0
	if got := ps.totalPerGB(); got != 0 {
		t.Errorf("total per GB with no bytes = %v, want 0", got)
	}
}
