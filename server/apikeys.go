package server

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/outposthq/outpost/server/internal/apikey"
	"github.com/outposthq/outpost/server/internal/store"
)

// KeyAdmin manages API keys directly on a gateway's store, for the offline
// `outpost gateway apikey` commands. It is safe to use while the gateway (or
// several, on PostgreSQL) runs: the store serializes writers. Close it when
// done.
type KeyAdmin struct {
	store store.Store
}

// APIKeyInfo describes a stored key; the secret itself is never stored.
type APIKeyInfo struct {
	ID        string
	Name      string
	Scopes    []string
	CreatedAt time.Time
	RevokedAt *time.Time
}

// OpenKeyAdmin opens the gateway's store: the PostgreSQL database storeDSN
// names (Config.Store; it is migrated if needed), or, when storeDSN is
// empty, the SQLite store in dataDir, which must exist: a wrong dataDir
// fails rather than creating an empty store.
func OpenKeyAdmin(ctx context.Context, dataDir, storeDSN string, logger hclog.Logger) (*KeyAdmin, error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	s, err := openStore(ctx, dataDir, storeDSN, true, logger)
	if err != nil {
		return nil, err
	}
	return &KeyAdmin{store: s}, nil
}

// Create makes a key with the given name and scopes and returns its secret.
func (a *KeyAdmin) Create(ctx context.Context, name string, scopes []string) (string, error) {
	return apikey.Create(ctx, a.store, rand.Reader, name, scopes, time.Now())
}

// List returns every key, revoked ones included.
func (a *KeyAdmin) List(ctx context.Context) ([]APIKeyInfo, error) {
	keys, err := a.store.ListAPIKeys(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]APIKeyInfo, 0, len(keys))
	for _, k := range keys {
		out = append(out, APIKeyInfo{ID: k.ID, Name: k.Name, Scopes: k.Scopes, CreatedAt: k.CreatedAt, RevokedAt: k.RevokedAt})
	}
	return out, nil
}

// Revoke revokes the key with the given id; a revoked key is refused at once.
func (a *KeyAdmin) Revoke(ctx context.Context, id string) error {
	if err := a.store.RevokeAPIKey(ctx, id); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("no api key with id %q", id)
		}
		return err
	}
	return nil
}

// Close closes the store.
func (a *KeyAdmin) Close() error { return a.store.Close() }
