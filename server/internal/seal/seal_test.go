package seal

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func newKey(t *testing.T, fill byte) *Key {
	t.Helper()
	k, err := ParseKey(bytes.Repeat([]byte{fill}, KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// A value opens under its key and name only: another key is a
// WrongKeyError naming both ids, another name or a flipped bit ErrCorrupt.
func TestSealOpen(t *testing.T) {
	k, other := newKey(t, 1), newKey(t, 2)
	sealed, err := k.Seal("ca.key", []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("secret")) {
		t.Fatal("the plaintext shows in the sealed value")
	}
	if got, err := k.Open("ca.key", sealed); err != nil || string(got) != "secret" {
		t.Fatalf("Open = %q, %v", got, err)
	}
	again, _ := k.Seal("ca.key", []byte("secret"))
	if bytes.Equal(again, sealed) {
		t.Error("two seals of one value are equal: the nonce is not random")
	}

	_, err = other.Open("ca.key", sealed)
	var wk *WrongKeyError
	if !errors.As(err, &wk) || !errors.Is(err, ErrWrongKey) || wk.Sealed != k.ID() || wk.Have != other.ID() {
		t.Fatalf("Open with another key: %v, want a WrongKeyError %s vs %s", err, k.ID(), other.ID())
	}
	if _, err := k.Open("token.key", sealed); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Open under another name: %v, want ErrCorrupt", err)
	}
	for i := range sealed {
		bad := bytes.Clone(sealed)
		bad[i] ^= 0x80
		if _, err := k.Open("ca.key", bad); err == nil {
			t.Fatalf("a flipped bit at %d still opens", i)
		}
	}
	for n := range headSize + tagSize {
		if _, err := k.Open("ca.key", sealed[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("a value truncated to %d bytes: %v, want ErrCorrupt", n, err)
		}
	}
}

// CreateKeyFile writes a 0600 base64 file that LoadKeyFile reads back,
// never replaces a file, and LoadKeyFile refuses a key others may read or
// of the wrong size.
func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "seal.key")
	k, err := CreateKeyFile(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	text, _ := os.ReadFile(path)
	if raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(text))); err != nil || len(raw) != KeySize {
		t.Fatalf("key file %q is not %d bytes in base64", text, KeySize)
	}
	loaded, err := LoadKeyFile(path)
	if err != nil || loaded.ID() != k.ID() {
		t.Fatalf("LoadKeyFile: %v (id %v, want %s)", err, loaded, k.ID())
	}
	if _, err := CreateKeyFile(path, nil); err == nil {
		t.Fatal("CreateKeyFile replaced an existing key")
	}

	raw := filepath.Join(dir, "raw.key")
	if err := os.WriteFile(raw, bytes.Repeat([]byte{7}, KeySize), 0o600); err != nil {
		t.Fatal(err)
	}
	if k, err := LoadKeyFile(raw); err != nil || k.ID() != newKey(t, 7).ID() {
		t.Fatalf("raw key file: %v", err)
	}
	if err := os.Chmod(raw, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKeyFile(raw); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a group-readable key: %v, want refused", err)
	}
	short := filepath.Join(dir, "short.key")
	if err := os.WriteFile(short, []byte("c2hvcnQ=\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKeyFile(short); err == nil || !strings.Contains(err.Error(), "seal-key create") {
		t.Errorf("a short key: %v, want refused with the hint", err)
	}
}
