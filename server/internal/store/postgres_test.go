package store

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestPostgresOpenAndReopen(t *testing.T) {
	f := newFixture(t, postgresBackend)
	s, logs := f.open(t)
	ctx := ctxT(t)
	if !strings.Contains(logs.String(), "applied schema migration") {
		t.Error("first open did not log the migration")
	}
	if strings.Contains(logs.String(), "password") {
		t.Error("the log mentions a password")
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if got := s.db.Stats().MaxOpenConnections; got != postgresMaxConns {
		t.Errorf("pool bounded at %d connections, want %d", got, postgresMaxConns)
	}
	s.Close()
	s2, logs2 := f.open(t)
	if strings.Contains(logs2.String(), "applied schema migration") {
		t.Error("re-open applied a migration again")
	}
	if err := s2.Ping(ctx); err != nil {
		t.Error(err)
	}
}

// Gateways starting together on an empty database: every one opens, and
// each migration is applied once.
func TestPostgresConcurrentMigration(t *testing.T) {
	f := newFixture(t, postgresBackend)
	const n = 4
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			s, err := OpenPostgres(t.Context(), f.where, Config{})
			if err == nil {
				s.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("open %d: %v", i, err)
		}
	}
	ms, err := loadMigrations(migrationFiles, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	var rows, max int
	if err := f.raw(t).QueryRowContext(ctxT(t), `SELECT COUNT(*), MAX(version) FROM schema_migrations`).Scan(&rows, &max); err != nil {
		t.Fatal(err)
	}
	if rows != len(ms) || max != len(ms) {
		t.Errorf("schema_migrations: %d rows up to %d, want %d", rows, max, len(ms))
	}
}

func TestPostgresBadDSN(t *testing.T) {
	for _, dsn := range []string{"postgres://user:hunter2@[::1", "postgres://user:hunter2@localhost/db?sslmode=bogus"} {
		s, err := OpenPostgres(ctxT(t), dsn, Config{})
		if err == nil {
			s.Close()
			t.Fatalf("OpenPostgres(%q) succeeded", dsn)
		}
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("OpenPostgres(%q): %v, want ErrInvalid", dsn, err)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("the error shows the password: %v", err)
		}
	}
}

// A server that does not answer fails the open within its context, and
// says where it tried, without the password.
func TestPostgresUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err = OpenPostgres(ctx, "postgres://outpost:hunter2@"+addr+"/outpost?sslmode=disable", Config{})
	if err == nil {
		t.Fatal("open of a closed port succeeded")
	}
	if strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), `"outpost"`) {
		t.Errorf("error %q: want the database named and no password", err)
	}
}

func TestPostgresTransient(t *testing.T) {
	pg := func(code string) error { return &pgconn.PgError{Code: code} }
	commit := func(err error) error { return &commitError{err} }
	tests := []struct {
		name        string
		err         error
		want        bool
		unreachable bool
	}{
		{"serialization failure", pg("40001"), true, false},
		{"deadlock", fmt.Errorf("enroll: %w", pg("40P01")), true, false},
		{"serialization failure at commit", commit(pg("40001")), true, false},
		{"admin shutdown", pg("57P01"), true, true},
		{"admin shutdown at commit", commit(pg("57P01")), false, true},
		{"connection failure", pg("08006"), true, true},
		{"unique violation", pg("23505"), false, false},
		{"syntax error", pg("42601"), false, false},
		{"bad conn", driver.ErrBadConn, true, true},
		{"reset", &net.OpError{Op: "read", Err: syscall.ECONNRESET}, true, true},
		{"reset at commit", commit(&net.OpError{Op: "read", Err: syscall.ECONNRESET}), false, true},
		{"eof", fmt.Errorf("read: %w", io.ErrUnexpectedEOF), true, true},
		{"conn closed", pgconn.ErrConnClosed, true, true},
		{"not found", ErrNotFound, false, false},
		{"token used", ErrTokenUsed, false, false},
		{"deadline", context.DeadlineExceeded, false, false},
	}
	for _, tt := range tests {
		if got := (postgresDialect{}).transient(tt.err); got != tt.want {
			t.Errorf("%s: transient(%v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
		if got := (postgresDialect{}).unreachable(tt.err); got != tt.unreachable {
			t.Errorf("%s: unreachable(%v) = %v, want %v", tt.name, tt.err, got, tt.unreachable)
		}
	}
	if (&sqliteDialect{}).transient(pg("40001")) {
		t.Error("SQLite retries")
	}
}

// The server ends every connection of the store (a restart, a failover,
// an administrator): the next calls succeed on new connections.
func TestPostgresRetriesLostConnections(t *testing.T) {
	f := newFixture(t, postgresBackend)
	s, _ := f.open(t)
	ctx := ctxT(t)
	raw := f.raw(t)
	killAll := func() {
		t.Helper()
		// Use every pooled connection first, so that there are some to kill.
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() { s.Ping(ctx) })
		}
		wg.Wait()
		var n int
		if err := raw.QueryRowContext(ctx, `SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			t.Fatal("no connection of the store to end")
		}
	}
	killAll()
	if n, err := s.UseSessionToken(ctx, "jti", f.clk.Now().Add(time.Hour), 3); err != nil || n != 1 {
		t.Fatalf("write after the connections ended: %d, %v", n, err)
	}
	killAll()
	if _, err := s.CountAPIKeys(ctx); err != nil {
		t.Fatalf("read after the connections ended: %v", err)
	}
	killAll()
	if _, err := s.EnrollAgent(ctx, enrollReq(f.clk, "jti", "a", "csr")); err != nil {
		t.Fatalf("enrollment after the connections ended: %v", err)
	}
}

// A call waiting on a lock held elsewhere gives up at Config.QueryTimeout
// and changes nothing.
func TestPostgresQueryTimeout(t *testing.T) {
	f := newFixture(t, postgresBackend)
	ctx := ctxT(t)
	s, err := OpenPostgres(ctx, f.where, Config{Now: f.clk.Now, QueryTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Another process is in the middle of an enrollment.
	holder, err := f.raw(t).BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := holder.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, enrollLockKey); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = s.EnrollAgent(ctx, enrollReq(f.clk, "jti", "a", "csr"))
	if !errors.Is(err, context.DeadlineExceeded) && !pgconn.Timeout(err) {
		t.Fatalf("enrollment behind a held lock: %v, want a deadline error", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("gave up after %v", d)
	}
	if err := holder.Rollback(); err != nil {
		t.Fatal(err)
	}
	if res, err := s.EnrollAgent(ctx, enrollReq(f.clk, "jti", "a", "csr")); err != nil || res.Replayed {
		t.Fatalf("enrollment after the lock was released: %+v, %v (the timed-out one must have changed nothing)", res, err)
	}
}
