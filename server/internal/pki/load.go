package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/outposthq/outpost/dataplane/transport"
)

// LoadOrCreate loads the Authority kept in dir, creating what is missing.
//
// In a directory holding none of its files (first start) it creates the CA,
// the server key and certificate, and the token key, creating dir (0700) if
// needed. Later it loads them; a missing server.key (with no server.pem) or
// token.key is re-created with a warning, since agents pinning the old key,
// or tokens signed with it, stop working. The CA is never re-created over
// existing files.
//
// The server certificate is re-issued with the same key when it expires
// within ServerRenewBefore, is not yet valid, or its names differ from
// cfg.Hostnames.
//
// Errors: a *FileError naming the file when one is unreadable, corrupt, of
// the wrong type, not matching its partner (ca.pem vs ca.key, server.pem vs
// server.key or not issued by the CA), missing while its partner exists, or
// when the CA has expired; a plain error for invalid options or host names.
func LoadOrCreate(dir string, cfg Config) (*Authority, error) {
	if dir == "" {
		return nil, errors.New("pki: no directory given")
	}
	a, err := newAuthority(dir, cfg)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}

	present := make(map[string]bool)
	for _, f := range []string{CACertFile, CAKeyFile, ServerCertFile, ServerKeyFile, TokenKeyFile} {
		ok, err := exists(a.path(f))
		if err != nil {
			return nil, err
		}
		present[f] = ok
	}
	fresh, err := a.loadOrCreateCA(present)
	if err != nil {
		return nil, err
	}
	if err := a.loadOrCreateTokenKey(present[TokenKeyFile], fresh); err != nil {
		return nil, err
	}
	if err := a.loadOrCreateServer(present, fresh); err != nil {
		return nil, err
	}
	return a, nil
}

// newAuthority returns an empty Authority kept in dir ("" for none) with
// cfg defaulted and checked and its host names parsed.
func newAuthority(dir string, cfg Config) (*Authority, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	names, err := parseHostNames(cfg.Hostnames)
	if err != nil {
		return nil, err
	}
	return &Authority{dir: dir, cfg: cfg, log: cfg.Logger, names: names}, nil
}

func (a *Authority) path(file string) string { return filepath.Join(a.dir, file) }

// loadOrCreateCA loads the CA or, in an empty directory, creates it. fresh
// reports whether it was created.
func (a *Authority) loadOrCreateCA(present map[string]bool) (fresh bool, err error) {
	switch {
	case present[CACertFile] && present[CAKeyFile]:
		return false, a.loadCA()
	case present[CAKeyFile]:
		return false, fileErrorf(a.path(CACertFile), "missing while %s exists; restore it from a backup", CAKeyFile)
	case present[CACertFile]:
		return false, fileErrorf(a.path(CAKeyFile), "missing while %s exists; restore it from a backup", CACertFile)
	}
	for _, f := range []string{ServerKeyFile, ServerCertFile, TokenKeyFile} {
		if present[f] {
			return false, fmt.Errorf("pki: %s and %s are missing but %s exists: refusing to create a new CA "+
				"for an existing gateway (restore the CA files, or remove all of %s, %s, %s, %s and %s to start over)",
				a.path(CACertFile), a.path(CAKeyFile), a.path(f),
				CACertFile, CAKeyFile, ServerCertFile, ServerKeyFile, TokenKeyFile)
		}
	}
	return true, a.createCA()
}

func (a *Authority) loadCA() error {
	certPath, keyPath := a.path(CACertFile), a.path(CAKeyFile)
	key, err := a.loadKeyChecked(keyPath)
	if err != nil {
		return err
	}
	cert, err := loadCert(certPath)
	if err != nil {
		return err
	}
	if err := a.checkCA(cert, key, keyPath); err != nil {
		return &FileError{Path: certPath, Err: err}
	}
	a.setCA(cert, key)
	a.log.Info("loaded CA", "file", certPath, "ca_spki_sha256", a.caSPKI, "not_after", cert.NotAfter)
	a.warnCAExpiry()
	return nil
}

