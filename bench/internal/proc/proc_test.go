package proc

import (
	"encoding/binary"
	"testing"
	"time"
)

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
	if ps.Total != 2500*time.Millisecond {
		t.Errorf("total = %v, want 2.5s", ps.Total)
	}
	if len(ps.TopFlat) != 6 || ps.TopFlat[0].Name != "internal/runtime/syscall/linux.Syscall6" || ps.TopFlat[4].Name != "main.something (inline)" {
		t.Errorf("topFlat = %+v", ps.TopFlat)
	}
	if len(ps.Categories) == 0 || ps.Categories[0].Time != 1200*time.Millisecond || ps.Categories[0].Name != categoryOf("syscall.Syscall") {
		t.Errorf("cats = %+v, want system calls first", ps.Categories)
	}
	catTime := func(name string) time.Duration {
		for _, c := range ps.Categories {
			if c.Name == name {
				return c.Time
			}
		}
		return 0
	}
	if got := catTime(categoryOf("crypto/tls.x")); got != 500*time.Millisecond {
		t.Errorf("cryptography = %v, want 500ms", got)
	}
	if got := catTime(otherCategory); got != 200*time.Millisecond {
		t.Errorf("other = %v, want 200ms", got)
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
	if hs.Total != 20*1<<20+1<<19 {
		t.Errorf("total = %d, want %d", hs.Total, 20*1<<20+1<<19)
	}
	if len(hs.Sites) != 2 || hs.Sites[0].Name != "crypto/tls.(*Conn).readRecordOrCCS" || hs.Sites[1].Bytes != 4*1<<20+1<<19 {
		t.Errorf("sites = %+v", hs.Sites)
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
