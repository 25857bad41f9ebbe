package atomicfile

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// entries returns the names in dir, failing the test on error.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

func assertOnly(t *testing.T, dir string, want ...string) {
	t.Helper()
	got := entries(t, dir)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("directory holds %q, want only %q (temporary file left behind?)", got, want)
	}
}

func TestWriteFileCreatesAndReplaces(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "config.json")

	if err := WriteFile(path, []byte("first"), 0o600); err != nil {
		t.Fatalf("first write: %v", err)
	}
	if got, err := os.ReadFile(path); err != nil || string(got) != "first" {
		t.Fatalf("after first write: %q, %v", got, err)
	}

	if err := WriteFile(path, []byte("second, longer content"), 0o600); err != nil {
		t.Fatalf("second write: %v", err)
	}
	if got, err := os.ReadFile(path); err != nil || string(got) != "second, longer content" {
		t.Fatalf("after second write: %q, %v", got, err)
	}

	if err := WriteFile(path, nil, 0o600); err != nil {
		t.Fatalf("empty write: %v", err)
	}
	if got, err := os.ReadFile(path); err != nil || len(got) != 0 {
		t.Fatalf("after empty write: %q, %v", got, err)
	}
	assertOnly(t, dir, "config.json")
}

func TestWriteFileLargeContent(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "big")
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	if err := WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, want %d identical bytes", len(got), len(data))
	}
}

func TestWriteFileRelativePath(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if err := WriteFile("rel.txt", []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "rel.txt")); err != nil || string(got) != "x" {
		t.Fatalf("got %q, %v", got, err)
	}
	assertOnly(t, dir, "rel.txt")
}

func TestWriteFileParentIsAFile(t *testing.T) {
	dir := t.TempDir()
	parent := filepath.Join(dir, "not-a-dir")
	if err := os.WriteFile(parent, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := WriteFile(filepath.Join(parent, "child"), []byte("new"), 0o600)
	if err == nil {
		t.Fatal("WriteFile under a regular file succeeded")
	}
	if got, _ := os.ReadFile(parent); string(got) != "keep me" {
		t.Fatalf("parent file changed to %q", got)
	}
	assertOnly(t, dir, "not-a-dir")
}

// TestWriteFileRenameFailsKeepsOld makes the last step fail (a non-empty
// directory cannot be replaced by a file) after the temporary file has been
// written: the target stays as it was and the temporary file is gone.
func TestWriteFileRenameFailsKeepsOld(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.Mkdir(target, 0o700); err != nil {
		t.Fatal(err)
	}
	inner := filepath.Join(target, "old")
	if err := os.WriteFile(inner, []byte("old content"), 0o600); err != nil {
		t.Fatal(err)
	}

	if err := WriteFile(target, []byte("new content"), 0o600); err == nil {
		t.Fatal("WriteFile over a non-empty directory succeeded")
	}
	if got, err := os.ReadFile(inner); err != nil || string(got) != "old content" {
		t.Fatalf("old content damaged: %q, %v", got, err)
	}
	assertOnly(t, dir, "target")
}

func TestWriteFileTrailingSlash(t *testing.T) {
	dir := t.TempDir()
	if err := WriteFile(dir+string(filepath.Separator), []byte("x"), 0o600); err == nil {
		t.Fatal("WriteFile accepted a directory path")
	}
	assertOnly(t, dir)
}

func TestWriteFileReplacesSymlinkNotItsTarget(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("symlinks need privileges on Windows")
	}
	dir := t.TempDir()
	real := filepath.Join(dir, "real")
	link := filepath.Join(dir, "link")
	if err := os.WriteFile(real, []byte("real"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	if err := WriteFile(link, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(real); string(got) != "real" {
		t.Fatalf("symlink target changed to %q", got)
	}
	fi, err := os.Lstat(link)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		t.Fatal("link is still a symlink")
	}
	if got, _ := os.ReadFile(link); string(got) != "new" {
		t.Fatalf("link holds %q", got)
	}
}

// WriteNew creates a file with exactly its mode, and never replaces one:
// a second write fails with fs.ErrExist and leaves the first content and
// no temporary file.
func TestWriteNew(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "key")
	if err := WriteNew(path, []byte("first"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteNew(path, []byte("second"), 0o600); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("WriteNew over an existing file: %v, want fs.ErrExist", err)
	}
	got, err := os.ReadFile(path)
	if err != nil || string(got) != "first" {
		t.Fatalf("content %q, %v; want the first write's", got, err)
	}
	if fi, err := os.Stat(path); runtime.GOOS != "windows" && (err != nil || fi.Mode().Perm() != 0o600) {
		t.Errorf("mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	assertOnly(t, dir, "key")
}
