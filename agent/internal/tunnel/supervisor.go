package tunnel

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/outposthq/outpost/agent/internal/detect"
)

// The reconnect supervisor: Run keeps one connection at a time up, with
// backoff between attempts, reading the config before each, and gives up on
// failures that retrying cannot fix (errors.go).

// Run connects and reconnects until ctx ends, then drains (see
// DrainTimeout), closes the tunnel with "shutdown" and returns nil.
//
// It gives up and returns a *PermanentError (errors.Is(err, ErrPermanent))
// saying what to do:
//   - at once, before any dial, when the config directory cannot be used:
//     no enrolled identity (the error also wraps ErrNotEnrolled), agent.json
//     unreadable or invalid, the tunnel disabled, the certificate, key or
//     gateway CA missing or unreadable;
//   - while running, when two attempts in a row fail permanently: the
//     gateway refused the agent's identity (agent-deleted,
//     agent-not-accepted), or the files above became unusable. The second
//     attempt confirms the first, so that one bad moment (a file being
//     rewritten) does not stop the agent.
//
// Every other failure is logged and retried with backoff; a stateless reset
// (the gateway restarted) is retried within BackoffMin. Run returns only
// after every goroutine it started has exited.
func (a *Agent) Run(ctx context.Context) error {
	if _, err := a.loadSettings(); err != nil {
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
	var lastPermanent error // the previous attempt's permanent failure, if it had one
	for {
		started := time.Now()
		err := a.connectOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errCertRenewed) {
			a.log.Info("reconnecting with the renewed certificate")
			attempt, lastPermanent = 0, nil
			continue
		}
		msg := "tunnel down; reconnecting"
		switch {
		case errors.Is(err, ErrPermanent) && lastPermanent != nil:
			return confirmed(lastPermanent, err)
		case errors.Is(err, ErrPermanent):
			lastPermanent = err
			msg = "tunnel down; retrying once: if the next attempt fails permanently too, the agent stops"
		default:
			lastPermanent = nil
		}
		if errors.Is(err, errGatewayRestarted) || time.Since(started) >= a.cfg.HealthyAfter {
			attempt = 0
		}
		delay := a.backoff(attempt)
		attempt++
		a.log.Warn(msg, "error", err, "retry_in", delay.Round(time.Millisecond))
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
		return err
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
