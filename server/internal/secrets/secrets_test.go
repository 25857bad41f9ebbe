package secrets

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/outposthq/outpost/internal/testlog"
	"github.com/outposthq/outpost/internal/testpg"
	"github.com/outposthq/outpost/server/internal/pki"
	"github.com/outposthq/outpost/server/internal/seal"
	"github.com/outposthq/outpost/server/internal/store"
)

func TestMain(m *testing.M) { testpg.Main(m) }

func newKey(t *testing.T, fill byte) *seal.Key {
	t.Helper()
	k, err := seal.ParseKey(bytes.Repeat([]byte{fill}, seal.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// openPostgres opens n handles on one fresh PostgreSQL database, as n
// gateway processes would.
func openPostgres(t *testing.T, n int) []store.Store {
	t.Helper()
	dsn := testpg.DSN(t)
	var out []store.Store
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		s, err := store.OpenPostgres(ctx, dsn, store.Config{Logger: testlog.Logger(t, "store")})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		out = append(out, s)
	}
	return out
}

// Gateways starting together on an empty database all end up with the one
// set of secrets exactly one of them created; a later one loads it.
func TestLoadOrCreateRace(t *testing.T) {
	const n = 6
	stores := openPostgres(t, n)
	key := newKey(t, 1)
	got := make([]pki.Secrets, n)
	created := make([]bool, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { got[i], created[i], errs[i] = LoadOrCreate(t.Context(), stores[i], key, pki.Config{}) })
	}
	wg.Wait()
	creators := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("gateway %d: %v", i, errs[i])
		}
		if created[i] {
			creators++
		}
		if !got[i].Equal(got[0]) {
			t.Fatalf("gateway %d has other secrets than gateway 0", i)
		}
	}
	if creators != 1 {
		t.Fatalf("%d gateways created the secrets, want 1", creators)
	}
	later, created2, err := LoadOrCreate(t.Context(), stores[0], key, pki.Config{})
	if err != nil || created2 || !later.Equal(got[0]) {
		t.Fatalf("a later start: created %v, %v; want the stored secrets", created2, err)
	}

	_, _, err = LoadOrCreate(t.Context(), stores[1], newKey(t, 2), pki.Config{})
	if !errors.Is(err, ErrWrongKey) || !bytes.Contains([]byte(err.Error()), []byte(key.ID())) {
		t.Fatalf("another seal key: %v, want ErrWrongKey naming the sealing key %s", err, key.ID())
	}
}

// Put stores secrets in an empty store, accepts the same ones again, and
// refuses to replace other ones.
func TestPut(t *testing.T) {
	st := openPostgres(t, 1)[0]
	key := newKey(t, 3)
	sec, err := pki.NewSecrets(pki.Config{})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if stored, err := Put(t.Context(), st, key, sec, now); err != nil || !stored {
		t.Fatalf("Put on an empty store: %v, %v", stored, err)
	}
	if stored, err := Put(t.Context(), st, key, sec, now); err != nil || stored {
		t.Fatalf("Put of the same secrets again: %v, %v; want no change", stored, err)
	}
	other, _ := pki.NewSecrets(pki.Config{})
	if _, err := Put(t.Context(), st, key, other, now); !errors.Is(err, ErrOtherSecrets) {
		t.Fatalf("Put of other secrets: %v, want ErrOtherSecrets", err)
	}
	loaded, _, err := LoadOrCreate(t.Context(), st, key, pki.Config{})
	if err != nil || !loaded.Equal(sec) {
		t.Fatalf("after Put: %v", err)
	}
}

// Open names a damaged or misnamed record and a missing one.
func TestOpenDamaged(t *testing.T) {
	key := newKey(t, 4)
	sec, _ := pki.NewSecrets(pki.Config{})
	rows, err := Seal(key, sec, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	swapped := append([]store.Secret(nil), rows...)
	swapped[0].Sealed, swapped[1].Sealed = rows[1].Sealed, rows[0].Sealed
	if _, err := Open(key, swapped); !errors.Is(err, seal.ErrCorrupt) {
		t.Errorf("records swapped between names: %v, want ErrCorrupt", err)
	}
	if _, err := Open(key, rows[1:]); err == nil {
		t.Error("a set without one record opened")
	}
}

// A bundle reads back under its key, with its rows; under another key it
// is ErrWrongKey; an existing file is never overwritten.
func TestBundle(t *testing.T) {
	key := newKey(t, 5)
	sec, _ := pki.NewSecrets(pki.Config{})
	rows := &store.Rows{SchemaVersion: 4, Tables: []store.TableRows{{Name: "agents", Columns: []string{"id"}, Rows: [][]any{{"a"}}}}}
	path := t.TempDir() + "/bundle"
	if err := WriteBundle(path, key, Bundle{Secrets: sec, Rows: rows}, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := WriteBundle(path, key, Bundle{Secrets: sec}, time.Now()); err == nil {
		t.Fatal("WriteBundle replaced an existing file")
	}
	b, err := ReadBundle(path, key)
	if err != nil || !b.Secrets.Equal(sec) || b.Rows == nil || b.Rows.Count()["agents"] != 1 {
		t.Fatalf("ReadBundle: %+v, %v", b.Rows, err)
	}
	if _, err := ReadBundle(path, newKey(t, 6)); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("ReadBundle under another key: %v, want ErrWrongKey", err)
	}
}
