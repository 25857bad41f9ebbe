package store

import (
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
)

const apiKeyColumns = `id, name, key_hash, scopes, created_at, revoked_at`

// CreateAPIKey implements Store.
func (s *sqlStore) CreateAPIKey(ctx context.Context, k APIKey) error {
	if k.ID == "" || k.Name == "" || len(k.Hash) == 0 {
		return fmt.Errorf("%w: api key needs an id, a name and a hash", ErrInvalid)
	}
	scopes := k.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	scopesJSON, err := json.Marshal(scopes)
	if err != nil {
		return wrapErr("create api key", err)
	}
	err = s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		return execOne(ctx, tx, fmt.Errorf("%w: an api key with id %q or the same hash exists", ErrConflict, k.ID),
			`INSERT INTO api_keys (`+apiKeyColumns+`)
VALUES ($1, $2, $3, $4, $5, NULL)
ON CONFLICT DO NOTHING`,
			k.ID, k.Name, hex.EncodeToString(k.Hash), string(scopesJSON), millis(s.orNow(k.CreatedAt)))
	})
	return wrapErr("create api key", err)
}

// APIKeyByHash implements Store.
func (s *sqlStore) APIKeyByHash(ctx context.Context, hash []byte) (APIKey, error) {
	return s.apiKeyWhere(ctx, "api key by hash", "key_hash", hex.EncodeToString(hash), "api key")
}

// GetAPIKey implements Store.
func (s *sqlStore) GetAPIKey(ctx context.Context, id string) (APIKey, error) {
	return s.apiKeyWhere(ctx, "get api key", "id", id, fmt.Sprintf("api key %q", id))
}

// apiKeyWhere returns the key whose column (a unique one) equals value;
// op names the operation in errors, what the key in ErrNotFound.
func (s *sqlStore) apiKeyWhere(ctx context.Context, op, column, value, what string) (APIKey, error) {
	var k APIKey
	err := s.read(ctx, func(ctx context.Context) (err error) {
		k, err = scanAPIKey(s.db.QueryRowContext(ctx, `SELECT `+apiKeyColumns+` FROM api_keys WHERE `+column+` = $1`, value))
		return err
	})
	if errors.Is(err, sql.ErrNoRows) {
		return APIKey{}, fmt.Errorf("%w: %s", ErrNotFound, what)
	}
	if err != nil {
		return APIKey{}, fmt.Errorf("store: %s: %w", op, err)
	}
	return k, nil
}

// ListAPIKeys implements Store.
func (s *sqlStore) ListAPIKeys(ctx context.Context) ([]APIKey, error) {
	return queryAll(ctx, s, "list api keys", scanAPIKey, `SELECT `+apiKeyColumns+` FROM api_keys ORDER BY created_at, id`)
}

// RevokeAPIKey implements Store.
func (s *sqlStore) RevokeAPIKey(ctx context.Context, id string) error {
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		return execOne(ctx, tx, fmt.Errorf("%w: api key %q", ErrNotFound, id),
			`UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1`,
			id, millis(s.now()))
	})
	return wrapErr("revoke api key", err)
}

// CountAPIKeys implements Store.
func (s *sqlStore) CountAPIKeys(ctx context.Context) (int, error) {
	var n int
	err := s.read(ctx, func(ctx context.Context) error {
		return s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM api_keys`).Scan(&n)
	})
	if err != nil {
		return 0, fmt.Errorf("store: count api keys: %w", err)
	}
	return n, nil
}

// scanner is a *sql.Row or *sql.Rows.
type scanner interface{ Scan(dest ...any) error }

func scanAPIKey(sc scanner) (APIKey, error) {
	var (
		k          APIKey
		hashHex    string
		scopesJSON string
		created    int64
		revoked    sql.NullInt64
	)
	if err := sc.Scan(&k.ID, &k.Name, &hashHex, &scopesJSON, &created, &revoked); err != nil {
		return APIKey{}, err
	}
	hash, err := hex.DecodeString(hashHex)
	if err != nil {
		return APIKey{}, fmt.Errorf("api key %s: corrupt hash: %w", k.ID, err)
	}
	if err := json.Unmarshal([]byte(scopesJSON), &k.Scopes); err != nil {
		return APIKey{}, fmt.Errorf("api key %s: corrupt scopes: %w", k.ID, err)
	}
	k.Hash = hash
	k.CreatedAt = fromMillis(created)
	k.RevokedAt = ptrMillis(revoked)
	return k, nil
}
