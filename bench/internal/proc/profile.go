package proc

import (
	"cmp"
	"context"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"
)

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
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "tool", "pprof", "-top", "-nodecount=1000000", "-nodefraction=0", file)
	cmd.SysProcAttr = Attr()
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return CPUProfile{}, fmt.Errorf("go tool pprof -top %s: %w", file, err)
	}
	ps := parsePprofTop(string(out))
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
