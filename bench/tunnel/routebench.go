package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/outposthq/outpost/bench/internal/proc"
)

// The route lookup benchmarks of the gateway's router: 10,000 agents × 10
// subnets + 1,000 domains (server/internal/routing/bench_test.go).
const (
	routingPkg     = "./server/internal/routing/"
	routingPattern = "Lookup"
	// targetLookup is the target per lookup, with no allocation.
	targetLookup = 1000.0 // ns
)

// lookupBench is one benchmark's line of go test -bench output.
type lookupBench struct {
	name        string // without "Benchmark" and the -GOMAXPROCS suffix
	iterations  int64
	nsPerOp     float64
	bytesPerOp  int64 // -1: not reported (no -benchmem)
	allocsPerOp int64 // -1: not reported
}

// runLookupBench runs the routing package's Lookup benchmarks with go test
// (bounded: 3 minutes) and parses their results.
func runLookupBench(ctx context.Context, root, benchtime string) ([]lookupBench, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", routingPattern, "-benchmem",
		"-benchtime", benchtime, "-count", "1", routingPkg)
	cmd.Dir = root
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = proc.Attr()
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go test -bench %s %s: %w\n%s", routingPattern, routingPkg, err, out)
	}
	res := parseBenchOutput(string(out))
	if len(res) == 0 {
		return nil, fmt.Errorf("go test -bench %s %s printed no benchmark line:\n%s", routingPattern, routingPkg, out)
	}
	return res, nil
}

// parseBenchOutput reads the benchmark lines of go test -bench -benchmem
// output: "BenchmarkName-N  iterations  V ns/op  V B/op  V allocs/op".
// Other lines are skipped, and so are malformed benchmark lines.
func parseBenchOutput(out string) []lookupBench {
	var res []lookupBench
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		b := lookupBench{name: strings.TrimPrefix(f[0], "Benchmark"), bytesPerOp: -1, allocsPerOp: -1}
		if i := strings.LastIndexByte(b.name, '-'); i > 0 {
			if _, err := strconv.Atoi(b.name[i+1:]); err == nil {
				b.name = b.name[:i]
			}
		}
		var err error
		if b.iterations, err = strconv.ParseInt(f[1], 10, 64); err != nil {
			continue
		}
		ok := false
		for i := 2; i+1 < len(f); i += 2 {
			switch f[i+1] {
			case "ns/op":
				b.nsPerOp, err = strconv.ParseFloat(f[i], 64)
				ok = err == nil
			case "B/op":
				if v, err := strconv.ParseInt(f[i], 10, 64); err == nil {
					b.bytesPerOp = v
				}
			case "allocs/op":
				if v, err := strconv.ParseInt(f[i], 10, 64); err == nil {
					b.allocsPerOp = v
				}
			}
		}
		if ok {
			res = append(res, b)
		}
	}
	return res
}
