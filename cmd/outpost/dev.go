package main

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/outposthq/outpost/cmd/outpost/internal/devenv"
)

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("dev", stderr, "dev [--data-dir DIR] [--listen ADDR] [--quic-listen ADDR]")
	var (
		o  devenv.Config
		lf logFlags
	)
	fs.StringVar(&o.DataDir, "data-dir", "", "keep the gateway's and agent's state here (default: a temporary directory, removed on exit)")
	fs.StringVar(&o.Listen, "listen", devenv.DefaultListen, "gateway API address")
	fs.StringVar(&o.QUICListen, "quic-listen", devenv.DefaultQUICListen, "gateway QUIC address")
	lf.register(fs)
	// The instructions matter more than the logs here.
	_ = fs.Set("log-level", "warn")
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	o.Logger = log
	o.Command = selfCommand()
	return devenv.Run(ctx, o, stdout)
}

// selfCommand is how to invoke this binary again: "go run ./cmd/outpost" when
// it was started by go run (its executable lives in the build cache),
// "outpost" when that finds this binary on the PATH, else its path.
func selfCommand() string {
	exe, err := os.Executable()
	if err != nil || strings.Contains(exe, string(filepath.Separator)+"go-build") {
		return "go run ./cmd/outpost"
	}
	if onPath, err := exec.LookPath("outpost"); err == nil && sameFile(onPath, exe) {
		return "outpost"
	}
	return shellQuote(exe)
}

func sameFile(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}
