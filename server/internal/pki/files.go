package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"

	"github.com/outposthq/outpost/internal/atomicfile"
)

// PEM block types of the files.
const (
	pemCertificate = "CERTIFICATE"
	pemPrivateKey  = "PRIVATE KEY"
)

// FileError reports a problem with one of the Authority's files: unreadable,
// corrupt, missing while its partner exists, or not matching the others.
type FileError struct {
	Path string // the file at fault
	Err  error  // what is wrong with it
}

func (e *FileError) Error() string { return "pki: " + e.Path + ": " + e.Err.Error() }

// Unwrap returns the underlying error (an *fs.PathError for I/O failures).
func (e *FileError) Unwrap() error { return e.Err }

func fileErrorf(path, format string, args ...any) error {
	return &FileError{Path: path, Err: fmt.Errorf(format, args...)}
}

// exists reports whether path exists. Errors other than "does not exist"
// (permissions, I/O) are returned.
func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, &FileError{Path: path, Err: err}
	}
}

// decodePEM returns the bytes of the one PEM block of type want that data
// holds (whitespace around it is allowed).
func decodePEM(data []byte, want string) ([]byte, error) {
	block, rest := pem.Decode(bytes.TrimSpace(data))
	switch {
	case block == nil:
		return nil, errors.New("not a PEM file")
	case block.Type != want:
		return nil, fmt.Errorf("PEM block is %q, want %q", block.Type, want)
	case len(bytes.TrimSpace(rest)) != 0:
		return nil, fmt.Errorf("unexpected data after the %s block", want)
	}
	return block.Bytes, nil
}

// loadKey reads a PKCS#8 ECDSA P-256 private key.
func loadKey(path string) (*ecdsa.PrivateKey, error) { return loadFile(path, parseKeyPEM) }

// loadFile reads path and decodes it with parse; errors are *FileError.
func loadFile[T any](path string, parse func([]byte) (T, error)) (T, error) {
	var zero T
	data, err := os.ReadFile(path)
	if err != nil {
		return zero, &FileError{Path: path, Err: err}
	}
	v, err := parse(data)
	if err != nil {
		return zero, &FileError{Path: path, Err: err}
	}
	return v, nil
}

// parseKeyPEM decodes a PKCS#8 ECDSA P-256 private key in PEM.
func parseKeyPEM(data []byte) (*ecdsa.PrivateKey, error) {
	der, err := decodePEM(data, pemPrivateKey)
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("corrupt private key: %w", err)
	}
	ec, ok := k.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, fmt.Errorf("private key is %s, want ECDSA P-256", keyKind(k))
	}
	return ec, nil
}

// loadCert reads a single certificate.
func loadCert(path string) (*x509.Certificate, error) { return loadFile(path, parseCertPEM) }

// parseCertPEM decodes a single certificate in PEM.
func parseCertPEM(data []byte) (*x509.Certificate, error) {
	der, err := decodePEM(data, pemCertificate)
	if err != nil {
		return nil, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("corrupt certificate: %w", err)
	}
	return c, nil
}

// writeKey writes key as PKCS#8 PEM, owner-only.
func writeKey(path string, key *ecdsa.PrivateKey) error {
	data, err := keyPEM(key)
	if err != nil {
		return fmt.Errorf("pki: encode %s: %w", path, err)
	}
	if err := atomicfile.WriteFile(path, data, keyFileMode); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	return nil
}

// keyPEM encodes key as PKCS#8 PEM.
func keyPEM(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der}), nil
}

// writeCert writes a certificate as PEM, world-readable.
func writeCert(path string, der []byte) error {
	if err := atomicfile.WriteFile(path, certPEM(der), certFileMode); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	return nil
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: der})
}

// tooOpen reports whether a key file is readable by others than its owner.
// Windows has no such mode bits.
func tooOpen(path string) bool {
	if runtime.GOOS == "windows" {
		return false
	}
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().Perm()&0o077 != 0
}
