package store

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// SQLite tuning.
const (
	// busyTimeout is how long a connection waits for another connection
	// (or process) holding the write lock before failing with SQLITE_BUSY.
	busyTimeout = 10 * time.Second
	// sqliteMaxConns is the default bound of the connection pool; WAL lets
	// readers proceed while one writer holds the lock.
	sqliteMaxConns = 8
)

// SQLite is the SQLite implementation of Store. It is safe for concurrent
// use, also with other processes opening the same file (e.g. the offline
// API key commands next to a running gateway).
//
// The database runs in WAL mode with synchronous=FULL (a committed
// transaction survives a power loss), foreign keys on and a busy timeout.
// Every write runs in a BEGIN IMMEDIATE transaction: writers serialize on
// SQLite's lock instead of failing a lock upgrade, and writers within this
// process additionally queue on a semaphore rather than polling the lock.
// Nothing is retried: waiting for the lock is the busy timeout's job.
type SQLite struct {
	sqlStore
}

var _ Store = (*SQLite)(nil)

// OpenSQLite opens (creating if needed, mode 0600) the SQLite database at
// path and applies pending migrations. ctx bounds opening and migrating.
// Errors: ErrSchemaTooNew when the file was migrated by a newer gateway;
// otherwise wrapped driver or file errors.
func OpenSQLite(ctx context.Context, path string, cfg Config) (*SQLite, error) {
	cfg = cfg.withDefaults(sqliteMaxConns)
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
	s := &SQLite{newSQLStore(db, &sqliteDialect{writeSem: make(chan struct{}, 1)}, cfg)}
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
	s.log.Info("opened store", "backend", "sqlite", "path", path, "schema_version", version, "journal_mode", mode)
	return nil
}

// sqliteDialect: BEGIN IMMEDIATE (set in the DSN) takes the database's
// write lock at the start of every write transaction, so write
// transactions are serializable already.
type sqliteDialect struct {
	// writeSem holds one token while a write transaction of this process
	// runs, so at most one holds a connection waiting for SQLite's lock.
	writeSem chan struct{}
}

func (*sqliteDialect) name() string { return "sqlite" }

func (d *sqliteDialect) acquireWrite(ctx context.Context) (func(), error) {
	select {
	case d.writeSem <- struct{}{}:
		return func() { <-d.writeSem }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// serialize has nothing to do: the transaction holds the write lock.
func (*sqliteDialect) serialize(context.Context, *sql.Tx) error { return nil }

// notify has no one to tell: a SQLite store is one gateway's.
func (*sqliteDialect) notify(context.Context, *sql.Tx, string, string) error { return nil }

// migrationLock needs no lock of its own: each migration runs in a write
// transaction that checks whether it is applied under the write lock.
func (*sqliteDialect) migrationLock(_ context.Context, db *sql.DB, fn func(conn) error) error {
	return fn(db)
}

// transient is always false: a busy database is waited for (busy_timeout),
// and other failures would fail again.
func (*sqliteDialect) transient(error) bool { return false }

// unreachable is always false: the file is local; a database that does
// not answer in time is a deadline, which do classifies itself.
func (*sqliteDialect) unreachable(error) bool { return false }

// rowsPerInsert is one: SQLite finds a $N parameter by a search through
// the statement's parameters, so a multi-row INSERT costs more per row than
// one prepared single-row INSERT run for each row (there is no round trip
// to save).
func (*sqliteDialect) rowsPerInsert() int { return 1 }
