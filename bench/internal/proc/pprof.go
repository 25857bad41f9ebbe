package proc

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Profiles: a process profiles itself (CPUProfiler, WriteHeapProfile) into
// files, which the benchmark reads with `go tool pprof`.

// WriteHeapProfile collects garbage, so that the profile shows live memory
// only, and writes this process's heap profile to path. The error is the
// file's or the profile's.
func WriteHeapProfile(path string) error {
	runtime.GC()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// CPUProfiler CPU-profiles this process into one file at a time. The zero
// value is ready (its logger then discards); it is not safe for concurrent
// use.
type CPUProfiler struct {
	Log  hclog.Logger
	file *os.File // the profile being written, if any
}

// Start starts a CPU profile written to path. It fails if one is running
// already, or with the file's or runtime/pprof's error.
func (p *CPUProfiler) Start(path string) error {
	if p.file != nil {
		return errors.New("a CPU profile is already running")
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return err
	}
	p.file = f
	if p.Log != nil {
		p.Log.Info("CPU profile started", "path", path)
	}
	return nil
}

// Stop ends the running CPU profile, if any, and closes its file (the
// error is Close's).
func (p *CPUProfiler) Stop() error {
	if p.file == nil {
		return nil
	}
	pprof.StopCPUProfile()
	err := p.file.Close()
	p.file = nil
	return err
}

// CPU profiles (taken with CPUProfiler) are merged with
// `go tool pprof -proto`, then read with `go tool pprof -top` and summed
// into categories of work.

// CPUProfile is what a CPU profile says, summed by kind of work.
type CPUProfile struct {
	File       string         // the profile read
	Total      time.Duration  // CPU time sampled
	Categories []CategoryTime // flat time by kind of work, largest first
	TopFlat    []FuncTime     // every function, the most flat time first
}

// CategoryTime is the flat time of the functions of one kind of work.
type CategoryTime struct {
	Name string // what the work is, e.g. "quic-go (packets, frames, flow control, acks)"
	Time time.Duration
}

// FuncTime is one function's flat (own) and cumulative time.
type FuncTime struct {
	Name      string
	Flat, Cum time.Duration
}

// categories sort a function into a kind of work by its name's prefix;
// the first match wins, "other" takes the rest.
var categories = []struct {
	name     string
	prefixes []string
}{
	{"system calls (socket reads and writes, in the kernel)", []string{"internal/runtime/syscall", "syscall.", "runtime/internal/syscall"}},
	{"cryptography (TLS records of the WebSocket entry, QUIC packet protection)", []string{"crypto/", "vendor/golang.org/x/crypto/", "golang.org/x/crypto/"}},
	{"quic-go (packets, frames, flow control, acks)", []string{"github.com/quic-go/"}},
	{"WebSocket framing (coder/websocket)", []string{"github.com/coder/websocket"}},
	{"Outpost code (relay, wsstream, tunnel, entry)", []string{"github.com/outposthq/"}},
	{"SQLite (session audit records)", []string{"modernc.org/"}},
	{"HTTP server and token check (net/http, JSON, JWT)", []string{"net/http.", "net/textproto.", "encoding/json.", "github.com/golang-jwt/"}},
	{"memory allocation and garbage collection", []string{"runtime.mallocgc", "runtime.gc", "runtime.scanobject", "runtime.markroot",
		"runtime.greyobject", "runtime.findObject", "runtime.(*mheap)", "runtime.(*mspan)", "runtime.(*mcache)", "runtime.(*mcentral)",
		"runtime.sweepone", "runtime.bgsweep", "runtime.(*gcWork)", "runtime.(*gcBits)", "runtime.heapBits", "runtime.memclrNoHeapPointers",
		"runtime.wbBuf", "runtime.bulkBarrier", "runtime.typePointers", "runtime.nextFreeFast", "runtime.(*sweepLocked)", "runtime.scanblock",
		"runtime.spanOf", "runtime.(*pageAlloc)", "runtime.madvise", "runtime.sysUnused", "runtime.newobject", "runtime.makeslice",
		"runtime.growslice", "runtime.(*unwinder)", "runtime.scanstack", "runtime.scanframeworker"}},
	{"memory copies (runtime.memmove)", []string{"runtime.memmove"}},
	{"goroutine scheduling, netpoll and timers", []string{"runtime.findRunnable", "runtime.schedule", "runtime.netpoll", "runtime.futex",
		"runtime.stealWork", "runtime.park_m", "runtime.mcall", "runtime.runqgrab", "runtime.usleep", "runtime.notesleep", "runtime.notewakeup",
		"runtime.epollwait", "runtime.nanotime", "runtime.checkTimers", "runtime.(*timers)", "runtime.ready", "runtime.goready",
		"runtime.wakep", "runtime.startm", "runtime.stopm", "runtime.execute", "runtime.casgstatus", "runtime.lock", "runtime.unlock",
		"runtime.gopark", "runtime.goexit", "runtime.resetspinning", "runtime.procyield", "runtime.osyield", "runtime.runqput",
		"runtime.injectglist", "runtime.selectgo", "runtime.chansend", "runtime.chanrecv", "runtime.netpollblock", "runtime.(*randomEnum)",
		"runtime.semacquire", "runtime.semrelease", "runtime.sellock", "runtime.selunlock", "runtime.entersyscall", "runtime.exitsyscall",
		"runtime.reentersyscall", "runtime.futexsleep", "runtime.futexwakeup", "runtime.(*lfstack)", "runtime.runqget", "runtime.globrunqget",
		"runtime.(*timer)", "runtime.runtimer", "runtime.mPark", "runtime.signalM", "runtime.preemptM", "runtime.asyncPreempt"}},
	{"other runtime", []string{"runtime.", "internal/", "sync.", "sync/atomic."}},
}

const otherCategory = "other (standard library, gRPC, protobuf, ...)"

func categoryOf(fn string) string {
	for _, c := range categories {
		for _, p := range c.prefixes {
			if strings.HasPrefix(fn, p) {
				return c.name
			}
		}
	}
	return otherCategory
}

// MergeProfiles writes the merge of files to out with go tool pprof
// (bounded: 2 minutes). The error is the tool's, with its output.
func MergeProfiles(ctx context.Context, files []string, out string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	args := append([]string{"tool", "pprof", "-proto", "-output", out}, files...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.SysProcAttr = Attr()
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go tool pprof -proto: %w: %s", err, b)
	}
	return nil
}

// SummarizeProfile reads a CPU profile with go tool pprof -top (bounded: 2
// minutes). The error is the tool's.
func SummarizeProfile(ctx context.Context, file string) (CPUProfile, error) {
	out, err := pprofTop(ctx, file)
	if err != nil {
		return CPUProfile{}, err
	}
	ps := parsePprofTop(out)
	ps.File = file
	return ps, nil
}

// parsePprofTop reads the table of go tool pprof -top: after the header
// line "flat  flat%   sum%   cum   cum%", one function per line.
func parsePprofTop(out string) CPUProfile {
	var ps CPUProfile
	byCat := map[string]time.Duration{}
	for _, r := range pprofTable(out) {
		flat, err1 := parsePprofDuration(r.flat)
		cum, err2 := parsePprofDuration(r.cum)
		if err1 != nil || err2 != nil {
			continue
		}
		ps.Total += flat
		byCat[categoryOf(r.name)] += flat
		ps.TopFlat = append(ps.TopFlat, FuncTime{Name: r.name, Flat: flat, Cum: cum})
	}
	for name, d := range byCat {
		ps.Categories = append(ps.Categories, CategoryTime{name, d})
	}
	slices.SortFunc(ps.Categories, func(a, b CategoryTime) int {
		return cmp.Or(cmp.Compare(b.Time, a.Time), strings.Compare(a.Name, b.Name))
	})
	slices.SortStableFunc(ps.TopFlat, func(a, b FuncTime) int { return cmp.Compare(b.Flat, a.Flat) })
	return ps
}

// parsePprofDuration reads pprof's durations: "0", "10ms", "1.50s", "2mins".
func parsePprofDuration(s string) (time.Duration, error) {
	if s == "0" {
		return 0, nil
	}
	if v, ok := strings.CutSuffix(s, "mins"); ok {
		m, err := strconv.ParseFloat(v, 64)
		return time.Duration(m * float64(time.Minute)), err
	}
	if v, ok := strings.CutSuffix(s, "hrs"); ok {
		h, err := strconv.ParseFloat(v, 64)
		return time.Duration(h * float64(time.Hour)), err
	}
	return time.ParseDuration(s)
}

// HeapSummary is the live heap of a heap profile by allocation site.
type HeapSummary struct {
	Total int64      // bytes in use
	Sites []HeapSite // largest first
}

// HeapSite is the memory in use allocated by one function (flat).
type HeapSite struct {
	Name  string
	Bytes int64
}

// SummarizeHeap reads a heap profile (see WriteHeapProfile) with
// `go tool pprof -top -sample_index=inuse_space` (bounded: 2 minutes). The
// error is the tool's.
func SummarizeHeap(ctx context.Context, file string) (HeapSummary, error) {
	out, err := pprofTop(ctx, file, "-sample_index=inuse_space")
	if err != nil {
		return HeapSummary{}, err
	}
	return parseHeapTop(out), nil
}

// pprofTop runs go tool pprof -top with flags on file, listing every
// function (bounded: 2 minutes), and returns the output. Its stderr goes to
// ours; the error is the tool's.
func pprofTop(ctx context.Context, file string, flags ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	args := append([]string{"tool", "pprof", "-top"}, flags...)
	cmd := exec.CommandContext(ctx, "go", append(args, "-nodecount=1000000", "-nodefraction=0", file)...)
	cmd.SysProcAttr = Attr()
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("go tool pprof -top %s: %w", file, err)
	}
	return string(out), nil
}

