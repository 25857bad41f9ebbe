package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

const sessionColumns = `id, target, agent_id, decision, started_at, ended_at, bytes_up, bytes_down, outcome, reason, key_id, client_addr`

// InsertSession implements Store.
func (s *sqlStore) InsertSession(ctx context.Context, r SessionRecord) error {
	if err := r.Validate(); err != nil {
		return err
	}
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		return execOne(ctx, tx, fmt.Errorf("%w: session %q exists", ErrConflict, r.ID),
			`INSERT INTO sessions (`+sessionColumns+`)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT DO NOTHING`,
			r.ID, r.Target, r.AgentID, r.Decision, millis(s.orNow(r.StartedAt)), endedAt(r),
			r.BytesUp, r.BytesDown, r.Outcome, r.Reason, r.KeyID, r.ClientAddr)
	})
	return wrapErr("insert session", err)
}

// postgresRowsPerInsert is the rows of one multi-row INSERT of
// RecordSessions on PostgreSQL: 12 parameters each stay far below its limit
// of 65,535.
const postgresRowsPerInsert = 500

// recordSessionsUpsert ends each multi-row INSERT of RecordSessions: a new
// id is inserted as given; a finished record whose stored row is still open
// records the end; anything else changes nothing, so writing the same
// records again is harmless.
const recordSessionsUpsert = `
ON CONFLICT (id) DO UPDATE
SET ended_at = excluded.ended_at, bytes_up = excluded.bytes_up, bytes_down = excluded.bytes_down,
    outcome = excluded.outcome, reason = excluded.reason
WHERE sessions.ended_at IS NULL AND excluded.ended_at IS NOT NULL`

