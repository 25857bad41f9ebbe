package tunnel

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/outposthq/outpost/agent/internal/config"
	"github.com/outposthq/outpost/agent/internal/detect"
)

// maxWatched bounds how much of a watched file is hashed; agent.json and
// resolv.conf are a few kilobytes.
const maxWatched = 1 << 20

// watch polls agent.json and the resolver configuration (the input of
// domain detection) every WatchInterval and calls Reload when the content of
// either changed. It returns when ctx ends.
//
// Polling rather than inotify (fsnotify): it needs no dependency and works
// the same everywhere — with editors and tools that replace the file by a
// rename (which detaches a watch on the file itself), Kubernetes ConfigMap
// symlink swaps, network file systems and containers where inotify is
// unavailable. Comparing a hash of the content, not the mtime, catches a
// same-size edit within the file system's timestamp granularity and ignores
// a mere touch. The cost is reading two small files every 2 s, and a change
// is noticed within one interval.
func (a *Agent) watch(ctx context.Context) {
	resolv := a.cfg.ResolvConfPath
	if resolv == "" {
		resolv = detect.DefaultResolvConf
	}
	paths := []string{filepath.Join(a.cfg.ConfigDir, config.FileName), resolv}
	sums := make([]string, len(paths))
	for i, p := range paths {
		sums[i] = fingerprint(p)
	}
	t := time.NewTicker(a.cfg.WatchInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changed := ""
		for i, p := range paths {
			if fp := fingerprint(p); fp != sums[i] {
				sums[i], changed = fp, p
			}
		}
		if changed != "" {
			a.log.Info("config changed on disk; reloading", "path", changed)
			a.Reload()
		}
	}
}

// fingerprint identifies the content of the file at path: the SHA-256 of
// its first maxWatched bytes, or why it cannot be read.
func fingerprint(path string) string {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "missing"
	}
	if err != nil {
		return "error: " + err.Error()
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, io.LimitReader(f, maxWatched)); err != nil {
		return "error: " + err.Error()
	}
	return string(h.Sum(nil))
}
