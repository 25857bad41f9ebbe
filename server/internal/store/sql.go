package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Config configures OpenSQLite and OpenPostgres. The zero value is usable.
type Config struct {
	// Now is the clock for default timestamps. If nil, time.Now.
	Now func() time.Time
	// Logger receives open, migration and retry events. If nil, logs are
	// discarded.
	Logger hclog.Logger
	// QueryTimeout bounds each method call, every attempt of it and the
	// pauses between attempts included: a call whose context has no
	// deadline, or a later one, gets this one. If zero, 30 s.
	QueryTimeout time.Duration
	// MaxConns bounds the connection pool. If zero, 8 for SQLite and 10 for
	// PostgreSQL.
	MaxConns int
}

// DefaultQueryTimeout is Config.QueryTimeout's default.
const DefaultQueryTimeout = 30 * time.Second

// withDefaults returns cfg with its zero fields filled; maxConns is the
// backend's default pool size.
func (cfg Config) withDefaults(maxConns int) Config {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.QueryTimeout <= 0 {
		cfg.QueryTimeout = DefaultQueryTimeout
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = maxConns
	}
	return cfg
}

// Retries of operations that failed with a transient error (see
// dialect.transient): at most maxAttempts attempts, with a jittered,
// doubling pause between them.
const (
	maxAttempts = 5
	retryBase   = 10 * time.Millisecond
	retryMax    = 500 * time.Millisecond
)

// dialect is what differs between the databases behind sqlStore; the SQL
// itself is shared.
type dialect interface {
	// name names the dialect in migration file names (see loadMigrations).
	name() string
	// acquireWrite waits for this process's turn to open a write
	// transaction; release ends the turn.
	acquireWrite(ctx context.Context) (release func(), err error)
	// serialize makes the rest of tx exclusive among the transactions, of
	// any process, that call it: each sees what the previous one
	// committed.
	serialize(ctx context.Context, tx *sql.Tx) error
	// notify tells the other processes sharing the database, once tx
	// commits, that payload happened on channel (ListenAgents); a no-op
	// where nothing can listen.
	notify(ctx context.Context, tx *sql.Tx, channel, payload string) error
	// migrationLock runs fn while no other process migrates the database,
	// giving it the connection to migrate on.
	migrationLock(ctx context.Context, db *sql.DB, fn func(conn) error) error
	// transient reports whether an operation that failed with err changed
	// nothing and may succeed if run again.
	transient(err error) bool
	// rowsPerInsert is how many rows one INSERT of RecordSessions
	// carries: what writes a batch fastest.
	rowsPerInsert() int
	// unreachable reports whether err says that the database could not be
	// reached or the connection to it was lost (ErrUnavailable).
	unreachable(err error) bool
}

// conn is what migrations run on: *sql.DB or *sql.Conn.
type conn interface {
	queryer
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error)
}

// queryer is what read helpers need: *sql.DB, *sql.Conn or *sql.Tx.
type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// sqlStore implements Store over database/sql for both SQLite and
// PostgreSQL: the queries are the same, with $N placeholders (bound by
// position by the modernc SQLite driver, natively by pgx), and what differs
// is behind d. It is safe for concurrent use.
type sqlStore struct {
	db      *sql.DB
	d       dialect
	now     func() time.Time
	log     hclog.Logger
	timeout time.Duration

	closeOnce sync.Once
	closeErr  error
}

func newSQLStore(db *sql.DB, d dialect, cfg Config) sqlStore {
	db.SetMaxOpenConns(cfg.MaxConns)
	db.SetMaxIdleConns(cfg.MaxConns)
	return sqlStore{db: db, d: d, now: cfg.Now, log: cfg.Logger, timeout: cfg.QueryTimeout}
}

// Ping checks that the database answers a query.
func (s *sqlStore) Ping(ctx context.Context) error {
	err := s.read(ctx, func(ctx context.Context) error {
		var one int
		return s.db.QueryRowContext(ctx, "SELECT 1").Scan(&one)
	})
	if err != nil {
		return fmt.Errorf("store: ping: %w", err)
	}
	return nil
}

