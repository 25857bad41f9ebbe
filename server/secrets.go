package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"

	"github.com/outposthq/outpost/server/internal/pki"
	"github.com/outposthq/outpost/server/internal/seal"
	"github.com/outposthq/outpost/server/internal/secrets"
	"github.com/outposthq/outpost/server/internal/store"
)

// sealKeyHint says how to make a seal key.
const sealKeyHint = "create one with `outpost gateway seal-key create --out FILE` and give every gateway on the database the same file"

// validSealKey checks Config.SealKeyFile against Config.Store: required
// with PostgreSQL, refused with SQLite.
func validSealKey(dsn, keyFile string) error {
	switch {
	case isPostgresDSN(dsn) && keyFile == "":
		return errors.New("seal_key_file (--seal-key-file) is required with a PostgreSQL store: the CA, server key and token key are kept there sealed under it; " + sealKeyHint)
	case !isPostgresDSN(dsn) && keyFile != "":
		return errors.New("seal_key_file (--seal-key-file) applies to a PostgreSQL store only: with the SQLite store the CA, server key and token key are files in data_dir")
	}
	return nil
}

// loadAuthority returns the gateway's CA: from the files in cfg.DataDir
// with SQLite, or from the secrets sealed in st with PostgreSQL (created
// there by the first gateway on the database).
func loadAuthority(ctx context.Context, cfg Config, st store.Store, pc pki.Config, log hclog.Logger) (*pki.Authority, error) {
	if !isPostgresDSN(cfg.Store) {
		return pki.LoadOrCreate(cfg.DataDir, pc)
	}
	key, err := seal.LoadKeyFile(cfg.SealKeyFile)
	if err != nil {
		return nil, err
	}
	if err := refuseOrphanFiles(ctx, cfg.DataDir, st); err != nil {
		return nil, err
	}
	sec, created, err := secrets.LoadOrCreate(ctx, st, key, pc)
	if err != nil {
		return nil, err
	}
	if created {
		log.Info("created the cluster secrets (CA, server key, token key), sealed in the store", "seal_key_id", key.ID())
	} else {
		log.Info("loaded the cluster secrets from the store", "seal_key_id", key.ID())
	}
	return pki.New(sec, pc)
}

// refuseOrphanFiles refuses to create secrets in a store that has none
// when the data directory holds a CA of its own: that gateway's agents
// would be cut off by a new CA. Its secrets belong in the store first
// (export-secrets, import-secrets).
func refuseOrphanFiles(ctx context.Context, dataDir string, st store.Store) error {
	var found []string
	for _, name := range pki.SecretNames {
		if _, err := os.Stat(filepath.Join(dataDir, name)); err == nil {
			found = append(found, name)
		}
	}
	if len(found) == 0 {
		return nil
	}
	rows, err := st.ListSecrets(ctx)
	if err != nil {
		return fmt.Errorf("secrets: read: %w", err)
	}
	if len(rows) > 0 {
		return nil
	}
	return fmt.Errorf("the data directory %s holds %v but the PostgreSQL store has no cluster secrets yet: "+
		"move this gateway's CA and keys into the store first (outpost gateway export-secrets, then import-secrets), "+
		"or remove those files to start a new CA (enrolled agents must then enroll again)", dataDir, found)
}

// CreateSealKeyFile writes a new seal key (Config.SealKeyFile) to path,
// mode 0600, and returns its id (which logs and errors show; it does not
// reveal the key). It never replaces an existing file.
func CreateSealKeyFile(path string) (id string, err error) {
	k, err := seal.CreateKeyFile(path, nil)
	if err != nil {
		return "", err
	}
	return k.ID(), nil
}
