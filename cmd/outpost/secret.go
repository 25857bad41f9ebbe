package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/outposthq/outpost/internal/atomicfile"
)

// maxSecretFile bounds what is read from a token or secret file.
const maxSecretFile = 64 << 10

// readSecretFile reads a token or secret from path (what names it in
// errors), without surrounding white space. Unlike a command-line argument,
// a file does not show in ps.
func readSecretFile(path, what string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	switch {
	case err != nil:
		return "", fmt.Errorf("%s: %w", what, err)
	case len(b) > maxSecretFile:
		return "", fmt.Errorf("%s %s: larger than %d bytes", what, path, maxSecretFile)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s %s is empty", what, path)
	}
	return s, nil
}

// writeSecretFile writes secret and a newline to path, readable by its owner
// only (0600). An existing path is refused unless force is set; then it is
// replaced atomically (a symbolic link is replaced, not followed).
func writeSecretFile(path, secret string, force bool) error {
	data := []byte(secret + "\n")
	if force {
		return atomicfile.WriteFile(path, data, 0o600)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s exists: remove it, or pass --force to replace it", path)
	}
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// tokenOutput is where a command puts the token it minted: stdout, or the
// file --token-file names (created 0600; an existing one is refused unless
// --force replaces it).
type tokenOutput struct {
	file  string
	force bool
}

func (o *tokenOutput) register(fs *flag.FlagSet) {
	fs.StringVar(&o.file, "token-file", "", "write the token to this file (created 0600) instead of stdout")
	fs.BoolVar(&o.force, "force", false, "with --token-file, replace the file if it exists")
}

// check refuses a bad combination, or an existing file before anything is
// minted for it; the file becomes an absolute path, for the commands
// printed with it. write checks again when it creates the file.
func (o *tokenOutput) check() error {
	switch {
	case o.force && o.file == "":
		return fmt.Errorf("%w: --force goes with --token-file", errUsage)
	case o.file == "":
		return nil
	}
	abs, err := filepath.Abs(o.file)
	if err != nil {
		return err
	}
	o.file = abs
	if _, err := os.Lstat(o.file); err == nil && !o.force {
		return fmt.Errorf("%w: %s exists: remove it, or pass --force to replace it", errUsage, o.file)
	}
	return nil
}

// write puts tok in the file, or alone on stdout.
func (o *tokenOutput) write(stdout io.Writer, tok string) error {
	if o.file != "" {
		return writeSecretFile(o.file, tok, o.force)
	}
	_, err := fmt.Fprintln(stdout, tok)
	return err
}