// parseHeapTop reads the table of go tool pprof -top on a heap profile.
func parseHeapTop(out string) HeapSummary {
	var hs HeapSummary
	for _, r := range pprofTable(out) {
		n, err := parsePprofBytes(r.flat)
		if err != nil {
			continue
		}
		hs.Total += n
		if n > 0 {
			hs.Sites = append(hs.Sites, HeapSite{r.name, n})
		}
	}
	slices.SortStableFunc(hs.Sites, func(a, b HeapSite) int { return cmp.Compare(b.Bytes, a.Bytes) })
	return hs
}

// pprofRow is one line of a go tool pprof -top table, values as printed.
type pprofRow struct{ name, flat, cum string }

// pprofTable returns the rows of the table of go tool pprof -top: after
// the header "flat  flat%   sum%   cum   cum%", one function per line.
func pprofTable(out string) []pprofRow {
	var rows []pprofRow
	inTable := false
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if !inTable {
			inTable = len(f) == 5 && f[0] == "flat" && f[1] == "flat%"
			continue
		}
		if len(f) < 6 {
			continue
		}
		rows = append(rows, pprofRow{name: strings.Join(f[5:], " "), flat: f[0], cum: f[3]})
	}
	return rows
}

// parsePprofBytes reads pprof's sizes: "0", "512B", "16.50kB", "1.50MB",
// "2GB" (pprof's units are powers of 1024).
func parsePprofBytes(s string) (int64, error) {
	if s == "0" {
		return 0, nil
	}
	for _, u := range []struct {
		suffix string
		scale  float64
	}{{"TB", 1 << 40}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"kB", 1 << 10}, {"B", 1}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			x, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return 0, err
			}
			return int64(x * u.scale), nil
		}
	}
	return 0, fmt.Errorf("pprof size %q: unknown unit", s)
}
