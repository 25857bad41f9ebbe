package main

import (
	"context"
	"encoding/binary"
	"net"
	"strings"
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

func TestParseStatTicks(t *testing.T) {
	// Fields 14 and 15 are utime=250 and stime=75.
	const rest = " S 1 100 100 0 -1 4194560 12345 0 0 0 250 75 0 0 20 0 9 0 1000 123456789 2000 18446744073709551615"
	tests := []struct {
		name    string
		stat    string
		want    int64
		wantErr bool
	}{
		{"plain", "4242 (outpost)" + rest, 325, false},
		{"command with spaces and parentheses", "4242 (a) b (c d))" + rest, 325, false},
		{"no command", "4242 outpost S 1", 0, true},
		{"truncated", "4242 (outpost) S 1 100 100 0 -1 4194560 12345 0 0 0 250", 0, true},
		{"not a number", "4242 (outpost) S 1 100 100 0 -1 4194560 12345 0 0 0 x 75", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatTicks(tt.stat)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parseStatTicks = %d, %v; want %d, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestParseVmRSS(t *testing.T) {
	status := "Name:\toutpost\nVmPeak:\t  900000 kB\nVmRSS:\t   20480 kB\nRssAnon:\t 10000 kB\n"
	got, err := parseVmRSS([]byte(status))
	if err != nil || got != 20480<<10 {
		t.Errorf("parseVmRSS = %d, %v; want %d", got, err, 20480<<10)
	}
	for _, bad := range []string{"Name:\tkthreadd\n", "VmRSS:\t12 MB\n", "VmRSS:\tlots kB\n"} {
		if _, err := parseVmRSS([]byte(bad)); err == nil {
			t.Errorf("parseVmRSS(%q) succeeded", bad)
		}
	}
}

func TestAuxvValue(t *testing.T) {
	for _, word := range []int{4, 8} {
		var auxv []byte
		put := func(v uint64) {
			if word == 4 {
				auxv = binary.NativeEndian.AppendUint32(auxv, uint32(v))
			} else {
				auxv = binary.NativeEndian.AppendUint64(auxv, v)
			}
		}
		for _, kv := range [][2]uint64{{6, 4096}, {atClkTck, 250}, {0, 0}, {atClkTck, 999}} {
			put(kv[0])
			put(kv[1])
		}
		if v, ok := auxvValue(auxv, atClkTck, word); !ok || v != 250 {
			t.Errorf("word %d: AT_CLKTCK = %d, %v; want 250", word, v, ok)
		}
		if _, ok := auxvValue(auxv, 33, word); ok {
			t.Errorf("word %d: found a key after AT_NULL", word)
		}
		if _, ok := auxvValue(auxv[:word+1], 6, word); ok {
			t.Errorf("word %d: read a truncated pair", word)
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

func TestParsePprofTop(t *testing.T) {
	const out = `File: tunnel
Type: cpu
Duration: 30.5s, Total samples = 2.50s ( 8.20%)
Showing nodes accounting for 2.50s, 100% of 2.50s total
      flat  flat%   sum%        cum   cum%
     1.20s 48.00% 48.00%      1.20s 48.00%  internal/runtime/syscall/linux.Syscall6
     500ms 20.00% 68.00%      600ms 24.00%  crypto/internal/fips140/aes/gcm.gcmAesDec
     300ms 12.00% 80.00%      1.50s 60.00%  github.com/quic-go/quic-go.(*Conn).run
     300ms 12.00% 92.00%      300ms 12.00%  runtime.mallocgc
     200ms  8.00%   100%      200ms  8.00%  main.something (inline)
         0     0%   100%      2.50s   100%  runtime.goexit
`
	ps := parsePprofTop(out)
	if ps.total != 2500*time.Millisecond {
		t.Errorf("total = %v, want 2.5s", ps.total)
	}
	if len(ps.topFlat) != 6 || ps.topFlat[0].name != "internal/runtime/syscall/linux.Syscall6" || ps.topFlat[4].name != "main.something (inline)" {
		t.Errorf("topFlat = %+v", ps.topFlat)
	}
	if len(ps.cats) == 0 || ps.cats[0].d != 1200*time.Millisecond || ps.cats[0].name != categoryOf("syscall.Syscall") {
		t.Errorf("cats = %+v, want system calls first", ps.cats)
	}
	ps.bytes = 1e9
	if got := ps.perGB(categoryOf("crypto/tls.x")); got != 0.5 {
		t.Errorf("cryptography per GB = %v, want 0.5", got)
	}
	if got := ps.perGB(otherCategory); got != 0.2 {
		t.Errorf("other per GB = %v, want 0.2", got)
	}
}

func TestParsePprofDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"0": 0, "10ms": 10 * time.Millisecond, "1.50s": 1500 * time.Millisecond, "2mins": 2 * time.Minute, "1.5hrs": 90 * time.Minute,
	} {
		if got, err := parsePprofDuration(in); err != nil || got != want {
			t.Errorf("parsePprofDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	if _, err := parsePprofDuration("lots"); err == nil {
		t.Error("parsePprofDuration(\"lots\") succeeded")
	}
}

func TestCategoryOf(t *testing.T) {
	tests := map[string]string{
		"internal/runtime/syscall/linux.Syscall6":  categories[0].name,
		"syscall.Syscall":                          categories[0].name,
		"crypto/tls.(*Conn).Write":                 categories[1].name,
		"github.com/quic-go/quic-go.(*Conn).run":   categories[2].name,
		"github.com/coder/websocket.(*Conn).Write": categories[3].name,
		"runtime.mallocgc":                         "memory allocation and garbage collection",
		"runtime.memmove":                          "memory copies (runtime.memmove)",
		"runtime.futex":                            "goroutine scheduling, netpoll and timers",
		"runtime.something":                        "other runtime",
		"modernc.org/sqlite/lib.sqlite3Step":       "SQLite (session audit records)",
		"net/http.(*conn).serve":                   "HTTP server and token check (net/http, JSON, JWT)",
		"google.golang.org/grpc.(*Server).Serve":   otherCategory,
	}
	for fn, want := range tests {
		if got := categoryOf(fn); got != want {
			t.Errorf("categoryOf(%q) = %q, want %q", fn, got, want)
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

func TestParseHeapTop(t *testing.T) {
	const out = `File: tunnel
Type: inuse_space
Showing nodes accounting for 20.50MB, 100% of 20.50MB total
      flat  flat%   sum%        cum   cum%
      16MB 78.05% 78.05%       16MB 78.05%  crypto/tls.(*Conn).readRecordOrCCS
    4.50MB 21.95%   100%     4.50MB 21.95%  bufio.NewReaderSize (inline)
         0     0%   100%    20.50MB   100%  net/http.(*conn).serve
`
	hs := parseHeapTop(out)
	if hs.total != 20*1<<20+1<<19 {
		t.Errorf("total = %d, want %d", hs.total, 20*1<<20+1<<19)
	}
	if len(hs.sites) != 2 || hs.sites[0].name != "crypto/tls.(*Conn).readRecordOrCCS" || hs.sites[1].bytes != 4*1<<20+1<<19 {
		t.Errorf("sites = %+v", hs.sites)
	}
}

func TestParsePprofBytes(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "512B": 512, "1.50kB": 1536, "2MB": 2 << 20, "1GB": 1 << 30} {
		if got, err := parsePprofBytes(in); err != nil || got != want {
			t.Errorf("parsePprofBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"12", "xMB"} {
		if _, err := parsePprofBytes(bad); err == nil {
			t.Errorf("parsePprofBytes(%q) succeeded", bad)
		}
	}
}
