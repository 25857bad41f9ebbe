package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

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

// ExportOptions says what ExportSecrets reads and where it writes.
type ExportOptions struct {
	// DataDir is the gateway's data directory: its CA and key files and,
	// unless Store is a PostgreSQL DSN, its SQLite store. Required
	// unless Store is a PostgreSQL DSN.
	DataDir string
	// Store is the gateway's Config.Store. With a PostgreSQL DSN, the
	// secrets are read from that store (opened under SealKeyFile).
	Store string
	// SealKeyFile is the key the bundle is sealed under: the one the
	// target gateways are given. Required.
	SealKeyFile string
	// Out is the bundle file to create (mode 0600; never replaced).
	// Required.
	Out string
	// SecretsOnly leaves the store's rows (API keys, agents, tokens,
	// audit) out of the bundle.
	SecretsOnly bool
}

// ImportOptions says what ImportSecrets reads and where it writes.
type ImportOptions struct {
	// Store is the PostgreSQL DSN of the target store, migrated if
	// needed. Required.
	Store string
	// SealKeyFile is the key the bundle was sealed under, which the
	// gateways on Store are given. Required.
	SealKeyFile string
	// In is the bundle file ExportSecrets wrote. Required.
	In string
	// SecretsOnly imports the secrets and skips the bundle's rows.
	SecretsOnly bool
}

// TransferSummary says what ExportSecrets or ImportSecrets moved.
type TransferSummary struct {
	// CASPKISHA256 is the pin of the CA moved: agents' enrollment pin.
	CASPKISHA256 string
	// ServerSPKISHA256 is the pin of the server key moved: what agents pin.
	ServerSPKISHA256 string
	// SealKeyID identifies the seal key of the bundle.
	SealKeyID string
	// SecretsStored is false when an import found the same secrets in the
	// target store already.
	SecretsStored bool
	// Rows counts the rows moved by table; nil when none were.
	Rows map[string]int
}

// transferTimeout bounds opening a store and moving the rows.
const transferTimeout = 5 * time.Minute

// ExportSecrets writes a gateway's CA, server key and token key, and
// unless SecretsOnly its store's rows, to a bundle file sealed under the
// seal key, for ImportSecrets on the target store. Run it with the
// gateway stopped, so that no row written after the export is lost.
// logger may be nil.
func ExportSecrets(ctx context.Context, o ExportOptions, logger hclog.Logger) (TransferSummary, error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	if o.SealKeyFile == "" || o.Out == "" || o.DataDir == "" && !isPostgresDSN(o.Store) {
		return TransferSummary{}, errors.New("export-secrets needs the seal key file, the bundle file to write, and the data directory (or a PostgreSQL store)")
	}
	key, err := seal.LoadKeyFile(o.SealKeyFile)
	if err != nil {
		return TransferSummary{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, transferTimeout)
	defer cancel()
	st, err := openStore(ctx, o.DataDir, o.Store, true, logger)
	if err != nil {
		return TransferSummary{}, err
	}
	defer st.Close()
	var b secrets.Bundle
	if isPostgresDSN(o.Store) {
		rows, err := st.ListSecrets(ctx)
		if err != nil {
			return TransferSummary{}, err
		}
		if len(rows) == 0 {
			return TransferSummary{}, errors.New("the PostgreSQL store holds no cluster secrets to export")
		}
		if b.Secrets, err = secrets.Open(key, rows); err != nil {
			return TransferSummary{}, err
		}
	} else if b.Secrets, err = pki.ReadSecrets(o.DataDir); err != nil {
		return TransferSummary{}, err
	}
	sum := TransferSummary{SealKeyID: key.ID(), SecretsStored: true}
	if !o.SecretsOnly {
		rows, err := st.ExportRows(ctx)
		if err != nil {
			return TransferSummary{}, err
		}
		b.Rows, sum.Rows = &rows, rows.Count()
	}
	if err := secrets.WriteBundle(o.Out, key, b, time.Now()); err != nil {
		return TransferSummary{}, err
	}
	return sum.withPins(b.Secrets)
}

// ImportSecrets stores a bundle's secrets in the target PostgreSQL store
// (where they may already be, the same: a re-run), then, unless
// SecretsOnly or the bundle has none, its rows, which go into an empty
// store only. The gateways started on the store then share the CA, the
// server key and the token key of the exported gateway, so its enrolled
// agents keep their certificates and their server pin. logger may be nil.
func ImportSecrets(ctx context.Context, o ImportOptions, logger hclog.Logger) (TransferSummary, error) {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	if !isPostgresDSN(o.Store) {
		return TransferSummary{}, errors.New("import-secrets writes into a PostgreSQL store: give its postgres:// URL (a SQLite gateway keeps its secrets in files)")
	}
	if o.SealKeyFile == "" || o.In == "" {
		return TransferSummary{}, errors.New("import-secrets needs the seal key file and the bundle file")
	}
	key, err := seal.LoadKeyFile(o.SealKeyFile)
	if err != nil {
		return TransferSummary{}, err
	}
	b, err := secrets.ReadBundle(o.In, key)
	if err != nil {
		return TransferSummary{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, transferTimeout)
	defer cancel()
	st, err := openStore(ctx, "", o.Store, false, logger)
	if err != nil {
		return TransferSummary{}, err
	}
	defer st.Close()
	sum := TransferSummary{SealKeyID: key.ID()}
	if sum.SecretsStored, err = secrets.Put(ctx, st, key, b.Secrets, time.Now()); err != nil {
		return TransferSummary{}, err
	}
	if b.Rows != nil && !o.SecretsOnly {
		if err := st.ImportRows(ctx, *b.Rows); err != nil {
			return TransferSummary{}, fmt.Errorf("the secrets are in the store, but its rows were not imported (import with --secrets-only to skip them): %w", err)
		}
		sum.Rows = b.Rows.Count()
	}
	return sum.withPins(b.Secrets)
}

// withPins fills the summary's pins from sec.
func (s TransferSummary) withPins(sec pki.Secrets) (TransferSummary, error) {
	a, err := pki.New(sec, pki.Config{})
	if err != nil {
		return TransferSummary{}, err
	}
	s.CASPKISHA256, s.ServerSPKISHA256 = a.CASPKISHA256(), a.ServerSPKISHA256()
	return s, nil
}
