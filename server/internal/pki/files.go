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

// readPEM reads a file that must hold exactly one PEM block of type want
// (whitespace around it is allowed) and returns the block's bytes.
func readPEM(path, want string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &FileError{Path: path, Err: err}
	}
	block, rest := pem.Decode(bytes.TrimSpace(data))
	switch {
	case block == nil:
		return nil, fileErrorf(path, "not a PEM file")
	case block.Type != want:
		return nil, fileErrorf(path, "PEM block is %q, want %q", block.Type, want)
	case len(bytes.TrimSpace(rest)) != 0:
		return nil, fileErrorf(path, "unexpected data after the %s block", want)
	}
	return block.Bytes, nil
}

// loadKey reads a PKCS#8 ECDSA P-256 private key.
func loadKey(path string) (*ecdsa.PrivateKey, error) {
	der, err := readPEM(path, pemPrivateKey)
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fileErrorf(path, "corrupt private key: %w", err)
	}
	ec, ok := k.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, fileErrorf(path, "private key is %s, want ECDSA P-256", keyKind(k))
	}
	return ec, nil
}

// loadCert reads a single certificate.
func loadCert(path string) (*x509.Certificate, error) {
	der, err := readPEM(path, pemCertificate)
	if err != nil {
		return nil, err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fileErrorf(path, "corrupt certificate: %w", err)
	}
	return c, nil
}

// writeKey writes key as PKCS#8 PEM, owner-only.
func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("pki: encode %s: %w", path, err)
	}
	data := pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: der})
	if err := atomicfile.WriteFile(path, data, keyFileMode); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	return nil
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
