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

// migrationFiles holds the schema migrations, applied in version order. A
// released migration is never edited: changes go in a new file.
//
// Naming: NNNN_description.sql is one migration in portable SQL, run on
// every database. When a statement must differ, the version has no shared
// file but one per dialect, side by side: NNNN_description.sqlite.sql and
// NNNN_description.postgres.sql (both, always).
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// dialectNames are the dialects a migration may be written for.
var dialectNames = []string{"sqlite", "postgres"}

type migration struct {
	version int64
	name    string
	sql     string
}

// loadMigrations reads the migrations for dialect (see migrationFiles) and
// checks that their versions run 1, 2, 3… without gaps or duplicates, and
// that a version written per dialect has a file for each.
func loadMigrations(fsys fs.FS, dialect string) ([]migration, error) {
	names, err := fs.Glob(fsys, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	byVersion := map[int64][]migrationFile{}
	for _, name := range names {
		base := path.Base(name)
		prefix, rest, ok := strings.Cut(strings.TrimSuffix(base, ".sql"), "_")
		v, err := strconv.ParseInt(prefix, 10, 64)
		if !ok || err != nil || v < 1 {
			return nil, fmt.Errorf("migration %s: name must start with a positive version and '_'", base)
		}
		f := migrationFile{name: name}
		if i := strings.LastIndexByte(rest, '.'); i >= 0 {
			f.dialect = rest[i+1:]
			if !slices.Contains(dialectNames, f.dialect) {
				return nil, fmt.Errorf("migration %s: unknown dialect %q (want one of %v, or none)", base, f.dialect, dialectNames)
			}
		}
		byVersion[v] = append(byVersion[v], f)
	}
	var ms []migration
	for v, files := range byVersion {
		pick, err := pickMigration(files, dialect)
		if err != nil {
			return nil, fmt.Errorf("migration version %d: %w", v, err)
		}
		body, err := fs.ReadFile(fsys, files[pick].name)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: path.Base(files[pick].name), sql: string(body)})
	}
	slices.SortFunc(ms, func(a, b migration) int { return int(a.version - b.version) })
	for i, m := range ms {
		if m.version != int64(i+1) {
			return nil, fmt.Errorf("migration %s: version %d, want %d (gap)", m.name, m.version, i+1)
		}
	}
	return ms, nil
}

// migrationFile is one file of the migrations directory.
type migrationFile struct {
	name    string // path in the file system
	dialect string // "" for a shared file
}

// pickMigration chooses, among the files of one version, the one to run on
// dialect: the shared file when it is alone, else the dialect's among one
// file per dialect.
func pickMigration(files []migrationFile, dialect string) (int, error) {
	if len(files) == 1 && files[0].dialect == "" {
		return 0, nil
	}
	pick := -1
	seen := map[string]bool{}
	for i, f := range files {
		d := f.dialect
		switch {
		case d == "":
			return 0, errors.New("a shared file next to another file of the same version (duplicate, or mixed with per-dialect files)")
		case seen[d]:
			return 0, fmt.Errorf("two %s files", d)
		}
		seen[d] = true
		if d == dialect {
			pick = i
		}
	}
	if len(seen) != len(dialectNames) {
		return 0, fmt.Errorf("per-dialect files for %d of the %d dialects %v", len(seen), len(dialectNames), dialectNames)
	}
	if pick < 0 {
		return 0, fmt.Errorf("no file for dialect %q", dialect)
	}
	return pick, nil
}

// migrate applies the pending migrations, each in its own transaction with
// its schema_migrations row, and returns the resulting schema version. It
// is idempotent and safe against another process migrating concurrently:
// the dialect's migration lock is held throughout, and each migration
// checks under the write lock whether it is applied. ErrSchemaTooNew when
// the database knows versions this gateway does not.
func (s *sqlStore) migrate(ctx context.Context) (int64, error) {
	ms, err := loadMigrations(migrationFiles, s.d.name())
	if err != nil {
		return 0, fmt.Errorf("store: %w", err)
	}
	latest := int64(len(ms))
	err = s.d.migrationLock(ctx, s.db, func(c conn) error {
		if _, err := c.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
    version    BIGINT NOT NULL PRIMARY KEY,
    applied_at BIGINT NOT NULL
)`); err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
		var current sql.NullInt64
		if err := c.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&current); err != nil {
			return fmt.Errorf("read schema version: %w", err)
		}
		if current.Int64 > latest {
			return fmt.Errorf("%w: database at version %d, this gateway knows up to %d; run a gateway at least as new as the one that migrated it", ErrSchemaTooNew, current.Int64, latest)
		}
		for _, m := range ms {
			if err := s.applyMigration(ctx, c, m); err != nil {
				return fmt.Errorf("migration %s: %w", m.name, err)
			}
		}
		return nil
	})
	if err != nil {
		return 0, wrapErr("migrate", err)
	}
	return latest, nil
}

// applyMigration runs m in a transaction on c unless it is applied.
func (s *sqlStore) applyMigration(ctx context.Context, c conn, m migration) (err error) {
	tx, err := c.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			if rerr := tx.Rollback(); rerr != nil && !errors.Is(rerr, sql.ErrTxDone) {
				err = errors.Join(err, fmt.Errorf("rollback: %w", rerr))
			}
		}
	}()
	var one int
	err = tx.QueryRowContext(ctx, `SELECT 1 FROM schema_migrations WHERE version = $1`, m.version).Scan(&one)
	switch {
	case err == nil:
		return tx.Rollback() // applied earlier, or by another process meanwhile
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
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	s.log.Info("applied schema migration", "version", m.version, "name", m.name)
	return nil
}
