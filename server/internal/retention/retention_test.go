package retention

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/outposthq/outpost/server/internal/store"
)

// Token rows are pruned once past their expiry plus the grace, audit rows
// once older than the retention; newer rows stay.
func TestOncePrunesByAge(t *testing.T) {
	ctx := context.Background()
	s, err := store.OpenSQLite(ctx, filepath.Join(t.TempDir(), "outpost.db"), store.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	now := time.Now().Truncate(time.Millisecond)
	day := 24 * time.Hour
	for id, started := range map[string]time.Time{"old": now.Add(-91 * day), "new": now.Add(-89 * day)} {
		if err := s.InsertSession(ctx, store.SessionRecord{ID: id, Target: "10.0.0.1:22", StartedAt: started}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.UseSessionToken(ctx, "expired-long-ago", now.Add(-2*time.Minute), 1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UseSessionToken(ctx, "in-grace", now.Add(-30*time.Second), 1); err != nil {
		t.Fatal(err)
	}
	tokens, sessions, err := Once(ctx, s, Config{TokenGrace: time.Minute, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	if tokens != 1 || sessions != 1 {
		t.Fatalf("pruned %d token rows and %d sessions, want 1 and 1", tokens, sessions)
	}
	if _, err := s.GetSession(ctx, "new"); err != nil {
		t.Fatalf("a session inside the retention was pruned: %v", err)
	}
	if _, err := s.GetSession(ctx, "old"); err == nil {
		t.Fatal("a session past the retention was kept")
	}
	// The jti still inside its grace stays consumed.
	if _, err := s.UseSessionToken(ctx, "in-grace", now.Add(-30*time.Second), 1); err == nil {
		t.Fatal("a jti inside its grace was pruned and could be consumed again")
	}
}
