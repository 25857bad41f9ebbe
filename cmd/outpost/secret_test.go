package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A token file is created 0600 and never written through an existing path:
// without force it is refused, with force replaced (a symbolic link itself,
// not the file it points to).
func TestWriteSecretFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "token")
	if err := writeSecretFile(p, "tok-1", false); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(p); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	if err := writeSecretFile(p, "tok-2", false); err == nil || !strings.Contains(err.Error(), "exists: remove it, or pass --force") {
		t.Fatalf("overwrite without force: %v", err)
	}
	if got, _ := readSecretFile(p, "token file"); got != "tok-1" {
		t.Fatalf("after a refused overwrite: %q", got)
	}
	if err := writeSecretFile(p, "tok-2", true); err != nil {
		t.Fatal(err)
	}
	if got, _ := readSecretFile(p, "token file"); got != "tok-2" {
		t.Fatalf("after --force: %q", got)
	}

	victim := filepath.Join(dir, "victim")
	os.WriteFile(victim, []byte("keep"), 0o644)
	link := filepath.Join(dir, "link")
	os.Symlink(victim, link)
	if err := writeSecretFile(link, "tok-3", false); err == nil {
		t.Fatal("wrote through an existing symbolic link")
	}
	if err := writeSecretFile(link, "tok-3", true); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep" {
		t.Errorf("the link's target changed: %q", b)
	}
	if fi, _ := os.Lstat(link); fi.Mode()&os.ModeSymlink != 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("link not replaced by a 0600 file: %v", fi.Mode())
	}
}

func TestReadSecretFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(content), 0o600)
		return p
	}
	if got, err := readSecretFile(write("ok", "  secret\n\n"), "secret file"); err != nil || got != "secret" {
		t.Errorf("trimmed: %q %v", got, err)
	}
	for _, tc := range []struct{ path, want string }{
		{write("empty", " \n"), "is empty"},
		{write("big", strings.Repeat("x", maxSecretFile+1)), "larger than"},
		{filepath.Join(dir, "missing"), "no such file"},
	} {
		if _, err := readSecretFile(tc.path, "secret file"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.path, err, tc.want)
		}
	}
}