// checkCA reports why cert, with key (read from keyFrom), cannot serve as
// the CA now, or nil.
func (a *Authority) checkCA(cert *x509.Certificate, key *ecdsa.PrivateKey, keyFrom string) error {
	switch {
	case !cert.BasicConstraintsValid || !cert.IsCA:
		return errors.New("not a CA certificate")
	case !key.PublicKey.Equal(cert.PublicKey):
		return fmt.Errorf("does not match the key in %s", keyFrom)
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		return fmt.Errorf("bad self-signature: %w", err)
	}
	if now := a.cfg.Now(); !now.Before(cert.NotAfter) {
		return fmt.Errorf("the CA expired at %s; every agent must be re-enrolled under a new CA "+
			"(remove all the PKI files to create one)", cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

func (a *Authority) createCA() error {
	cert, key, err := newCA(a.cfg)
	if err != nil {
		return err
	}
	// The key first: a crash in between leaves ca.key without ca.pem, which
	// LoadOrCreate reports instead of silently starting another CA.
	if err := writeKey(a.path(CAKeyFile), key); err != nil {
		return err
	}
	if err := writeCert(a.path(CACertFile), cert.Raw); err != nil {
		return err
	}
	a.setCA(cert, key)
	a.log.Info("created CA", "file", a.path(CACertFile), "ca_spki_sha256", a.caSPKI, "not_after", cert.NotAfter)
	return nil
}

// newCA makes a new self-signed CA certificate and its key.
func newCA(cfg Config) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), cfg.Rand)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: generate CA key: %w", err)
	}
	serial, err := newSerial(cfg.Rand)
	if err != nil {
		return nil, nil, err
	}
	now := cfg.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "Outpost Gateway CA", Organization: []string{"Outpost"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.AddDate(caValidityYears, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(cfg.Rand, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: parse new CA certificate: %w", err)
	}
	return cert, key, nil
}

func (a *Authority) setCA(cert *x509.Certificate, key *ecdsa.PrivateKey) {
	a.caCert, a.caKey = cert, key
	a.caPEM = certPEM(cert.Raw)
	a.caPool = x509.NewCertPool()
	a.caPool.AddCert(cert)
	a.caSPKI = transport.SPKISHA256(cert)
}

// warnCAExpiry logs when the CA itself is close to expiry: server and agent
// certificates are capped at its NotAfter, so re-issues stop helping.
func (a *Authority) warnCAExpiry() {
	if left := a.caCert.NotAfter.Sub(a.cfg.Now()); left <= a.cfg.ServerRenewBefore {
		a.log.Warn("the CA expires soon; certificates cannot outlive it, plan a new CA and re-enrollment",
			"not_after", a.caCert.NotAfter, "left", left.Round(time.Hour))
	}
}

func (a *Authority) loadOrCreateTokenKey(present, fresh bool) error {
	path := a.path(TokenKeyFile)
	if present {
		key, err := a.loadKeyChecked(path)
		if err != nil {
			return err
		}
		a.tokenKey = key
		a.log.Info("loaded token key", "file", path)
		return nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), a.cfg.Rand)
	if err != nil {
		return fmt.Errorf("pki: generate token key: %w", err)
	}
	if err := writeKey(path, key); err != nil {
		return err
	}
	a.tokenKey = key
	if fresh {
		a.log.Info("created token key", "file", path)
	} else {
		a.log.Warn("token key was missing: created a new one; tokens signed with the old key are no longer accepted", "file", path)
	}
	return nil
}

func (a *Authority) loadOrCreateServer(present map[string]bool, fresh bool) error {
	keyPath, certPath := a.path(ServerKeyFile), a.path(ServerCertFile)
	var key *ecdsa.PrivateKey
	switch {
	case present[ServerKeyFile]:
		k, err := a.loadKeyChecked(keyPath)
		if err != nil {
			return err
		}
		key = k
		a.log.Info("loaded server key", "file", keyPath)
	case present[ServerCertFile]:
		return fileErrorf(keyPath, "missing while %s exists; restore it from a backup, or remove %s to create "+
			"a new server key (agents pinning the old key must then be re-enrolled)", ServerCertFile, ServerCertFile)
	default:
		k, err := ecdsa.GenerateKey(elliptic.P256(), a.cfg.Rand)
		if err != nil {
			return fmt.Errorf("pki: generate server key: %w", err)
		}
		if err := writeKey(keyPath, k); err != nil {
			return err
		}
		key = k
		if fresh {
			a.log.Info("created server key", "file", keyPath)
		} else {
			a.log.Warn("server key was missing: created a new one; agents pinning the old server key will refuse the gateway", "file", keyPath)
		}
	}
	spki, err := keySPKI(&key.PublicKey)
	if err != nil {
		return fmt.Errorf("pki: server key: %w", err)
	}
	a.serverKey, a.serverSPKI = key, spki

	a.renewMu.Lock()
	defer a.renewMu.Unlock()
	now := a.cfg.Now()
	if !present[ServerCertFile] {
		return a.reissueServerLocked(now, "created")
	}
	cert, err := loadCert(certPath)
	if err != nil {
		return err
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return fileErrorf(certPath, "does not match the key in %s", keyPath)
	}
	if err := cert.CheckSignatureFrom(a.caCert); err != nil {
		return fileErrorf(certPath, "not issued by %s: %w", a.path(CACertFile), err)
	}
	a.setServer(cert)
	a.log.Info("loaded server certificate", "file", certPath, "not_after", cert.NotAfter,
		"server_spki_sha256", a.serverSPKI)
	if reason := a.reissueReason(cert, now); reason != "" {
		return a.reissueServerLocked(now, reason)
	}
	return nil
}

