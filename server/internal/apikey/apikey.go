// Package apikey creates and looks up the management API's keys (DESIGN.md
// §6) on the gateway's store: a key's secret is random, shown once and
// stored only as a hash.
package apikey

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/google/uuid"

	"github.com/outposthq/outpost/server/internal/auth"
	"github.com/outposthq/outpost/server/internal/store"
)

// Store is what keys need from the store.
type Store interface {
	CreateAPIKey(ctx context.Context, k store.APIKey) error
	APIKeyByHash(ctx context.Context, hash []byte) (store.APIKey, error)
}

// Create stores a new key named name with scopes and returns its secret,
// which exists nowhere else. rnd supplies the secret and the id. It fails
// on an empty name or an unknown scope.
func Create(ctx context.Context, s Store, rnd io.Reader, name string, scopes []string, now time.Time) (string, error) {
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
	key := store.APIKey{ID: id.String(), Name: name, Hash: hash, Scopes: scopes, CreatedAt: now.UTC()}
	if err := s.CreateAPIKey(ctx, key); err != nil {
		return "", fmt.Errorf("store api key: %w", err)
	}
	return secret, nil
}

// Lookup adapts s to auth.Lookup: an unknown hash is auth.ErrUnknownKey.
func Lookup(s Store) auth.Lookup {
	return func(ctx context.Context, hash []byte) (auth.Key, error) {
		k, err := s.APIKeyByHash(ctx, hash)
		if errors.Is(err, store.ErrNotFound) {
			return auth.Key{}, auth.ErrUnknownKey
		}
		if err != nil {
			return auth.Key{}, err
		}
		return auth.Key{ID: k.ID, Scopes: k.Scopes, Revoked: k.RevokedAt != nil}, nil
	}
}
