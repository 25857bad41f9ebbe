package load

import (
	"context"
	"fmt"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// The store benchmarks of the writes on a session's way
// (server/internal/store/bench_test.go), on SQLite and PostgreSQL.
const (
	storePkg     = "./server/internal/store/"
	storePattern = "^Benchmark(UseSessionToken|RecordSessions|InsertSession)$"
)

// The store benchmarks' names, without "Benchmark" and the backend.
const (
	StoreTokenUse    = "UseSessionToken" // single-use session token consumption
	StoreAuditBatch  = "RecordSessions"  // the session audit, batched as the audit writer writes it
	StoreAuditSingle = "InsertSession"   // one audit row per commit, as sessions wrote it before
)

// The session setup benchmark on each store (e2e/setup_bench_test.go):
// gateway, agent and client library in one process, sessions on a warm
// standing connection.
const (
	setupPkg     = "./e2e/"
	setupPattern = "^BenchmarkStandingSetup$"
	// StoreSetup is its name, as StoreBench.Name.
	StoreSetup = "StandingSetup"
)

// Store backends, as the benchmarks name their sub-benchmarks.
var StoreBackends = []string{"sqlite", "postgres"}

// StoreBench is one store benchmark on one backend.
type StoreBench struct {
	Name    string  // StoreTokenUse, StoreAuditBatch or StoreAuditSingle
	Backend string  // one of StoreBackends
	Rate    float64 // operations (tokens) or rows per second
	Unit    string  // "ops/s" or "rows/s"
	P99Ms   float64 // p99 of one operation (one batch for StoreAuditBatch), in ms
	P50Ms   float64 // its p50, in ms; StoreSetup only
	Batch   int     // rows per operation; 0 unless Unit is rows/s
}

// StoreWrites runs the store's benchmarks of the module at root with go
// test -benchtime benchtime (bounded: 3 minutes), logs and returns their
// results. A backend that could not run (PostgreSQL without its server
// binaries) has no result. log may be nil. It fails if go test fails or
// prints no benchmark line.
func StoreWrites(ctx context.Context, root, benchtime string, log hclog.Logger) ([]StoreBench, error) {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	log.Info("store benchmarks", "package", storePkg, "benchtime", benchtime)
	lines, err := goBench(ctx, root, storePkg, storePattern, benchtime)
	if err != nil {
		return nil, err
	}
	res := storeBenches(lines)
	for _, s := range res {
		log.Info("store benchmark", "benchmark", s.Name, "backend", s.Backend, s.Unit, s.Rate, "p99_ms", s.P99Ms)
	}
	return res, nil
}

// storeBenches picks the store benchmarks' results out of benchmark lines:
// NAME/BACKEND with a rate (ops/s or rows/s) and p99-ms.
func storeBenches(lines []benchLine) []StoreBench {
	var res []StoreBench
	for _, l := range lines {
		name, backend, ok := strings.Cut(l.Name, "/")
		if !ok {
			continue
		}
		s := StoreBench{Name: name, Backend: backend, P99Ms: l.Metrics["p99-ms"], P50Ms: l.Metrics["p50-ms"], Batch: int(l.Metrics["rows/op"])}
		for _, unit := range []string{"ops/s", "rows/s"} {
			if v, ok := l.Metrics[unit]; ok {
				s.Rate, s.Unit = v, unit
			}
		}
		if s.Unit != "" {
			res = append(res, s)
		}
	}
	return res
}

// StoreSetups runs the session setup benchmark on each store with sessions
// timed sessions (go test -benchtime Nx, bounded: 3 minutes) and returns
// its results, as StoreWrites does.
func StoreSetups(ctx context.Context, root string, sessions int, log hclog.Logger) ([]StoreBench, error) {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	log.Info("session setup per store", "package", setupPkg, "sessions", sessions)
	lines, err := goBench(ctx, root, setupPkg, setupPattern, fmt.Sprintf("%dx", sessions))
	if err != nil {
		return nil, err
	}
	res := storeBenches(lines)
	for _, s := range res {
		log.Info("session setup per store", "backend", s.Backend, "p50_ms", s.P50Ms, "p99_ms", s.P99Ms)
	}
	return res, nil
}
