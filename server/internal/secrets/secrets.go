// Package secrets keeps the secrets that gateway replicas share (DESIGN.md
// §10: the CA certificate and key, the server key and the token key, see
// pki.Secrets) in the store, each record sealed under the seal key with its
// name as the additional data. The first gateway on an empty store creates
// them; every later one, and every other replica, loads them.
//
// It also moves a gateway's secrets between stores through a Bundle: a
// file of the same sealed records, written by export-secrets and stored by
// import-secrets.
package secrets

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/outposthq/outpost/dataplane/transport"
	"github.com/outposthq/outpost/server/internal/pki"
	"github.com/outposthq/outpost/server/internal/seal"
	"github.com/outposthq/outpost/server/internal/store"
)

// Store is where the sealed records live; store.Store is one.
type Store interface {
	CreateSecrets(ctx context.Context, secrets []store.Secret) error
	ListSecrets(ctx context.Context) ([]store.Secret, error)
}

// Errors callers branch on; match them with errors.Is.
var (
	// ErrWrongKey: the records were sealed under another seal key. The
	// error's text gives both key ids.
	ErrWrongKey = errors.New("secrets: wrong seal key")
	// ErrOtherSecrets: the store already holds secrets other than the
	// ones being imported.
	ErrOtherSecrets = errors.New("secrets: the store holds other secrets")
)

// Seal seals every record of sec under key, as the rows to store; now is
// their creation time.
func Seal(key *seal.Key, sec pki.Secrets, now time.Time) ([]store.Secret, error) {
	recs, err := sec.Records()
	if err != nil {
		return nil, err
	}
	out := make([]store.Secret, 0, len(recs))
	for _, name := range pki.SecretNames {
		sealed, err := key.Seal(name, recs[name])
		if err != nil {
			return nil, err
		}
		out = append(out, store.Secret{Name: name, Sealed: sealed, CreatedAt: now})
	}
	return out, nil
}

// Open opens rows under key and decodes them: they must be exactly the
// records of pki.SecretNames. Errors: ErrWrongKey (with both key ids) when
// another key sealed them; otherwise what is wrong, naming the record.
func Open(key *seal.Key, rows []store.Secret) (pki.Secrets, error) {
	recs := make(map[string][]byte, len(rows))
	for _, r := range rows {
		plain, err := key.Open(r.Name, r.Sealed)
		var wk *seal.WrongKeyError
		switch {
		case errors.As(err, &wk):
			return pki.Secrets{}, fmt.Errorf("%w: the seal key given (id %s) is not the one the secrets were sealed with (id %s); give every gateway the same seal key file",
				ErrWrongKey, wk.Have, wk.Sealed)
		case err != nil:
			return pki.Secrets{}, fmt.Errorf("secrets: %w", err)
		}
		recs[r.Name] = plain
	}
	return pki.ParseSecrets(recs)
}

// LoadOrCreate returns the secrets in st, opened under key. On a store
// without secrets it first creates fresh ones (pki.NewSecrets with cfg)
// and stores them all at once; when another gateway does so at the same
// time, exactly one set is stored and both return it. created reports
// whether this call's set was stored. Errors: ErrWrongKey; a store holding
// an incomplete or damaged set (never replaced: that would change the CA
// under every enrolled agent); the store's errors.
func LoadOrCreate(ctx context.Context, st Store, key *seal.Key, cfg pki.Config) (_ pki.Secrets, created bool, _ error) {
	rows, err := st.ListSecrets(ctx)
	if err != nil {
		return pki.Secrets{}, false, fmt.Errorf("secrets: read: %w", err)
	}
	if len(rows) == 0 {
		fresh, err := pki.NewSecrets(cfg)
		if err != nil {
			return pki.Secrets{}, false, err
		}
		now := time.Now
		if cfg.Now != nil {
			now = cfg.Now
		}
		sealed, err := Seal(key, fresh, now())
		if err != nil {
			return pki.Secrets{}, false, err
		}
		switch err := st.CreateSecrets(ctx, sealed); {
		case err == nil:
			return fresh, true, nil
		case !errors.Is(err, store.ErrConflict):
			return pki.Secrets{}, false, fmt.Errorf("secrets: create: %w", err)
		}
		// Another gateway stored its set first: use that one.
		if rows, err = st.ListSecrets(ctx); err != nil {
			return pki.Secrets{}, false, fmt.Errorf("secrets: read: %w", err)
		}
	}
	sec, err := Open(key, rows)
	if err != nil {
		return pki.Secrets{}, false, err
	}
	return sec, false, nil
}

// Put stores sec in st under key (an import). On a store without secrets
// it stores them and reports true; on one holding the same secrets it
// changes nothing and reports false. Errors: ErrOtherSecrets when st holds
// other secrets (or ones it cannot open under key: ErrWrongKey); the
// store's errors.
func Put(ctx context.Context, st Store, key *seal.Key, sec pki.Secrets, now time.Time) (stored bool, _ error) {
	sealed, err := Seal(key, sec, now)
	if err != nil {
		return false, err
	}
	err = st.CreateSecrets(ctx, sealed)
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, store.ErrConflict) {
		return false, fmt.Errorf("secrets: store: %w", err)
	}
	rows, err := st.ListSecrets(ctx)
	if err != nil {
		return false, fmt.Errorf("secrets: read: %w", err)
	}
	have, err := Open(key, rows)
	if err != nil {
		return false, err
	}
	if !have.Equal(sec) {
		return false, fmt.Errorf("%w (a CA with SPKI %s, the import's is %s): refusing to replace them, which would cut off every agent enrolled under them",
			ErrOtherSecrets, spkiOf(have), spkiOf(sec))
	}
	return false, nil
}

// spkiOf is the CA's pin, for messages.
func spkiOf(s pki.Secrets) string { return transport.SPKISHA256(s.CACert) }