// RecordSessions implements Store: the records, merged by id (coalesce),
// go in upserts of the dialect's rowsPerInsert rows each, all in one
// transaction.
func (s *sqlStore) RecordSessions(ctx context.Context, recs []SessionRecord) error {
	for _, r := range recs {
		if err := r.Validate(); err != nil {
			return err
		}
	}
	rows := coalesce(recs)
	if len(rows) == 0 {
		return nil
	}
	per := s.d.rowsPerInsert()
	args := make([]any, 0, 12*min(len(rows), per))
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		// The statement of full chunks is prepared when it runs more than
		// once; a statement that runs once is sent as it is.
		var full *sql.Stmt
		if len(rows)/per > 1 {
			var err error
			if full, err = tx.PrepareContext(ctx, insertSessionsSQL(per)); err != nil {
				return err
			}
			defer full.Close()
		}
		for chunk := range slices.Chunk(rows, per) {
			args = args[:0]
			for _, r := range chunk {
				args = append(args, r.ID, r.Target, r.AgentID, r.Decision, millis(s.orNow(r.StartedAt)), endedAt(r),
					r.BytesUp, r.BytesDown, r.Outcome, r.Reason, r.KeyID, r.ClientAddr)
			}
			var err error
			if full != nil && len(chunk) == per {
				_, err = full.ExecContext(ctx, args...)
			} else {
				_, err = tx.ExecContext(ctx, insertSessionsSQL(len(chunk)), args...)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	return wrapErr("record sessions", err)
}

// insertSessionsSQL is the upsert of RecordSessions for n rows.
func insertSessionsSQL(n int) string {
	var q strings.Builder
	q.WriteString(`INSERT INTO sessions (` + sessionColumns + `) VALUES `)
	for i := range n {
		if i > 0 {
			q.WriteString(", ")
		}
		p := 12 * i
		fmt.Fprintf(&q, "($%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d)",
			p+1, p+2, p+3, p+4, p+5, p+6, p+7, p+8, p+9, p+10, p+11, p+12)
	}
	q.WriteString(recordSessionsUpsert)
	return q.String()
}

// coalesce merges the records of each session id into one, in the order
// of their first record, with the outcome of writing them one by one: the
// first record's start, and the end of the first finished one.
func coalesce(recs []SessionRecord) []SessionRecord {
	out := make([]SessionRecord, 0, len(recs))
	at := make(map[string]int, len(recs))
	for _, r := range recs {
		i, seen := at[r.ID]
		if !seen {
			at[r.ID] = len(out)
			out = append(out, r)
			continue
		}
		if prev := &out[i]; prev.EndedAt.IsZero() && !r.EndedAt.IsZero() {
			prev.EndedAt, prev.BytesUp, prev.BytesDown, prev.Outcome, prev.Reason = r.EndedAt, r.BytesUp, r.BytesDown, r.Outcome, r.Reason
		}
	}
	return out
}

// Validate returns an error matching ErrInvalid when no method would store
// r: it has no id or a negative byte count; otherwise nil.
func (r SessionRecord) Validate() error {
	if r.ID == "" {
		return fmt.Errorf("%w: session needs an id", ErrInvalid)
	}
	if r.BytesUp < 0 || r.BytesDown < 0 {
		return fmt.Errorf("%w: session %q: negative byte count", ErrInvalid, r.ID)
	}
	return nil
}

// endedAt is r's stored end: NULL while open.
func endedAt(r SessionRecord) any {
	if r.EndedAt.IsZero() {
		return nil
	}
	return millis(r.EndedAt)
}

// FinishSession implements Store.
func (s *sqlStore) FinishSession(ctx context.Context, id string, end time.Time, bytesUp, bytesDown int64, outcome, reason string) error {
	if bytesUp < 0 || bytesDown < 0 {
		return fmt.Errorf("%w: negative byte count", ErrInvalid)
	}
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE sessions
SET ended_at = $2, bytes_up = $3, bytes_down = $4, outcome = $5, reason = $6
WHERE id = $1 AND ended_at IS NULL`,
			id, millis(s.orNow(end)), bytesUp, bytesDown, outcome, reason)
		if err != nil {
			return err
		}
		n, err := rowsAffected(res)
		if err != nil || n > 0 {
			return err
		}
		var one int
		err = tx.QueryRowContext(ctx, `SELECT 1 FROM sessions WHERE id = $1`, id).Scan(&one)
		switch {
		case err == nil:
			return fmt.Errorf("%w: session %q already finished", ErrConflict, id)
		case errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("%w: session %q", ErrNotFound, id)
		default:
			return err
		}
	})
	return wrapErr("finish session", err)
}

// GetSession implements Store.
func (s *sqlStore) GetSession(ctx context.Context, id string) (SessionRecord, error) {
	var r SessionRecord
	err := s.read(ctx, func(ctx context.Context) error {
		var err error
		r, err = scanSession(s.db.QueryRowContext(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE id = $1`, id))
		return err
	})
	if errors.Is(err, sql.ErrNoRows) {
		return SessionRecord{}, fmt.Errorf("%w: session %q", ErrNotFound, id)
	}
	if err != nil {
		return SessionRecord{}, fmt.Errorf("store: get session: %w", err)
	}
	return r, nil
}

