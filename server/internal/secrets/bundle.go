package secrets

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/outposthq/outpost/internal/atomicfile"
	"github.com/outposthq/outpost/server/internal/pki"
	"github.com/outposthq/outpost/server/internal/seal"
	"github.com/outposthq/outpost/server/internal/store"
)

// BundleFormat names the format of a bundle file.
const BundleFormat = "outpost-secrets/1"

// rowsName is the record name (the additional data) of a bundle's rows.
const rowsName = "store-rows"

// maxBundle bounds the size of a bundle file read back.
const maxBundle = 1 << 30

// bundleFile is a bundle as written, in JSON: the secrets as the store
// keeps them (each record sealed for its name) and, optionally, the store's
// rows as JSON sealed for the name "store-rows". Nothing in it is readable
// without the seal key, and nothing can be altered or swapped unnoticed.
type bundleFile struct {
	Format    string         `json:"format"`
	SealKeyID string         `json:"seal_key_id"`
	CreatedAt time.Time      `json:"created_at"`
	Secrets   []store.Secret `json:"secrets"`
	Rows      []byte         `json:"rows,omitempty"`
}

// Bundle is what a bundle file carries.
type Bundle struct {
	Secrets pki.Secrets
	// Rows are the store's rows, or nil for a bundle of the secrets only.
	Rows *store.Rows
}

// WriteBundle seals b under key and writes it to path, mode 0600. It
// never replaces a file: an existing path is an error.
func WriteBundle(path string, key *seal.Key, b Bundle, now time.Time) error {
	sealed, err := Seal(key, b.Secrets, now)
	if err != nil {
		return err
	}
	f := bundleFile{Format: BundleFormat, SealKeyID: key.ID(), CreatedAt: now.UTC(), Secrets: sealed}
	if b.Rows != nil {
		raw, err := json.Marshal(b.Rows)
		if err != nil {
			return fmt.Errorf("secrets: encode rows: %w", err)
		}
		if f.Rows, err = key.Seal(rowsName, raw); err != nil {
			return err
		}
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("secrets: encode bundle: %w", err)
	}
	if err := atomicfile.WriteNew(path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("secrets: bundle: %w", err)
	}
	return nil
}

// ReadBundle reads and opens the bundle in path under key. Errors:
// ErrWrongKey (with both key ids) when another key sealed it; a damaged or
// altered bundle or one of another format.
func ReadBundle(path string, key *seal.Key) (Bundle, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return Bundle{}, fmt.Errorf("secrets: bundle: %w", err)
	}
	if fi.Size() > maxBundle {
		return Bundle{}, fmt.Errorf("secrets: bundle %s: %d bytes, more than a bundle can be", path, fi.Size())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return Bundle{}, fmt.Errorf("secrets: bundle: %w", err)
	}
	var f bundleFile
	if err := json.Unmarshal(data, &f); err != nil {
		return Bundle{}, fmt.Errorf("secrets: bundle %s: %w", path, err)
	}
	if f.Format != BundleFormat {
		return Bundle{}, fmt.Errorf("secrets: bundle %s: format %q, want %q", path, f.Format, BundleFormat)
	}
	var b Bundle
	if b.Secrets, err = Open(key, f.Secrets); err != nil {
		return Bundle{}, fmt.Errorf("bundle %s: %w", path, err)
	}
	if f.Rows != nil {
		raw, err := key.Open(rowsName, f.Rows)
		if errors.Is(err, seal.ErrWrongKey) {
			return Bundle{}, fmt.Errorf("bundle %s: %w: %v", path, ErrWrongKey, err)
		}
		if err != nil {
			return Bundle{}, fmt.Errorf("bundle %s: %w", path, err)
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		var rows store.Rows
		if err := dec.Decode(&rows); err != nil {
			return Bundle{}, fmt.Errorf("bundle %s: rows: %w", path, err)
		}
		b.Rows = &rows
	}
	return b, nil
}
