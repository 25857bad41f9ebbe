package store

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
)

// migrationFiles holds the schema migrations, named NNNN_description.sql and
// applied in version order. A released migration is never edited: changes go
// in a new file.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

type migration struct {
	version int64
	name    string
	sql     string
}

// loadMigrations reads the embedded migrations and checks that their
// versions run 1, 2, 3… without gaps or duplicates.
func loadMigrations(fsys fs.FS) ([]migration, error) {
	names, err := fs.Glob(fsys, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, name := range names {
		base := path.Base(name)
		prefix, _, ok := strings.Cut(base, "_")
		v, err := strconv.ParseInt(prefix, 10, 64)
		if !ok || err != nil || v < 1 {
			return nil, fmt.Errorf("migration %s: name must start with a positive version and '_'", base)
		}
		body, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: base, sql: string(body)})
	}
	slices.SortFunc(ms, func(a, b migration) int { return int(a.version - b.version) })
	for i, m := range ms {
		if m.version != int64(i+1) {
			return nil, fmt.Errorf("migration %s: version %d, want %d (gap or duplicate)", m.name, m.version, i+1)
		}
	}
	return ms, nil
}

// migrate applies the pending migrations, each in its own transaction with
// its schema_migrations row, and returns the resulting schema version. It is
// idempotent and safe against another process migrating concurrently: the
// write lock is taken before checking whether a version is applied.
func (s *SQLite) migrate(ctx context.Context) (int64, error) {
	ms, err := loadMigrations(migrationFiles)
	if err != nil {
		return 0, fmt.Errorf("store: %w", err)
	}
	err = s.write(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
    version    BIGINT NOT NULL PRIMARY KEY,
    applied_at BIGINT NOT NULL
)`)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("store: create schema_migrations: %w", err)
	}
	var current sql.NullInt64
	if err := s.db.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&current); err != nil {
		return 0, fmt.Errorf("store: read schema version: %w", err)
	}
	latest := int64(len(ms))
	if current.Int64 > latest {
		return 0, fmt.Errorf("%w: database at version %d, this gateway knows up to %d", ErrSchemaTooNew, current.Int64, latest)
	}
	for _, m := range ms {
		applied := false
		err := s.write(ctx, func(tx *sql.Tx) error {
			var one int
			err := tx.QueryRowContext(ctx, `SELECT 1 FROM schema_migrations WHERE version = $1`, m.version).Scan(&one)
			switch {
			case err == nil:
				return nil // applied earlier, or by another process meanwhile
			case !errors.Is(err, sql.ErrNoRows):
				return err
			}
			if _, err := tx.ExecContext(ctx, m.sql); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)`,
				m.version, millis(s.now())); err != nil {
				return err
			}
			applied = true
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("store: migration %s: %w", m.name, err)
		}
		if applied {
			s.log.Info("applied schema migration", "version", m.version, "name", m.name)
		}
	}
	return latest, nil
}
