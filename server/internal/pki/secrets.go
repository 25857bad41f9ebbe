package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
)

// SecretNames are the records of Secrets, named as the files that hold
// them in a data directory: the CA certificate (not secret, but it must
// not be swapped), the CA key, the server key and the token key.
var SecretNames = []string{CACertFile, CAKeyFile, ServerKeyFile, TokenKeyFile}

// Secrets is the key material gateway replicas share: with it, each one
// signs agent certificates under the same CA, serves the same server key
// (which agents pin) and signs and verifies the same tokens. The server
// certificate is not part of it: each replica issues its own, for its own
// names, with the shared server key.
type Secrets struct {
	CACert    *x509.Certificate
	CAKey     *ecdsa.PrivateKey
	ServerKey *ecdsa.PrivateKey
	TokenKey  *ecdsa.PrivateKey
}

// NewSecrets creates fresh secrets: a new CA (as LoadOrCreate creates in
// an empty directory), server key and token key. Only cfg.Now and
// cfg.Rand are used.
func NewSecrets(cfg Config) (Secrets, error) {
	cfg = cfg.withDefaults()
	cert, caKey, err := newCA(cfg)
	if err != nil {
		return Secrets{}, err
	}
	server, err := ecdsa.GenerateKey(elliptic.P256(), cfg.Rand)
	if err != nil {
		return Secrets{}, fmt.Errorf("pki: generate server key: %w", err)
	}
	tok, err := ecdsa.GenerateKey(elliptic.P256(), cfg.Rand)
	if err != nil {
		return Secrets{}, fmt.Errorf("pki: generate token key: %w", err)
	}
	return Secrets{CACert: cert, CAKey: caKey, ServerKey: server, TokenKey: tok}, nil
}

// ReadSecrets reads the secrets an Authority keeps in dir (LoadOrCreate's
// files; server.pem is not among them) without creating or changing
// anything. Every one of the four files must exist. Errors: a *FileError
// naming a file that is missing, unreadable, corrupt, or (ca.pem) not a CA
// matching ca.key.
func ReadSecrets(dir string) (Secrets, error) {
	a := &Authority{dir: dir}
	var s Secrets
	var err error
	if s.CAKey, err = loadKey(a.path(CAKeyFile)); err != nil {
		return Secrets{}, err
	}
	if s.CACert, err = loadCert(a.path(CACertFile)); err != nil {
		return Secrets{}, err
	}
	if !s.CACert.IsCA || !s.CAKey.PublicKey.Equal(s.CACert.PublicKey) {
		return Secrets{}, fileErrorf(a.path(CACertFile), "not a CA certificate matching %s", a.path(CAKeyFile))
	}
	if s.ServerKey, err = loadKey(a.path(ServerKeyFile)); err != nil {
		return Secrets{}, err
	}
	if s.TokenKey, err = loadKey(a.path(TokenKeyFile)); err != nil {
		return Secrets{}, err
	}
	return s, nil
}

// Records encodes the secrets as PEM, by name (SecretNames): exactly the
// content of the files of the same names.
func (s Secrets) Records() (map[string][]byte, error) {
	if s.CACert == nil || s.CAKey == nil || s.ServerKey == nil || s.TokenKey == nil {
		return nil, errors.New("pki: incomplete secrets")
	}
	out := map[string][]byte{CACertFile: certPEM(s.CACert.Raw)}
	for name, key := range map[string]*ecdsa.PrivateKey{CAKeyFile: s.CAKey, ServerKeyFile: s.ServerKey, TokenKeyFile: s.TokenKey} {
		b, err := keyPEM(key)
		if err != nil {
			return nil, fmt.Errorf("pki: encode %s: %w", name, err)
		}
		out[name] = b
	}
	return out, nil
}

// ParseSecrets decodes what Records encoded. Every name of SecretNames
// must be present, and no other. Errors name the record at fault.
func ParseSecrets(records map[string][]byte) (Secrets, error) {
	for name := range records {
		if !slices.Contains(SecretNames, name) {
			return Secrets{}, fmt.Errorf("pki: unknown secret %q", name)
		}
	}
	for _, name := range SecretNames {
		if _, ok := records[name]; !ok {
			return Secrets{}, fmt.Errorf("pki: secret %s is missing", name)
		}
	}
	var s Secrets
	var err error
	if s.CACert, err = parseCertPEM(records[CACertFile]); err != nil {
		return Secrets{}, fmt.Errorf("pki: secret %s: %w", CACertFile, err)
	}
	for name, dst := range map[string]**ecdsa.PrivateKey{CAKeyFile: &s.CAKey, ServerKeyFile: &s.ServerKey, TokenKeyFile: &s.TokenKey} {
		if *dst, err = parseKeyPEM(records[name]); err != nil {
			return Secrets{}, fmt.Errorf("pki: secret %s: %w", name, err)
		}
	}
	return s, nil
}

// Equal reports whether s and o hold the same certificate and keys.
func (s Secrets) Equal(o Secrets) bool {
	return s.CACert != nil && o.CACert != nil && s.CACert.Equal(o.CACert) &&
		s.CAKey != nil && s.CAKey.Equal(o.CAKey) &&
		s.ServerKey != nil && s.ServerKey.Equal(o.ServerKey) &&
		s.TokenKey != nil && s.TokenKey.Equal(o.TokenKey)
}

// New builds an Authority from shared secrets, keeping nothing in files:
// it checks the CA (a CA certificate, matching its key, self-signed, not
// expired) and issues a server certificate for cfg.Hostnames with the
// shared server key, kept in memory and re-issued there by
// RenewServerIfNeeded. Errors: the CA's problem, or invalid options or
// host names.
func New(s Secrets, cfg Config) (*Authority, error) {
	a, err := newAuthority("", cfg)
	if err != nil {
		return nil, err
	}
	if s.CACert == nil || s.CAKey == nil || s.ServerKey == nil || s.TokenKey == nil {
		return nil, errors.New("pki: incomplete secrets")
	}
	if err := a.checkCA(s.CACert, s.CAKey, "secret "+CAKeyFile); err != nil {
		return nil, fmt.Errorf("pki: secret %s: %w", CACertFile, err)
	}
	a.setCA(s.CACert, s.CAKey)
	a.warnCAExpiry()
	spki, err := keySPKI(&s.ServerKey.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("pki: server key: %w", err)
	}
	a.serverKey, a.serverSPKI, a.tokenKey = s.ServerKey, spki, s.TokenKey
	a.renewMu.Lock()
	defer a.renewMu.Unlock()
	if err := a.reissueServerLocked(a.cfg.Now(), "start"); err != nil {
		return nil, err
	}
	return a, nil
}
