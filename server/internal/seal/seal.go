// Package seal encrypts the secrets that gateway replicas share (DESIGN.md
// §10) under a key-encryption key that every replica is given: AES-256-GCM,
// with the record's name as the additional data, so that a sealed value
// opens only under the name it was sealed for.
//
// A sealed value is laid out as
//
//	version  1 byte   (1)
//	key id   8 bytes  (Key.ID: which key sealed it)
//	nonce   12 bytes  (random)
//	data     the GCM ciphertext and its 16-byte tag
//
// The key id lets Open tell "sealed under another key" (WrongKeyError)
// apart from "damaged or moved to another name" (ErrCorrupt).
//
// A key file holds the 32 key bytes, raw or in standard base64 text (what
// CreateKeyFile writes, so that it can be pasted into a secret manager).
package seal

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"

	"github.com/outposthq/outpost/internal/atomicfile"
)

// Sizes of a key and of the sealed layout.
const (
	// KeySize is the size of a key-encryption key: AES-256.
	KeySize = 32

	version   = 1
	idSize    = 8
	nonceSize = 12
	tagSize   = 16
	headSize  = 1 + idSize + nonceSize
)

// keyFileMode is the mode of a key file CreateKeyFile writes.
const keyFileMode = 0o600

// idLabel derives a key's id (HMAC-SHA256(key, idLabel), truncated).
const idLabel = "outpost seal key id v1"

// Errors Open returns besides *WrongKeyError; match them with errors.Is.
var (
	// ErrCorrupt: the sealed value is truncated, of an unknown version, was
	// altered, or was sealed for another name.
	ErrCorrupt = errors.New("seal: sealed value does not authenticate (damaged, or not sealed for this name)")
	// ErrWrongKey is matched by every *WrongKeyError.
	ErrWrongKey = errors.New("seal: sealed under another key")
)

// WrongKeyError is Open's error for a value sealed under another key. It
// matches ErrWrongKey.
type WrongKeyError struct {
	Name   string // the record
	Sealed string // the id of the key that sealed it
	Have   string // the id of the key given
}

func (e *WrongKeyError) Error() string {
	return fmt.Sprintf("seal: %s was sealed under the key with id %s, but the key given has id %s", e.Name, e.Sealed, e.Have)
}

// Is makes a *WrongKeyError match ErrWrongKey.
func (e *WrongKeyError) Is(target error) bool { return target == ErrWrongKey }

// Key is a key-encryption key. Build it with ParseKey or LoadKeyFile. Its
// methods are safe for concurrent use.
type Key struct {
	aead cipher.AEAD
	id   [idSize]byte
	rand io.Reader
}

// ParseKey returns the key held in b: exactly KeySize raw bytes, or their
// standard base64 encoding (surrounding white space allowed). Errors say
// which form was expected; they never contain key material.
func ParseKey(b []byte) (*Key, error) {
	raw := b
	if len(b) != KeySize {
		text := bytes.TrimSpace(b)
		raw = make([]byte, base64.StdEncoding.DecodedLen(len(text)))
		n, err := base64.StdEncoding.Decode(raw, text)
		if err != nil || n != KeySize {
			return nil, fmt.Errorf("seal: a key is %d random bytes, raw or in base64 (%d characters); this is %d bytes that are neither (create one with: outpost gateway seal-key create --out FILE)", KeySize, base64.StdEncoding.EncodedLen(KeySize), len(b))
		}
		raw = raw[:n]
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	k := &Key{aead: aead, rand: rand.Reader}
	mac := hmac.New(sha256.New, raw)
	mac.Write([]byte(idLabel))
	copy(k.id[:], mac.Sum(nil))
	return k, nil
}

// LoadKeyFile reads the key in path (see ParseKey). A file others than its
// owner may read is refused: the key opens every shared secret.
func LoadKeyFile(path string) (*Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("seal key: %w", err)
	}
	if runtime.GOOS != "windows" {
		fi, err := os.Stat(path)
		if err == nil && fi.Mode().Perm()&0o077 != 0 {
			return nil, fmt.Errorf("seal key %s: mode %v lets other users read it; chmod 600 it", path, fi.Mode().Perm())
		}
	}
	k, err := ParseKey(b)
	if err != nil {
		return nil, fmt.Errorf("seal key %s: %w", path, err)
	}
	return k, nil
}

// CreateKeyFile writes a new random key to path (mode 0600, base64 text)
// and returns it. It never replaces a file: an existing path is an error,
// since replacing a key in use would lock every replica out of the
// secrets it sealed. rnd is the source of the key; nil means crypto/rand.
func CreateKeyFile(path string, rnd io.Reader) (*Key, error) {
	if rnd == nil {
		rnd = rand.Reader
	}
	raw := make([]byte, KeySize)
	if _, err := io.ReadFull(rnd, raw); err != nil {
		return nil, fmt.Errorf("seal: generate key: %w", err)
	}
	k, err := ParseKey(raw)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.WriteNew(path, []byte(base64.StdEncoding.EncodeToString(raw)+"\n"), keyFileMode); err != nil {
		return nil, fmt.Errorf("seal key: %w", err)
	}
	return k, nil
}

// ID identifies the key in logs and errors without revealing it: 16 hex
// digits derived from it by HMAC-SHA256.
func (k *Key) ID() string { return hex.EncodeToString(k.id[:]) }

// Seal encrypts plaintext for the record name. It fails only when the
// random source does.
func (k *Key) Seal(name string, plaintext []byte) ([]byte, error) {
	out := make([]byte, headSize, headSize+len(plaintext)+tagSize)
	out[0] = version
	copy(out[1:], k.id[:])
	nonce := out[1+idSize : headSize]
	if _, err := io.ReadFull(k.rand, nonce); err != nil {
		return nil, fmt.Errorf("seal: nonce: %w", err)
	}
	return k.aead.Seal(out, nonce, plaintext, []byte(name)), nil
}

// Open decrypts a value Seal made for the record name. Errors: a
// *WrongKeyError (ErrWrongKey) when another key sealed it, ErrCorrupt when
// it is damaged or was sealed for another name.
func (k *Key) Open(name string, sealed []byte) ([]byte, error) {
	if len(sealed) < headSize+tagSize || sealed[0] != version {
		return nil, fmt.Errorf("%w: %s", ErrCorrupt, name)
	}
	if id := sealed[1 : 1+idSize]; !bytes.Equal(id, k.id[:]) {
		return nil, &WrongKeyError{Name: name, Sealed: hex.EncodeToString(id), Have: k.ID()}
	}
	plain, err := k.aead.Open(nil, sealed[1+idSize:headSize], sealed[headSize:], []byte(name))
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrCorrupt, name)
	}
	return plain, nil
}
