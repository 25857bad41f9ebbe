package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

const sessionColumns = `id, target, agent_id, decision, started_at, ended_at, bytes_up, bytes_down, outcome, reason`

// InsertSession implements Store.
func (s *SQLite) InsertSession(ctx context.Context, r SessionRecord) error {
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
	err := s.write(ctx, func(tx *sql.Tx) error {
		return execOne(ctx, tx, fmt.Errorf("%w: session %q exists", ErrConflict, r.ID),
			`INSERT INTO sessions (`+sessionColumns+`)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT DO NOTHING`,
			r.ID, r.Target, r.AgentID, r.Decision, millis(s.orNow(r.StartedAt)), ended,
			r.BytesUp, r.BytesDown, r.Outcome, r.Reason)
	})
	return wrapErr("insert session", err)
}

// FinishSession implements Store.
func (s *SQLite) FinishSession(ctx context.Context, id string, end time.Time, bytesUp, bytesDown int64, outcome, reason string) error {
	if bytesUp < 0 || bytesDown < 0 {
		return fmt.Errorf("%w: negative byte count", ErrInvalid)
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
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
func (s *SQLite) GetSession(ctx context.Context, id string) (SessionRecord, error) {
	var (
		r       SessionRecord
		started int64
		ended   sql.NullInt64
	)
	err := s.db.QueryRowContext(ctx, `SELECT `+sessionColumns+` FROM sessions WHERE id = $1`, id).Scan(
		&r.ID, &r.Target, &r.AgentID, &r.Decision, &started, &ended, &r.BytesUp, &r.BytesDown, &r.Outcome, &r.Reason)
	if errors.Is(err, sql.ErrNoRows) {
		return SessionRecord{}, fmt.Errorf("%w: session %q", ErrNotFound, id)
	}
	if err != nil {
		return SessionRecord{}, fmt.Errorf("store: get session: %w", err)
	}
	r.StartedAt = fromMillis(started)
	if ended.Valid {
		r.EndedAt = fromMillis(ended.Int64)
	}
	return r, nil
}

// ConsumeSessionToken implements Store.
func (s *SQLite) ConsumeSessionToken(ctx context.Context, jti string, expiresAt time.Time) error {
	if jti == "" || expiresAt.IsZero() {
		return fmt.Errorf("%w: session token needs a jti and an expiry", ErrInvalid)
	}
	err := s.write(ctx, func(tx *sql.Tx) error {
		return execOne(ctx, tx, fmt.Errorf("%w: session token %s", ErrTokenUsed, jti),
			`INSERT INTO consumed_session_tokens (jti, expires_at, consumed_at)
VALUES ($1, $2, $3)
ON CONFLICT DO NOTHING`,
			jti, millis(expiresAt), millis(s.now()))
	})
	return wrapErr("consume session token", err)
}

// PruneExpired implements Store.
func (s *SQLite) PruneExpired(ctx context.Context, before time.Time) (int64, error) {
	var total int64
	err := s.write(ctx, func(tx *sql.Tx) error {
		total = 0
		for _, q := range []string{
			`DELETE FROM consumed_session_tokens WHERE expires_at < $1`,
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
