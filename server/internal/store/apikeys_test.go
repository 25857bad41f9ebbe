package store

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"slices"
	"testing"
	"time"
)

func testAPIKeys(t *testing.T, f *fixture) {
	s, _ := f.open(t)
	ctx := ctxT(t)

	if n, err := s.CountAPIKeys(ctx); err != nil || n != 0 {
		t.Fatalf("empty store: %d keys, %v", n, err)
	}
	if keys, err := s.ListAPIKeys(ctx); err != nil || keys == nil || len(keys) != 0 {
		t.Fatalf("empty list: %v, %v (want an empty, non-nil slice)", keys, err)
	}

	h1 := sha256.Sum256([]byte("secret-1"))
	h2 := sha256.Sum256([]byte("secret-2"))
	created := f.clk.Now()
	k1 := APIKey{ID: "key-1", Name: "admin", Hash: h1[:], Scopes: []string{"agents.read", "agents.write"}}
	if err := s.CreateAPIKey(ctx, k1); err != nil {
		t.Fatal(err)
	}
	f.clk.Advance(time.Second)
	k2 := APIKey{ID: "key-2", Name: "ci", Hash: h2[:], CreatedAt: created.Add(-time.Hour)} // nil scopes
	if err := s.CreateAPIKey(ctx, k2); err != nil {
		t.Fatal(err)
	}

	got, err := s.APIKeyByHash(ctx, h1[:])
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != "key-1" || got.Name != "admin" || !bytes.Equal(got.Hash, h1[:]) ||
		!slices.Equal(got.Scopes, k1.Scopes) || got.RevokedAt != nil {
		t.Errorf("APIKeyByHash = %+v", got)
	}
	if !got.CreatedAt.Equal(created.Truncate(time.Millisecond)) || got.CreatedAt.Location() != time.UTC {
		t.Errorf("CreatedAt %v, want the clock's %v at ms precision, UTC", got.CreatedAt, created)
	}
	got2, err := s.APIKeyByHash(ctx, h2[:])
	if err != nil {
		t.Fatal(err)
	}
	if got2.Scopes == nil || len(got2.Scopes) != 0 {
		t.Errorf("nil scopes read back as %#v, want empty", got2.Scopes)
	}

	other := sha256.Sum256([]byte("nope"))
	if _, err := s.APIKeyByHash(ctx, other[:]); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown hash: %v, want ErrNotFound", err)
	}

	keys, err := s.ListAPIKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0].ID != "key-2" || keys[1].ID != "key-1" {
		t.Errorf("ListAPIKeys order: %+v, want oldest first", keys)
	}
	if n, err := s.CountAPIKeys(ctx); err != nil || n != 2 {
		t.Errorf("CountAPIKeys = %d, %v", n, err)
	}

	// Conflicts: same id, same hash.
	if err := s.CreateAPIKey(ctx, APIKey{ID: "key-1", Name: "x", Hash: other[:]}); !errors.Is(err, ErrConflict) {
		t.Errorf("duplicate id: %v, want ErrConflict", err)
	}
	if err := s.CreateAPIKey(ctx, APIKey{ID: "key-3", Name: "x", Hash: h1[:]}); !errors.Is(err, ErrConflict) {
		t.Errorf("duplicate hash: %v, want ErrConflict", err)
	}
	for _, bad := range []APIKey{{Name: "x", Hash: other[:]}, {ID: "x", Hash: other[:]}, {ID: "x", Name: "x"}} {
		if err := s.CreateAPIKey(ctx, bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("CreateAPIKey(%+v): %v, want ErrInvalid", bad, err)
		}
	}

	// Revocation: recorded with the clock, idempotent, keeps the first time.
	revokedAt := f.clk.Now()
	if err := s.RevokeAPIKey(ctx, "key-1"); err != nil {
		t.Fatal(err)
	}
	f.clk.Advance(time.Hour)
	if err := s.RevokeAPIKey(ctx, "key-1"); err != nil {
		t.Errorf("second revoke: %v", err)
	}
	got, err = s.APIKeyByHash(ctx, h1[:])
	if err != nil {
		t.Fatal(err)
	}
	if got.RevokedAt == nil || !got.RevokedAt.Equal(revokedAt.Truncate(time.Millisecond)) {
		t.Errorf("RevokedAt %v, want %v", got.RevokedAt, revokedAt)
	}
	if k, _ := s.APIKeyByHash(ctx, h2[:]); k.RevokedAt != nil {
		t.Error("revoking key-1 revoked key-2")
	}
	// By id, as the client entry checks a session token's minting key.
	if k, err := s.GetAPIKey(ctx, "key-1"); err != nil || k.ID != "key-1" || !bytes.Equal(k.Hash, h1[:]) ||
		k.RevokedAt == nil || !k.RevokedAt.Equal(*got.RevokedAt) {
		t.Errorf("GetAPIKey(key-1) = %+v, %v", k, err)
	}
	if k, err := s.GetAPIKey(ctx, "key-2"); err != nil || k.Name != "ci" || k.RevokedAt != nil {
		t.Errorf("GetAPIKey(key-2) = %+v, %v", k, err)
	}
	if _, err := s.GetAPIKey(ctx, "no-such-key"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetAPIKey(unknown): %v, want ErrNotFound", err)
	}
	if err := s.RevokeAPIKey(ctx, "no-such-key"); !errors.Is(err, ErrNotFound) {
		t.Errorf("revoke unknown: %v, want ErrNotFound", err)
	}
	if n, _ := s.CountAPIKeys(ctx); n != 2 {
		t.Errorf("revoked keys must still count: %d", n)
	}
}