// ListSessions implements Store. The conditions are built from opts with
// numbered placeholders, so the query stays one portable statement.
func (s *sqlStore) ListSessions(ctx context.Context, opts ListSessionsOptions) ([]SessionRecord, error) {
	limit := opts.Limit
	if limit <= 0 {
		limit = DefaultListLimit
	}
	var (
		conds []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if opts.After != nil {
		at := arg(millis(opts.After.StartedAt))
		conds = append(conds, fmt.Sprintf("(started_at < %s OR (started_at = %s AND id < %s))", at, at, arg(opts.After.ID)))
	}
	if opts.AgentID != "" {
		conds = append(conds, "agent_id = "+arg(opts.AgentID))
	}
	if opts.Target != "" {
		conds = append(conds, "target = "+arg(opts.Target))
	}
	if opts.Outcome != "" {
		conds = append(conds, "outcome = "+arg(opts.Outcome))
	}
	if opts.OpenOnly {
		conds = append(conds, "ended_at IS NULL")
	}
	if !opts.From.IsZero() {
		conds = append(conds, "started_at >= "+arg(millis(opts.From)))
	}
	if !opts.Until.IsZero() {
		conds = append(conds, "started_at < "+arg(millis(opts.Until)))
	}
	query := `SELECT ` + sessionColumns + ` FROM sessions`
	if len(conds) > 0 {
		query += ` WHERE ` + strings.Join(conds, " AND ")
	}
	query += ` ORDER BY started_at DESC, id DESC LIMIT ` + arg(limit)
	return queryAll(ctx, s, "list sessions", scanSession, query, args...)
}

// scanSession reads one row of sessionColumns.
func scanSession(sc scanner) (SessionRecord, error) {
	var (
		r       SessionRecord
		started int64
		ended   sql.NullInt64
	)
	if err := sc.Scan(&r.ID, &r.Target, &r.AgentID, &r.Decision, &started, &ended, &r.BytesUp, &r.BytesDown, &r.Outcome, &r.Reason, &r.KeyID, &r.ClientAddr); err != nil {
		return SessionRecord{}, err
	}
	r.StartedAt = fromMillis(started)
	if ended.Valid {
		r.EndedAt = fromMillis(ended.Int64)
	}
	return r, nil
}

// UseSessionToken implements Store. One upsert counts the use: it inserts
// the token's first use, or increments the count only while it is below
// max, and returns the new count; when the condition fails it returns no
// row. SQLite runs it under its write lock and PostgreSQL under the row's
// lock (a concurrent update waits, then re-evaluates the condition on the
// committed row), so concurrent uses never count past max.
func (s *sqlStore) UseSessionToken(ctx context.Context, jti string, expiresAt time.Time, max int64) (int64, error) {
	return s.UseSessionTokenN(ctx, jti, expiresAt, max, 1)
}

// UseSessionTokenN implements Store: the statement of UseSessionToken,
// counting n.
func (s *sqlStore) UseSessionTokenN(ctx context.Context, jti string, expiresAt time.Time, max, n int64) (int64, error) {
	if jti == "" || expiresAt.IsZero() || max < 1 {
		return 0, fmt.Errorf("%w: session token use needs a jti, an expiry and a limit of at least 1", ErrInvalid)
	}
	if n < 1 || n > max {
		return 0, fmt.Errorf("%w: %d uses of a session token limited to %d", ErrInvalid, n, max)
	}
	var uses int64
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `INSERT INTO session_token_uses (jti, uses, expires_at, first_used_at, last_used_at)
VALUES ($1, $5, $2, $3, $3)
ON CONFLICT (jti) DO UPDATE
SET uses = session_token_uses.uses + $5, last_used_at = excluded.last_used_at
WHERE session_token_uses.uses + $5 <= $4
RETURNING uses`,
			jti, millis(expiresAt), millis(s.now()), max, n).Scan(&uses)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: session token %s has no %d of its %d connection(s) left", ErrTokenUsed, jti, n, max)
		}
		return err
	})
	if err != nil {
		return 0, wrapErr("use session token", err)
	}
	return uses, nil
}

// ReturnSessionTokenUses implements Store.
func (s *sqlStore) ReturnSessionTokenUses(ctx context.Context, jti string, n int64) error {
	if jti == "" || n < 1 {
		return fmt.Errorf("%w: returning uses needs a jti and a count of at least 1", ErrInvalid)
	}
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE session_token_uses
SET uses = CASE WHEN uses > $2 THEN uses - $2 ELSE 0 END
WHERE jti = $1`, jti, n)
		return err
	})
	return wrapErr("return session token uses", err)
}

// PruneExpired implements Store.
func (s *sqlStore) PruneExpired(ctx context.Context, before time.Time) (int64, error) {
	var total int64
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		total = 0
		for _, q := range []string{
			`DELETE FROM session_token_uses WHERE expires_at < $1`,
			`DELETE FROM consumed_enrollment_tokens WHERE expires_at < $1`,
			`DELETE FROM enrollment_tokens WHERE expires_at < $1`,
		} {
			res, err := tx.ExecContext(ctx, q, millis(before))
			if err != nil {
				return err
			}
			n, err := rowsAffected(res)
			if err != nil {
				return err
			}
			total += n
		}
		return nil
	})
	if err != nil {
		return 0, wrapErr("prune expired tokens", err)
	}
	if total > 0 {
		s.log.Debug("pruned expired tokens", "rows", total, "before", before)
	}
	return total, nil
}
