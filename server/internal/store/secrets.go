package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// Secret is one record of the secrets gateway replicas share (the CA, the
// server key, the token key), sealed by the caller: the store never sees
// the plaintext.
type Secret struct {
	Name      string    `json:"name"`       // unique; required
	Sealed    []byte    `json:"sealed"`     // the sealed value; required
	CreatedAt time.Time `json:"created_at"` // if zero on create, now
}

// CreateSecrets implements Store: every secret is inserted in one
// transaction, or none is.
func (s *sqlStore) CreateSecrets(ctx context.Context, secrets []Secret) error {
	if len(secrets) == 0 {
		return fmt.Errorf("%w: no secrets to create", ErrInvalid)
	}
	for _, sec := range secrets {
		if sec.Name == "" || len(sec.Sealed) == 0 {
			return fmt.Errorf("%w: a secret needs a name and a sealed value", ErrInvalid)
		}
	}
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		for _, sec := range secrets {
			if err := execOne(ctx, tx, fmt.Errorf("%w: secret %q exists", ErrConflict, sec.Name),
				`INSERT INTO cluster_secrets (name, sealed, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
				sec.Name, sec.Sealed, millis(s.orNow(sec.CreatedAt))); err != nil {
				return err
			}
		}
		return nil
	})
	return wrapErr("create secrets", err)
}

// ListSecrets implements Store.
func (s *sqlStore) ListSecrets(ctx context.Context) ([]Secret, error) {
	return queryAll(ctx, s, "list secrets", func(sc scanner) (Secret, error) {
		var (
			sec     Secret
			created int64
		)
		if err := sc.Scan(&sec.Name, &sec.Sealed, &created); err != nil {
			return Secret{}, err
		}
		sec.CreatedAt = fromMillis(created)
		return sec, nil
	}, `SELECT name, sealed, created_at FROM cluster_secrets ORDER BY name`)
}
