package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

const sessionColumns = `id, target, agent_id, decision, started_at, ended_at, bytes_up, bytes_down, outcome, reason, key_id, client_addr`

// InsertSession implements Store.
func (s *sqlStore) InsertSession(ctx context.Context, r SessionRecord) error {
	if r.ID == "" {
		return fmt.Errorf("%w: session needs an id", ErrInvalid)
	}
	if r.BytesUp < 0 || r.BytesDown < 0 {
		return fmt.Errorf("%w: negative byte count", ErrInvalid)
	}
	var ended any
	if !r.EndedAt.IsZero() {
		ended = millis(r.EndedAt)
	}
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		return execOne(ctx, tx, fmt.Errorf("%w: session %q exists", ErrConflict, r.ID),
			`INSERT INTO sessions (`+sessionColumns+`)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT DO NOTHING`,
			r.ID, r.Target, r.AgentID, r.Decision, millis(s.orNow(r.StartedAt)), ended,
			r.BytesUp, r.BytesDown, r.Outcome, r.Reason, r.KeyID, r.ClientAddr)
	})
	return wrapErr("insert session", err)
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
	if jti == "" || expiresAt.IsZero() || max < 1 {
		return 0, fmt.Errorf("%w: session token use needs a jti, an expiry and a limit of at least 1", ErrInvalid)
	}
	var uses int64
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `INSERT INTO session_token_uses (jti, uses, expires_at, first_used_at, last_used_at)
VALUES ($1, 1, $2, $3, $3)
ON CONFLICT (jti) DO UPDATE
SET uses = session_token_uses.uses + 1, last_used_at = excluded.last_used_at
WHERE session_token_uses.uses < $4
RETURNING uses`,
			jti, millis(expiresAt), millis(s.now()), max).Scan(&uses)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: session token %s has opened its %d connection(s)", ErrTokenUsed, jti, max)
		}
		return err
	})
	if err != nil {
		return 0, wrapErr("use session token", err)
	}
	return uses, nil
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
