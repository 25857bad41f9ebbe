package store

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

// The store's writes on a session's way, on each backend: SQLite in a
// temporary directory (WAL, synchronous=FULL: each commit is an fsync) and
// PostgreSQL (internal/testpg's server, which runs with fsync off; skipped
// without the server binaries). Each benchmark runs its operations one
// after another and reports, besides ns/op, its throughput and the p99 of
// one operation (p99-ms). bench/tunnel (make bench) prints them as rows.
//
//	go test -run '^$' -bench 'UseSessionToken|RecordSessions|InsertSession' ./server/internal/store/

// auditBatch is the batch size of BenchmarkRecordSessions: about what the
// audit writer gathers in its 100 ms at a few hundred sessions a second.
const auditBatch = 64

// BenchmarkUseSessionToken consumes single-use session tokens, each a new
// jti: the synchronous check of every session's setup.
func BenchmarkUseSessionToken(b *testing.B) {
	benchBackends(b, "ops/s", 1, func(ctx context.Context, s *sqlStore, i int) error {
		_, err := s.UseSessionToken(ctx, fmt.Sprintf("jti-%d", i), s.now().Add(time.Minute), 1)
		return err
	})
}

// BenchmarkRecordSessions writes the session audit as the audit writer
// does: batches of auditBatch finished sessions, one transaction each.
// p99-ms is per batch; rows/s counts rows.
func BenchmarkRecordSessions(b *testing.B) {
	batch := make([]SessionRecord, auditBatch)
	benchBackends(b, "rows/s", auditBatch, func(ctx context.Context, s *sqlStore, i int) error {
		for j := range batch {
			batch[j] = benchSession(s, fmt.Sprintf("s-%d-%d", i, j))
		}
		return s.RecordSessions(ctx, batch)
	})
}

// BenchmarkInsertSession writes the session audit as sessions did before
// the audit writer: one row per commit (the start; the end was another).
func BenchmarkInsertSession(b *testing.B) {
	benchBackends(b, "rows/s", 1, func(ctx context.Context, s *sqlStore, i int) error {
		return s.InsertSession(ctx, benchSession(s, fmt.Sprintf("s-%d", i)))
	})
}

// benchSession is a finished session's audit record of typical size.
func benchSession(s *sqlStore, id string) SessionRecord {
	now := s.now()
	return SessionRecord{ID: id, Target: "db01.finance.contoso.local:5432", AgentID: "0b5e3f1c-7d2a-4c8e-9f41-2a6b8d0c3e57",
		Decision:  "DECISION_AGENT: db01.finance.contoso.local matches finance.contoso.local advertised by agent office-1",
		StartedAt: now.Add(-time.Second), EndedAt: now, BytesUp: 4096, BytesDown: 1 << 20, Outcome: "ok",
		KeyID: "6f1d7c2e-3b4a-4e5f-8a9b-0c1d2e3f4a5b", ClientAddr: "203.0.113.7:51234"}
}

// benchBackends runs op once per iteration, one after another, on a fresh
// store of each backend, and reports unit (rows per op × ops per second;
// for rows/s, also rows/op) and the p99 of one op in milliseconds.
func benchBackends(b *testing.B, unit string, rowsPerOp int, op func(ctx context.Context, s *sqlStore, i int) error) {
	for _, be := range []backend{sqliteBackend, postgresBackend} {
		b.Run(be.name, func(b *testing.B) {
			ctx := b.Context()
			s, err := be.open(ctx, be.newDB(b), Config{})
			if err != nil {
				b.Fatalf("open %s store: %v", be.name, err)
			}
			b.Cleanup(func() { s.Close() })
			var took []time.Duration
			for i := 0; b.Loop(); i++ {
				start := time.Now()
				if err := op(ctx, s, i); err != nil {
					b.Fatal(err)
				}
				took = append(took, time.Since(start))
			}
			var total time.Duration
			for _, d := range took {
				total += d
			}
			b.ReportMetric(float64(rowsPerOp*len(took))/total.Seconds(), unit)
			if unit == "rows/s" {
				b.ReportMetric(float64(rowsPerOp), "rows/op")
			}
			b.ReportMetric(float64(p99(took))/float64(time.Millisecond), "p99-ms")
		})
	}
}

// p99 returns the 99th percentile of ds (nearest rank); ds is sorted.
func p99(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[(len(ds)*99+99)/100-1]
}
