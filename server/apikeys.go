package server

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"

	"github.com/outposthq/outpost/server/internal/auth"
	"github.com/outposthq/outpost/server/internal/store"
)

// lookupKey adapts the store to auth.Lookup.
func (g *Gateway) lookupKey(ctx context.Context, hash []byte) (auth.Key, error) {
	k, err := g.store.APIKeyByHash(ctx, hash)
	if errors.Is(err, store.ErrNotFound) {
		return auth.Key{}, auth.ErrUnknownKey
	}
	if err != nil {
		return auth.Key{}, err
	}
	return auth.Key{ID: k.ID, Scopes: k.Scopes, Revoked: k.RevokedAt != nil}, nil
}

// createAPIKey stores a new key and returns its secret, which exists nowhere else.
func createAPIKey(ctx context.Context, s store.Store, rnd io.Reader, name string, scopes []string) (string, error) {
	if err := auth.ValidateScopes(scopes); err != nil {
		return "", err
	}
	if name == "" {
		return "", errors.New("api key name is required")
	}
	secret, hash, err := auth.NewKey(rnd)
	if err != nil {
		return "", err
	}
	id, err := uuid.NewRandomFromReader(rnd)
	if err != nil {
		return "", fmt.Errorf("api key id: %w", err)
	}
	key := store.APIKey{ID: id.String(), Name: name, Hash: hash, Scopes: scopes, CreatedAt: time.Now().UTC()}
	if err := s.CreateAPIKey(ctx, key); err != nil {
		return "", fmt.Errorf("store api key: %w", err)
	}
	return secret, nil
}

// KeyAdmin manages API keys directly on a gateway's store, for the offline
// `outpost gateway apikey` commands. It is safe to use while the gateway runs
// (SQLite serializes writers). Close it when done.
type KeyAdmin struct {
	store *store.SQLite
}

// APIKeyInfo describes a stored key; the secret itself is never stored.
type APIKeyInfo struct {
	ID        string
	Name      string
	Scopes    []string
	CreatedAt time.Time
	RevokedAt *time.Time
}

// OpenKeyAdmin opens the store in dataDir. It fails when dataDir holds no
// gateway store, rather than creating an empty one.
func OpenKeyAdmin(ctx context.Context, dataDir string, logger hclog.Logger) (*KeyAdmin, error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	path := filepath.Join(dataDir, storeFile)
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("no gateway store at %s (start the gateway once with this --data-dir): %w", path, err)
	}
	s, err := store.OpenSQLite(ctx, path, store.Options{Logger: logger.Named("store")})
	if err != nil {
		return nil, err
	}
	return &KeyAdmin{store: s}, nil
}

// Create makes a key with the given name and scopes and returns its secret.
func (a *KeyAdmin) Create(ctx context.Context, name string, scopes []string) (string, error) {
	return createAPIKey(ctx, a.store, rand.Reader, name, scopes)
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
