package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// SQLite tuning.
const (
	// busyTimeout is how long a connection waits for another connection
	// (or process) holding the write lock before failing with SQLITE_BUSY.
	busyTimeout = 10 * time.Second
	// maxOpenConns bounds the connection pool; WAL lets readers proceed
	// while one writer holds the lock.
	maxOpenConns = 8
)

// Config configures OpenSQLite. The zero value is usable.
type Config struct {
	// Now is the clock for default timestamps. If nil, time.Now.
	Now func() time.Time
	// Logger receives open and migration events. If nil, logs are
	// discarded.
	Logger hclog.Logger
}

// SQLite is the SQLite implementation of Store. It is safe for concurrent
// use, also with other processes opening the same file (e.g. the offline
// API key commands next to a running gateway).
//
// The database runs in WAL mode with synchronous=FULL (a committed
// transaction survives a power loss), foreign keys on and a busy timeout.
// Every write runs in a BEGIN IMMEDIATE transaction: writers serialize on
// SQLite's lock instead of failing a lock upgrade, and writers within this
// process additionally queue on a semaphore rather than polling the lock.
//
// Queries use $N placeholders, which the modernc driver binds by position and
// PostgreSQL (pgx) accepts as they are.
type SQLite struct {
	db  *sql.DB
	now func() time.Time
	log hclog.Logger
	// writeSem holds one token while a write transaction of this process
	// runs.
	writeSem chan struct{}

	closeOnce sync.Once
	closeErr  error
}

var _ Store = (*SQLite)(nil)

// OpenSQLite opens (creating if needed, mode 0600) the SQLite database at
// path and applies pending migrations. ctx bounds opening and migrating.
// Errors: ErrSchemaTooNew when the file was migrated by a newer gateway;
// otherwise wrapped driver or file errors.
func OpenSQLite(ctx context.Context, path string, cfg Config) (*SQLite, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if path == "" || strings.ContainsAny(path, "?#") || strings.HasPrefix(path, "file:") {
		return nil, fmt.Errorf("%w: database path %q must be a plain file path without '?' or '#'", ErrInvalid, path)
	}
	// Create the file owner-only; SQLite gives the -wal and -shm files the
	// same mode.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}

	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	db.SetMaxOpenConns(maxOpenConns)
	s := &SQLite{db: db, now: cfg.Now, log: cfg.Logger, writeSem: make(chan struct{}, 1)}
	if err := s.init(ctx, path); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

func (s *SQLite) init(ctx context.Context, path string) error {
	if err := s.db.PingContext(ctx); err != nil {
		return fmt.Errorf("store: open %s: %w", path, err)
	}
	var mode string
	if err := s.db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("store: open %s: %w", path, err)
	}
	if !strings.EqualFold(mode, "wal") {
		s.log.Warn("SQLite WAL mode unavailable on this file system; writers block readers", "journal_mode", mode)
	}
	var fk int
	if err := s.db.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&fk); err != nil || fk != 1 {
		return fmt.Errorf("store: open %s: foreign keys not enabled (%d, %v)", path, fk, err)
	}
	version, err := s.migrate(ctx)
	if err != nil {
		return err
	}
	s.log.Info("opened store", "path", path, "schema_version", version, "journal_mode", mode)
	return nil
}

// Ping checks that the database answers a query.
func (s *SQLite) Ping(ctx context.Context) error {
	var one int
	if err := s.db.QueryRowContext(ctx, "SELECT 1").Scan(&one); err != nil {
		return fmt.Errorf("store: ping: %w", err)
	}
	return nil
}

// Close closes the database after in-flight calls finish. It is idempotent:
// later calls return the first call's result. Calls after Close fail.
func (s *SQLite) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.db.Close() })
	return s.closeErr
}

// write runs fn in a write transaction (BEGIN IMMEDIATE, see the DSN) and
// commits it if fn returns nil. Writers of this process take turns on
// writeSem, so at most one holds a connection waiting for SQLite's lock.
func (s *SQLite) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	select {
	case s.writeSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-s.writeSem }()

	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if err := fn(tx); err != nil {
		if rerr := tx.Rollback(); rerr != nil && !errors.Is(rerr, sql.ErrTxDone) {
			return errors.Join(err, fmt.Errorf("rollback: %w", rerr))
		}
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// queryer is what read helpers need: *sql.DB or *sql.Tx.
type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// millis converts a time to the stored form.
func millis(t time.Time) int64 { return t.UnixMilli() }

// fromMillis converts the stored form to a UTC time.
func fromMillis(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

// ptrMillis converts a nullable stored time.
func ptrMillis(n sql.NullInt64) *time.Time {
	if !n.Valid {
		return nil
	}
	t := fromMillis(n.Int64)
	return &t
}

// truncate returns t as it will read back: UTC, millisecond precision.
func truncate(t time.Time) time.Time { return fromMillis(millis(t)) }

// orNow returns t, or the current time if t is zero, as it will read back.
func (s *SQLite) orNow(t time.Time) time.Time {
	if t.IsZero() {
		t = s.now()
	}
	return truncate(t)
}

// queryAll runs a query and scans every row with scan; op names the
// operation in errors. It returns an empty, non-nil slice when no row
// matches.
func queryAll[T any](ctx context.Context, db *sql.DB, op string, scan func(scanner) (T, error), query string, args ...any) ([]T, error) {
	rows, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("store: %s: %w", op, err)
	}
	defer rows.Close()
	out := []T{}
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("store: %s: %w", op, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("store: %s: %w", op, err)
	}
	return out, nil
}

// execOne runs a write that must change at least one row, and returns
// missing when it changed none (a conflict ignored, a row not found).
func execOne(ctx context.Context, tx *sql.Tx, missing error, query string, args ...any) error {
	r, err := tx.ExecContext(ctx, query, args...)
	if err != nil {
		return err
	}
	if n, err := rowsAffected(r); err != nil {
		return err
	} else if n == 0 {
		return missing
	}
	return nil
}

// rowsAffected returns the count of a write, which every driver used here
// reports.
func rowsAffected(r sql.Result) (int64, error) {
	n, err := r.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("rows affected: %w", err)
	}
	return n, nil
}

// wrapErr prefixes err with the operation, unless it already carries one of
// the package's sentinel errors (whose text starts with "store:").
func wrapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	for _, sentinel := range []error{ErrNotFound, ErrConflict, ErrNameTaken, ErrTokenUsed, ErrInvalid, ErrSchemaTooNew} {
		if errors.Is(err, sentinel) {
			return err
		}
	}
	return fmt.Errorf("store: %s: %w", op, err)
}
