package store

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
)

// Secrets are created all or none, read back in name order, and of
// gateways racing to create the first set (two handles, as two processes)
// exactly one wins; the others' sets leave no row behind.
func testSecrets(t *testing.T, f *fixture) {
	a, _ := f.open(t)
	b, _ := f.open(t)
	ctx := ctxT(t)
	if got, err := a.ListSecrets(ctx); err != nil || got == nil || len(got) != 0 {
		t.Fatalf("ListSecrets on an empty store: %v, %v; want an empty slice", got, err)
	}
	for _, bad := range [][]Secret{nil, {{Name: "", Sealed: []byte{1}}}, {{Name: "x"}}} {
		if err := a.CreateSecrets(ctx, bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("CreateSecrets(%v): %v, want ErrInvalid", bad, err)
		}
	}

	const n = 8
	errs := make([]error, n)
	concurrently(n, []*sqlStore{a, b}, func(i int, s *sqlStore) {
		tag := []byte(fmt.Sprint(i))
		errs[i] = s.CreateSecrets(t.Context(), []Secret{{Name: "z.key", Sealed: tag}, {Name: "a.pem", Sealed: tag}})
	})
	exactlyOne(t, "first secret sets", errs, ErrConflict)
	got, err := b.ListSecrets(ctx)
	if err != nil || len(got) != 2 || got[0].Name != "a.pem" || got[1].Name != "z.key" {
		t.Fatalf("ListSecrets = %+v, %v; want a.pem then z.key", got, err)
	}
	if !bytes.Equal(got[0].Sealed, got[1].Sealed) {
		t.Errorf("the stored secrets come from two sets: %q and %q", got[0].Sealed, got[1].Sealed)
	}
	if !got[0].CreatedAt.Equal(truncate(f.clk.Now())) {
		t.Errorf("CreatedAt = %v, want now (%v)", got[0].CreatedAt, f.clk.Now())
	}

	// One existing name refuses the whole set.
	err = a.CreateSecrets(ctx, []Secret{{Name: "new.key", Sealed: []byte{1}}, {Name: "a.pem", Sealed: []byte{2}}})
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("CreateSecrets over an existing name: %v, want ErrConflict", err)
	}
	if got, _ := a.ListSecrets(ctx); len(got) != 2 {
		t.Errorf("a refused set left rows behind: %+v", got)
	}
}