// Close closes the database after in-flight calls finish. It is
// idempotent: later calls return the first call's result. Calls after
// Close fail.
func (s *sqlStore) Close() error {
	s.closeOnce.Do(func() { s.closeErr = s.db.Close() })
	return s.closeErr
}

// do runs op under the call's deadline (see Config.QueryTimeout), again
// while it fails with a transient error, at most maxAttempts times. A
// failure because the database could not be reached or did not answer in
// time matches ErrUnavailable.
func (s *sqlStore) do(ctx context.Context, op func(ctx context.Context) error) error {
	err := s.attempts(ctx, op)
	if err != nil && (errors.Is(err, context.DeadlineExceeded) || s.d.unreachable(err)) {
		return &unavailableError{err}
	}
	return err
}

// unavailableError is a failure to reach the database: it matches
// ErrUnavailable and unwraps to the driver's error.
type unavailableError struct{ err error }

func (e *unavailableError) Error() string        { return ErrUnavailable.Error() + ": " + e.err.Error() }
func (e *unavailableError) Unwrap() error        { return e.err }
func (e *unavailableError) Is(target error) bool { return target == ErrUnavailable }

// attempts is do without the classification of the final error.
func (s *sqlStore) attempts(ctx context.Context, op func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	pause := retryBase
	for attempt := 1; ; attempt++ {
		err := op(ctx)
		if err == nil || attempt == maxAttempts || ctx.Err() != nil || !s.d.transient(err) {
			return err
		}
		s.log.Debug("retrying after a transient database error", "attempt", attempt, "error", err)
		// Full jitter: concurrent losers of one conflict spread out.
		t := time.NewTimer(rand.N(pause) + 1)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return errors.Join(err, ctx.Err())
		}
		pause = min(2*pause, retryMax)
	}
}

// read runs a read-only operation; see do.
func (s *sqlStore) read(ctx context.Context, op func(ctx context.Context) error) error {
	return s.do(ctx, op)
}

// write runs fn in a write transaction and commits it if fn returns nil;
// see do for the deadline and the retries (fn may run more than once, each
// time in a new transaction, so it must not keep state from a failed
// attempt). A failed commit is never retried unless the database says it
// rolled back: its outcome is otherwise unknown.
func (s *sqlStore) write(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	return s.do(ctx, func(ctx context.Context) error {
		release, err := s.d.acquireWrite(ctx)
		if err != nil {
			return err
		}
		defer release()
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("begin: %w", err)
		}
		if err := fn(ctx, tx); err != nil {
			if rerr := tx.Rollback(); rerr != nil && !errors.Is(rerr, sql.ErrTxDone) {
				return errors.Join(err, fmt.Errorf("rollback: %w", rerr))
			}
			return err
		}
		if err := tx.Commit(); err != nil {
			return &commitError{err}
		}
		return nil
	})
}

// commitError is a failed COMMIT: unless the database answered with an
// error, the transaction may have committed.
type commitError struct{ err error }

func (e *commitError) Error() string { return "commit: " + e.err.Error() }
func (e *commitError) Unwrap() error { return e.err }

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
func (s *sqlStore) orNow(t time.Time) time.Time {
	if t.IsZero() {
		t = s.now()
	}
	return truncate(t)
}

// queryAll runs a read with retries and scans every row with scan; op
// names the operation in errors. It returns an empty, non-nil slice when no
// row matches.
func queryAll[T any](ctx context.Context, s *sqlStore, op string, scan func(scanner) (T, error), query string, args ...any) ([]T, error) {
	var out []T
	err := s.read(ctx, func(ctx context.Context) error {
		rows, err := s.db.QueryContext(ctx, query, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		out = []T{}
		for rows.Next() {
			v, err := scan(rows)
			if err != nil {
				return err
			}
			out = append(out, v)
		}
		return rows.Err()
	})
	if err != nil {
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
