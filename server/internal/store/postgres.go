package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

// PostgreSQL tuning.
const (
	// postgresMaxConns is the default bound of the connection pool.
	postgresMaxConns = 10
	// postgresConnectTimeout bounds dialing when the DSN sets no
	// connect_timeout.
	postgresConnectTimeout = 10 * time.Second
	// postgresConnMaxLifetime and postgresConnMaxIdle recycle pooled
	// connections, so a failover or a server restart is picked up.
	postgresConnMaxLifetime = 30 * time.Minute
	postgresConnMaxIdle     = 5 * time.Minute
)

// Advisory lock keys (pg_advisory_lock's bigint space, shared by every
// application on the database): "outpost" in ASCII, then a purpose byte.
const (
	migrationLockKey int64 = 0x6f7574706f737401
	enrollLockKey    int64 = 0x6f7574706f737402
)

// Postgres is the PostgreSQL implementation of Store, through pgx's
// database/sql driver: the queries and migrations are SQLite's. It is safe
// for concurrent use, by several processes (gateway replicas, the offline
// API key commands) sharing the database.
//
// Transactions run at READ COMMITTED. Single-statement writes are atomic
// by themselves (a single-use or capped token is counted by one
// conditional upsert, which waits for the row's lock and re-checks);
// enrollments, which read then write, are serialized by a
// transaction-scoped advisory lock; migrations run under a session
// advisory lock. Serialization failures, deadlocks and lost connections
// are retried a few times when nothing can have been committed. Each call
// has a deadline (Config.QueryTimeout) and the pool is bounded
// (Config.MaxConns).
type Postgres struct {
	sqlStore
	// connCfg is the parsed DSN, for the listener's own connection
	// (ListenAgents); never modified after OpenPostgres.
	connCfg *pgx.ConnConfig
}

var _ Store = (*Postgres)(nil)

// OpenPostgres connects to the PostgreSQL database named by dsn (a
// postgres:// or postgresql:// URL, or key=value pairs, as libpq takes
// them; the PG* environment variables and the password file apply) and
// applies pending migrations under an advisory lock, so gateways starting
// together do not race. ctx bounds connecting and migrating. Errors:
// ErrInvalid for a DSN that does not parse; ErrSchemaTooNew when the
// database was migrated by a newer gateway; otherwise wrapped driver
// errors. Errors and logs never show the password.
func OpenPostgres(ctx context.Context, dsn string, cfg Config) (*Postgres, error) {
	cfg = cfg.withDefaults(postgresMaxConns)
	pc, err := pgx.ParseConfig(dsn)
	if err != nil {
		// pgx's parse errors redact the password.
		return nil, fmt.Errorf("%w: PostgreSQL DSN: %v", ErrInvalid, err)
	}
	if pc.ConnectTimeout == 0 {
		pc.ConnectTimeout = postgresConnectTimeout
	}
	db := stdlib.OpenDB(*pc)
	db.SetConnMaxLifetime(postgresConnMaxLifetime)
	db.SetConnMaxIdleTime(postgresConnMaxIdle)
	s := &Postgres{sqlStore: newSQLStore(db, postgresDialect{}, cfg), connCfg: pc}
	where := fmt.Sprintf("postgres database %q on %s:%d as %q", pc.Database, pc.Host, pc.Port, pc.User)
	if err := s.db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", where, err)
	}
	version, err := s.migrate(ctx)
	if err != nil {
		db.Close()
		return nil, err
	}
	s.log.Info("opened store", "backend", "postgres", "host", pc.Host, "port", pc.Port, "database", pc.Database,
		"user", pc.User, "schema_version", version, "max_conns", cfg.MaxConns)
	return s, nil
}

// postgresDialect is PostgreSQL's side of sqlStore.
type postgresDialect struct{}

func (postgresDialect) name() string { return "postgres" }

// acquireWrite has nothing to wait for: the bounded pool queues writers.
func (postgresDialect) acquireWrite(context.Context) (func(), error) { return func() {}, nil }

// serialize takes the enrollment advisory lock until tx ends.
func (postgresDialect) serialize(ctx context.Context, tx *sql.Tx) error {
	if _, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, enrollLockKey); err != nil {
		return fmt.Errorf("advisory lock: %w", err)
	}
	return nil
}

// notify sends a notification on channel with payload, delivered to the
// listeners when tx commits (and never if it rolls back).
func (postgresDialect) notify(ctx context.Context, tx *sql.Tx, channel, payload string) error {
	if _, err := tx.ExecContext(ctx, `SELECT pg_notify($1, $2)`, channel, payload); err != nil {
		return fmt.Errorf("notify %s: %w", channel, err)
	}
	return nil
}

// migrationLock holds the migration advisory lock on one connection while
// fn migrates through it. If the connection breaks, the server releases
// the lock with it.
func (postgresDialect) migrationLock(ctx context.Context, db *sql.DB, fn func(conn) error) error {
	c, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, migrationLockKey); err != nil {
		return fmt.Errorf("take the migration lock: %w", err)
	}
	err = fn(c)
	// Unlock even when ctx has ended; a broken connection has dropped the
	// lock already.
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, uerr := c.ExecContext(uctx, `SELECT pg_advisory_unlock($1)`, migrationLockKey); uerr != nil {
		// Do not return the connection, still holding the lock, to the pool.
		c.Raw(func(any) error { return driver.ErrBadConn })
		if err == nil {
			err = fmt.Errorf("release the migration lock: %w", uerr)
		}
	}
	return err
}

// PostgreSQL error codes that are worth another attempt.
const (
	pgSerializationFailure = "40001"
	pgDeadlockDetected     = "40P01"
	pgAdminShutdown        = "57P01"
	pgCrashShutdown        = "57P02"
	pgCannotConnectNow     = "57P03"
	pgConnectionException  = "08" // the class
)

// transient: serialization failures and deadlocks (the server rolled the
// transaction back), and a lost or refused connection, unless it was lost
// around COMMIT, when the transaction may have committed.
func (d postgresDialect) transient(err error) bool {
	var ce *commitError
	atCommit := errors.As(err, &ce)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case pgSerializationFailure, pgDeadlockDetected:
			return true
		}
	}
	return !atCommit && d.unreachable(err)
}

// unreachable: a refused, failed or lost connection, or a server shutting
// down or starting up, at any point of an operation (COMMIT included).
func (postgresDialect) unreachable(err error) bool {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case pgAdminShutdown, pgCrashShutdown, pgCannotConnectNow:
			return true
		}
		return strings.HasPrefix(pgErr.Code, pgConnectionException)
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return false
	}
	var netErr net.Error
	var connectErr *pgconn.ConnectError
	return pgconn.SafeToRetry(err) || errors.As(err, &connectErr) ||
		errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) || errors.Is(err, pgconn.ErrConnClosed) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE) ||
		errors.As(err, &netErr)
}

// rowsPerInsert: a multi-row INSERT takes one round trip for many rows.
func (postgresDialect) rowsPerInsert() int { return postgresRowsPerInsert }
