package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/outposthq/outpost/agent"
	"github.com/outposthq/outpost/bench/internal/proc"
)

// moduleRoot returns the directory of the go.mod of the current directory.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside a Go module: run from the outpost repository (go run ./bench/tunnel)")
	}
	return filepath.Dir(mod), nil
}

// buildOutpost builds the outpost binary of the module at root into dir.
func buildOutpost(ctx context.Context, root, dir string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	bin := filepath.Join(dir, "outpost")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/outpost")
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build ./cmd/outpost: %w", err)
	}
	return bin, nil
}

// enrollAgent runs `outpost agent enroll` with the token on stdin and
// extra flags, and returns the new agent's id.
func enrollAgent(ctx context.Context, bin, dir, token string, extra ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"agent", "enroll", "--token", "-", "--config-dir", dir, "--log-level", "warn"}, extra...)...)
	cmd.Stdin = strings.NewReader(token + "\n")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = proc.Attr()
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("outpost agent enroll: %w", err)
	}
	id, ok := agent.Enrolled(dir)
	if !ok {
		return "", fmt.Errorf("outpost agent enroll left no identity in %s", dir)
	}
	return id, nil
}
