package store

import (
	"context"
	"database/sql"
	"time"
)

// PruneSessions implements Store.
func (s *sqlStore) PruneSessions(ctx context.Context, before time.Time) (int64, error) {
	var n int64
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE started_at < $1`, millis(before))
		if err != nil {
			return err
		}
		n, err = rowsAffected(res)
		return err
	})
	if err != nil {
		return 0, wrapErr("prune session audit", err)
	}
	return n, nil
}
