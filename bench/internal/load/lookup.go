package load

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/outposthq/outpost/bench/internal/proc"
)

// The route lookup benchmarks of the gateway's router: 10,000 agents × 10
// subnets + 1,000 domains (server/internal/routing/bench_test.go).
const (
	routingPkg     = "./server/internal/routing/"
	routingPattern = "Lookup"
)

// LookupBench is one benchmark's line of go test -bench output.
type LookupBench struct {
	Name        string // without "Benchmark" and the -GOMAXPROCS suffix
	Iterations  int64
	NsPerOp     float64
	BytesPerOp  int64 // -1: not reported (no -benchmem)
	AllocsPerOp int64 // -1: not reported
}

// RouteLookups runs the routing package's Lookup benchmarks of the module
// at root with go test -benchtime benchtime (bounded: 3 minutes), logs and
// returns their results. log may be nil. It fails if go test fails or
// prints no benchmark line.
func RouteLookups(ctx context.Context, root, benchtime string, log hclog.Logger) ([]LookupBench, error) {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	log.Info("route lookup benchmarks", "package", routingPkg, "benchtime", benchtime)
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
	for _, l := range res {
		log.Info("route lookup", "benchmark", l.Name, "ns/op", l.NsPerOp, "allocs/op", l.AllocsPerOp)
	}
	return res, nil
}

// parseBenchOutput reads the benchmark lines of go test -bench -benchmem
// output: "BenchmarkName-N  iterations  V ns/op  V B/op  V allocs/op".
// Other lines are skipped, and so are malformed benchmark lines.
func parseBenchOutput(out string) []LookupBench {
	var res []LookupBench
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		b := LookupBench{Name: strings.TrimPrefix(f[0], "Benchmark"), BytesPerOp: -1, AllocsPerOp: -1}
		if i := strings.LastIndexByte(b.Name, '-'); i > 0 {
			if _, err := strconv.Atoi(b.Name[i+1:]); err == nil {
				b.Name = b.Name[:i]
			}
		}
		var err error
		if b.Iterations, err = strconv.ParseInt(f[1], 10, 64); err != nil {
			continue
		}
		ok := false
		for i := 2; i+1 < len(f); i += 2 {
			switch f[i+1] {
			case "ns/op":
				b.NsPerOp, err = strconv.ParseFloat(f[i], 64)
				ok = err == nil
			case "B/op":
				if v, err := strconv.ParseInt(f[i], 10, 64); err == nil {
					b.BytesPerOp = v
				}
			case "allocs/op":
				if v, err := strconv.ParseInt(f[i], 10, 64); err == nil {
					b.AllocsPerOp = v
				}
			}
		}
		if ok {
			res = append(res, b)
		}
	}
	return res
}
