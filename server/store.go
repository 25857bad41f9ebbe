package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/hashicorp/go-hclog"

	"github.com/outposthq/outpost/server/internal/store"
)

// errStoreDSN is the complaint about a Config.Store that selects no store.
// It never repeats the value, which may hold a password.
var errStoreDSN = errors.New(`store: want a postgres:// or postgresql:// URL, or empty for the SQLite file in data_dir`)

// isPostgresDSN reports whether s selects PostgreSQL (Config.Store).
func isPostgresDSN(s string) bool {
	return strings.HasPrefix(s, "postgres://") || strings.HasPrefix(s, "postgresql://")
}

// validStore checks a Config.Store value.
func validStore(s string) error {
	if s != "" && !isPostgresDSN(s) {
		return errStoreDSN
	}
	return nil
}

// openStore opens the store that dsn (Config.Store) selects: the
// PostgreSQL database it names, or the SQLite file in dataDir when it is
// empty. With mustExist, a missing SQLite file is an error rather than
// created (a PostgreSQL database is migrated either way).
func openStore(ctx context.Context, dataDir, dsn string, mustExist bool, logger hclog.Logger) (store.Store, error) {
	if err := validStore(dsn); err != nil {
		return nil, err
	}
	cfg := store.Config{Logger: logger.Named("store")}
	// A failed open returns a nil interface, never a nil *Postgres or
	// *SQLite in one (which Close would call).
	if isPostgresDSN(dsn) {
		p, err := store.OpenPostgres(ctx, dsn, cfg)
		if err != nil {
			return nil, err
		}
		return p, nil
	}
	path := filepath.Join(dataDir, storeFile)
	if mustExist {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("no gateway store at %s (start the gateway once with this --data-dir, or give its --store): %w", path, err)
		}
	}
	l, err := store.OpenSQLite(ctx, path, cfg)
	if err != nil {
		return nil, err
	}
	return l, nil
}
