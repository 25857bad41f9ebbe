//go:build unix

package atomicfile

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// withUmask sets the process umask for the duration of the test. The umask is
// process-wide, so tests using it must not run in parallel.
func withUmask(t *testing.T, mask int) {
	t.Helper()
	old := syscall.Umask(mask)
	t.Cleanup(func() { syscall.Umask(old) })
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestWriteFileMode(t *testing.T) {
	tests := []struct {
		name  string
		umask int
		perm  os.FileMode
	}{
		{"key with permissive umask", 0o000, 0o600},
		{"key with usual umask", 0o022, 0o600},
		{"cert with usual umask", 0o022, 0o644},
		{"cert with strict umask", 0o077, 0o644},
		{"read-only", 0o000, 0o400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			withUmask(t, tt.umask)
			path := filepath.Join(t.TempDir(), "f")
			if err := WriteFile(path, []byte("secret"), tt.perm); err != nil {
				t.Fatal(err)
			}
			if got := mode(t, path); got != tt.perm {
				t.Fatalf("mode %v, want %v", got, tt.perm)
			}
		})
	}
}

// TestWriteFileModeNarrowsExisting checks that replacing a world-readable
// file with a 0600 one leaves a 0600 file: the new inode's mode wins.
func TestWriteFileModeNarrowsExisting(t *testing.T) {
	withUmask(t, 0)
	path := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(path, []byte("old"), 0o666); err != nil {
		t.Fatal(err)
	}
	if got := mode(t, path); got != 0o666 {
		t.Fatalf("setup: mode %v", got)
	}
	if err := WriteFile(path, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := mode(t, path); got != 0o600 {
		t.Fatalf("mode %v, want 0600", got)
	}
}

// TestWriteFileTempCreatedWithPerm checks the temporary file's mode at
// creation, before anything is written, through createTemp directly.
func TestWriteFileTempCreatedWithPerm(t *testing.T) {
	withUmask(t, 0)
	dir := t.TempDir()
	f, name, err := createTemp(dir, "key", 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := mode(t, name); got != 0o600 {
		t.Fatalf("temporary file created with %v, want 0600", got)
	}
	if filepath.Dir(name) != dir {
		t.Fatalf("temporary file %s not in %s", name, dir)
	}
}

func TestWriteFileUnwritableDirectory(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root ignores directory permissions; TestWriteFileParentIsAFile covers the failure path")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o700) })
	if err := WriteFile(path, []byte("new"), 0o600); err == nil {
		t.Fatal("WriteFile in a read-only directory succeeded")
	}
	if got, _ := os.ReadFile(path); string(got) != "old" {
		t.Fatalf("content changed to %q", got)
	}
	assertOnly(t, dir, "f")
}
