package tunnel

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/outposthq/outpost/agent/internal/detect"
)

// The reconnect supervisor: Run keeps one connection at a time up, with
// backoff between attempts, reading the config before each.

// Run connects and reconnects until ctx ends, then drains (see
// DrainTimeout), closes the tunnel with "shutdown" and returns nil. It
// returns an error at once only when the config directory holds no enrolled
// identity; every later failure is logged and retried with backoff. Run
// returns only after every goroutine it started has exited.
func (a *Agent) Run(ctx context.Context) error {
	if _, err := a.loadSettings(); errors.Is(err, ErrNotEnrolled) {
		return err
	}
	a.mu.Lock()
	a.draining = false
	a.mu.Unlock()
	a.handler.SetDraining(false)

	var wg sync.WaitGroup
	wctx, stopWatch := context.WithCancel(ctx)
	defer func() {
		stopWatch()
		wg.Wait()
	}()
	if a.cfg.WatchInterval > 0 {
		wg.Go(func() { a.watch(wctx) })
	}

	attempt := 0
	for {
		started := time.Now()
		err := a.connectOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errCertRenewed) {
			a.log.Info("reconnecting with the renewed certificate")
			attempt = 0
			continue
		}
		if time.Since(started) >= a.cfg.HealthyAfter {
			attempt = 0
		}
		delay := a.backoff(attempt)
		attempt++
		a.log.Warn("tunnel down; reconnecting", "error", err, "retry_in", delay.Round(time.Millisecond))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// loadSettings reads the config directory with the agent's detection
// options.
func (a *Agent) loadSettings() (*settings, error) {
	return loadSettings(a.cfg.ConfigDir, detect.Options{ResolvConf: a.cfg.ResolvConfPath, Hostname: a.cfg.Hostname})
}

// backoff is the delay before retry number attempt: full jitter over an
// exponential cap from BackoffMin to BackoffMax.
func (a *Agent) backoff(attempt int) time.Duration {
	limit := a.cfg.BackoffMax
	if attempt < 30 {
		limit = min(a.cfg.BackoffMax, a.cfg.BackoffMin<<attempt)
	}
	return rand.N(limit) + 1
}

// connectOnce reads the config, dials, and serves one connection until it
// ends or ctx does.
func (a *Agent) connectOnce(ctx context.Context) error {
	set, err := a.loadSettings()
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if now := a.cfg.Now(); now.After(set.cert.NotAfter) {
		a.log.Error("the agent certificate has expired; the gateway will refuse it: enroll the agent again",
			"not_after", set.cert.NotAfter, "now", now)
	}
	a.handler.SetRoutes(set.routes)
	conn, tr, err := a.dial(ctx, set)
	if err != nil {
		return err
	}
	defer tr.Conn.Close()
	defer tr.Close()
	log := a.log.With("gateway", set.endpoint, "remote", conn.RemoteAddr().String())
	err = a.serve(ctx, conn, set, log)
	return err
}
