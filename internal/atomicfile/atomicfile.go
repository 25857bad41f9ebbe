// Package atomicfile replaces files atomically: a reader of the target path
// sees either the complete old content or the complete new content, never a
// mix, and a crash or an error leaves the old file in place. WriteNew
// creates a file the same way, never replacing one.
//
// It is used by both the gateway (CA, keys, first admin key) and the agent
// (key, certificate, CA, config).
package atomicfile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
)

// tempAttempts bounds how many temporary names WriteFile tries before giving
// up; a collision of 64 random bits is practically impossible, so more than
// one attempt means something else is wrong.
const tempAttempts = 4

// WriteFile writes data to path atomically and durably.
//
// It creates a temporary file in the same directory as path with mode perm
// from the start (further narrowed by the umask while it is being written, so
// it is never readable more widely than perm), writes and fsyncs it, sets its
// mode to exactly perm (independent of the umask), renames it over path and
// fsyncs the directory so the rename itself survives a crash.
//
// If path is a symbolic link, the link is replaced, not the file it points
// to. Only the permission bits of perm are used.
//
// On any error before the rename, path is untouched and the temporary file is
// removed. If only the final directory fsync fails, path already holds the
// new content but its durability across a power loss is not guaranteed; the
// error says so. Errors are *fs.PathError values (or wrap them) naming the
// file involved. WriteFile is safe for concurrent use on different paths;
// concurrent writers of the same path each leave a complete file and the last
// rename wins.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return write(path, data, perm, false)
}

// WriteNew is WriteFile for a file that must not exist yet: it never
// replaces one. When path exists it returns an error matching fs.ErrExist
// and leaves path untouched; a reader of path sees no file or the complete
// new one. Of concurrent writers of one path, exactly one succeeds.
func WriteNew(path string, data []byte, perm os.FileMode) error {
	return write(path, data, perm, true)
}

// write is WriteFile, or WriteNew when exclusive: the temporary file is
// then linked to path (which fails when path exists) instead of renamed
// over it.
func write(path string, data []byte, perm os.FileMode, exclusive bool) error {
	perm &= fs.ModePerm
	dir, base := filepath.Split(path)
	if base == "" {
		return &fs.PathError{Op: "atomicfile: write", Path: path, Err: errors.New("path names a directory")}
	}
	if dir == "" {
		dir = "."
	}

	f, tmp, err := createTemp(dir, base, perm)
	if err != nil {
		return err
	}
	committed := false
	defer func() {
		if !committed {
			f.Close()
			os.Remove(tmp)
		}
	}()

	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("atomicfile: write %s: %w", tmp, err)
	}
	// Chmod through the handle: the umask may have narrowed the creation
	// mode, and the caller asked for exactly perm.
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("atomicfile: chmod %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("atomicfile: sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("atomicfile: close %s: %w", tmp, err)
	}
	if exclusive {
		err = os.Link(tmp, path)
		os.Remove(tmp)
	} else {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	committed = true
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("atomicfile: %s written but not yet durable: %w", path, err)
	}
	return nil
}

// createTemp creates a new file next to the target, named after it so a
// leftover from a crash is recognisable, with O_EXCL so it never reuses an
// existing file.
func createTemp(dir, base string, perm os.FileMode) (*os.File, string, error) {
	var lastErr error
	for range tempAttempts {
		var rnd [8]byte
		if _, err := rand.Read(rnd[:]); err != nil {
			return nil, "", fmt.Errorf("atomicfile: temporary name: %w", err)
		}
		name := filepath.Join(dir, "."+base+".tmp-"+hex.EncodeToString(rnd[:]))
		f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
		if err == nil {
			return f, name, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, "", fmt.Errorf("atomicfile: create temporary file: %w", err)
		}
		lastErr = err
	}
	return nil, "", fmt.Errorf("atomicfile: create temporary file: %w", lastErr)
}

// syncDir fsyncs a directory so a rename in it is durable. Windows cannot
// open directories for syncing and makes renames durable on its own.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	serr := d.Sync()
	cerr := d.Close()
	if serr != nil {
		return serr
	}
	return cerr
}
