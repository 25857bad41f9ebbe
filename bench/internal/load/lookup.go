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
	lines, err := goBench(ctx, root, routingPkg, routingPattern, benchtime, "-benchmem")
	if err != nil {
		return nil, err
	}
	res := lookupBenches(lines)
	for _, l := range res {
		log.Info("route lookup", "benchmark", l.Name, "ns/op", l.NsPerOp, "allocs/op", l.AllocsPerOp)
	}
	return res, nil
}

// goBench runs go test -bench pattern on pkg of the module at root with
// -benchtime benchtime and the extra flags (bounded: 3 minutes), and
// returns its benchmark lines. It fails if go test fails or prints no
// benchmark line.
func goBench(ctx context.Context, root, pkg, pattern, benchtime string, extra ...string) ([]benchLine, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	args := append([]string{"test", "-run", "^$", "-bench", pattern, "-benchtime", benchtime, "-count", "1"}, extra...)
	cmd := exec.CommandContext(ctx, "go", append(args, pkg)...)
	cmd.Dir = root
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = proc.Attr()
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go test -bench %s %s: %w\n%s", pattern, pkg, err, out)
	}
	lines := parseBench(string(out))
	if len(lines) == 0 {
		return nil, fmt.Errorf("go test -bench %s %s printed no benchmark line:\n%s", pattern, pkg, out)
	}
	return lines, nil
}

// benchLine is one benchmark's line of go test -bench output:
// "BenchmarkName-N  iterations  V unit  V unit …".
type benchLine struct {
	Name       string // without "Benchmark" and the -GOMAXPROCS suffix
	Iterations int64
	Metrics    map[string]float64 // by unit: "ns/op", "B/op", custom ones
}

// parseBench reads the benchmark lines of go test -bench output. Other
// lines are skipped, and so are benchmark lines without a valid iteration
// count or ns/op.
func parseBench(out string) []benchLine {
	var res []benchLine
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		b := benchLine{Name: strings.TrimPrefix(f[0], "Benchmark"), Metrics: map[string]float64{}}
		if i := strings.LastIndexByte(b.Name, '-'); i > 0 {
			if _, err := strconv.Atoi(b.Name[i+1:]); err == nil {
				b.Name = b.Name[:i]
			}
		}
		var err error
		if b.Iterations, err = strconv.ParseInt(f[1], 10, 64); err != nil {
			continue
		}
		for i := 2; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				b.Metrics[f[i+1]] = v
			}
		}
		if _, ok := b.Metrics["ns/op"]; ok {
			res = append(res, b)
		}
	}
	return res
}

// lookupBenches turns benchmark lines into LookupBench results.
func lookupBenches(lines []benchLine) []LookupBench {
	res := make([]LookupBench, 0, len(lines))
	for _, l := range lines {
		b := LookupBench{Name: l.Name, Iterations: l.Iterations, NsPerOp: l.Metrics["ns/op"], BytesPerOp: -1, AllocsPerOp: -1}
		if v, ok := l.Metrics["B/op"]; ok {
			b.BytesPerOp = int64(v)
		}
		if v, ok := l.Metrics["allocs/op"]; ok {
			b.AllocsPerOp = int64(v)
		}
		res = append(res, b)
	}
	return res
}

// parseBenchOutput reads the route lookup results of go test -bench
// -benchmem output.
func parseBenchOutput(out string) []LookupBench { return lookupBenches(parseBench(out)) }