// loadKeyChecked loads a private key and warns when its file is readable by
// others.
func (a *Authority) loadKeyChecked(path string) (*ecdsa.PrivateKey, error) {
	key, err := loadKey(path)
	if err != nil {
		return nil, err
	}
	if tooOpen(path) {
		a.log.Warn("private key file is readable by other users; chmod 600 it", "file", path)
	}
	return key, nil
}

// RenewServerIfNeeded re-issues the server certificate, with the same key,
// when it expires within ServerRenewBefore, is not yet valid (the clock
// moved back), or its names differ from the configured ones. The new
// certificate is written to server.pem (by an Authority kept in files) and
// served by GetCertificate at once.
// It reports whether a new certificate was issued. On error the current
// certificate stays in use. Safe for concurrent use; call it periodically.
func (a *Authority) RenewServerIfNeeded() (renewed bool, err error) {
	a.renewMu.Lock()
	defer a.renewMu.Unlock()
	now := a.cfg.Now()
	reason := a.reissueReason(a.ServerCert(), now)
	if reason == "" {
		return false, nil
	}
	if err := a.reissueServerLocked(now, reason); err != nil {
		return false, err
	}
	return true, nil
}

// reissueReason says why cert must be re-issued at now, or "" if it need not.
func (a *Authority) reissueReason(cert *x509.Certificate, now time.Time) string {
	switch {
	case now.Before(cert.NotBefore):
		return "not yet valid"
	case cert.NotAfter.Sub(now) <= a.cfg.ServerRenewBefore && cert.NotAfter.Before(a.caCert.NotAfter):
		// A certificate already capped at the CA's expiry cannot be
		// extended; warnCAExpiry covers that case.
		return "expires soon"
	case !certNames(cert).equal(a.names):
		return "host names changed"
	case replicaOf(cert) != a.cfg.ReplicaID:
		return "replica id changed"
	}
	return ""
}

// reissueServerLocked issues a server certificate for the current key and
// names, writes it and swaps it in. renewMu must be held.
func (a *Authority) reissueServerLocked(now time.Time, reason string) error {
	serial, err := newSerial(a.cfg.Rand)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: a.names.cn},
		NotBefore:             now.Add(-backdate),
		NotAfter:              capAt(now.Add(a.cfg.ServerValidity), a.caCert.NotAfter),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              a.names.dns,
		IPAddresses:           a.names.netIPs(),
	}
	if tmpl.URIs, err = replicaURIs(a.cfg.ReplicaID); err != nil {
		return fmt.Errorf("pki: issue server certificate: %w", err)
	}
	der, err := x509.CreateCertificate(a.cfg.Rand, tmpl, a.caCert, &a.serverKey.PublicKey, a.caKey)
	if err != nil {
		return fmt.Errorf("pki: issue server certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("pki: parse new server certificate: %w", err)
	}
	// An Authority built from shared secrets (New) keeps its certificate
	// in memory: each replica issues its own at start.
	where := "memory"
	if a.dir != "" {
		where = a.path(ServerCertFile)
		if err := writeCert(where, der); err != nil {
			return err
		}
	}
	a.setServer(cert)
	a.log.Info("issued server certificate", "reason", reason, "file", where,
		"not_after", cert.NotAfter, "dns_names", cert.DNSNames, "ip_addresses", a.names.ips,
		"replica_id", a.cfg.ReplicaID, "server_spki_sha256", a.serverSPKI)
	return nil
}

func (a *Authority) setServer(cert *x509.Certificate) {
	a.server.Store(&tls.Certificate{
		Certificate: [][]byte{cert.Raw, a.caCert.Raw},
		PrivateKey:  a.serverKey,
		Leaf:        cert,
	})
}
