package main

import (
	"fmt"
	"io"
	"os"
	"strings"
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
