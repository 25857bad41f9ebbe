package tunnel

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/outposthq/outpost/agent/internal/detect"
	"github.com/outposthq/outpost/dataplane"
	"github.com/outposthq/outpost/dataplane/transport"
)

// The reconnect supervisor: Run keeps HAConnections connection loops
// ("slots", replicas.go), each keeping one connection at a time up with
// backoff between attempts, reading the config before each, and gives up
// on failures that retrying cannot fix (errors.go).

// Run connects and reconnects until ctx ends, then drains (see
// DrainTimeout), closes the tunnel connections with "shutdown" and returns
// nil. It keeps up to HAConnections connections, each to a distinct
// gateway replica (one against a gateway that names no replica).
//
// It gives up and returns a *PermanentError (errors.Is(err, ErrPermanent))
// saying what to do, and closes every connection:
//   - at once, before any dial, when the config directory cannot be used:
//     no enrolled identity (the error also wraps ErrNotEnrolled), agent.json
//     unreadable or invalid, the tunnel disabled, the certificate, key or
//     gateway CA missing or unreadable;
//   - while running, when two attempts in a row of one connection fail
//     permanently: the gateway refused the agent's identity
//     (agent-deleted, agent-not-accepted), or the files above became
//     unusable. The second attempt confirms the first, so that one bad
//     moment (a file being rewritten) does not stop the agent.
//
// Every other failure is logged and retried with backoff; a stateless reset
// (the gateway restarted) is retried within BackoffMin, the shutdown of one
// replica of a cluster within HARetryMin. Run returns only after every
// goroutine it started has exited.
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
	wg.Go(func() { a.reloader(wctx) })

	// A slot's confirmed permanent failure ends the others' connections at
	// once (no drain): the gateway refuses this agent everywhere.
	sctx, abort := context.WithCancelCause(ctx)
	defer abort(nil)
	failed := make(chan error, a.cfg.HAConnections)
	var slots sync.WaitGroup
	for slot := range a.cfg.HAConnections {
		slots.Go(func() {
			if err := a.runSlot(sctx, slot); err != nil {
				failed <- err
				abort(err)
			}
		})
	}
	slots.Wait()
	select {
	case err := <-failed:
		return err
	default:
		return nil
	}
}

// runSlot keeps slot's connection up until ctx ends (it returns nil) or
// two attempts in a row fail permanently (it returns the second failure,
// or the first if it says more). The extra slots dial only while the
// gateway is a cluster of replicas.
func (a *Agent) runSlot(ctx context.Context, slot int) error {
	log := a.log
	if a.cfg.HAConnections > 1 {
		log = log.With("connection", slot)
	}
	attempt, dups := 0, 0
	var lastPermanent error // the previous attempt's permanent failure, if it had one
	downSince := time.Now() // when the slot last lost (or had not yet) a connection
	warned := false
	for {
		if slot > 0 {
			waited, ok := a.waitCluster(ctx)
			if !ok {
				return nil
			}
			if waited {
				downSince, warned = time.Now(), false
			}
		}
		started := time.Now()
		up, err := a.connectOnce(ctx, slot, log)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errCertRenewed) {
			log.Info("reconnecting with the renewed certificate")
			attempt, dups, lastPermanent = 0, 0, nil
			continue
		}
		a.fleet.settled(slot)
		if !errors.Is(err, errDuplicateReplica) {
			dups = 0
		}
		if up {
			downSince, warned = time.Now(), false
		}
		var delay time.Duration
		switch {
		case errors.Is(err, errDuplicateReplica):
			dups++
			delay = jitter(a.cfg.HARetryMin, max(a.cfg.HARetryMax, a.cfg.BackoffMax), dups-1)
			log.Debug("reached a replica this agent already holds; dialing again from a new port", "error", err, "retry_in", delay.Round(time.Millisecond))
		case errors.Is(err, errReplicaLeft):
			attempt, lastPermanent = 0, nil
			delay = jitter(a.cfg.HARetryMin, a.cfg.BackoffMax, 0)
			log.Info("the gateway replica shut down; dialing a replacement", "retry_in", delay.Round(time.Millisecond))
		case errors.Is(err, ErrPermanent) && lastPermanent != nil:
			return a.mostSpecific(confirmed(lastPermanent, err))
		default:
			msg := "tunnel down; reconnecting"
			if errors.Is(err, ErrPermanent) {
				lastPermanent = err
				if errors.Is(err, errAgentDeleted) {
					a.deletedSeen.CompareAndSwap(nil, &err)
				}
				msg = "tunnel down; retrying once: if the next attempt fails permanently too, the agent stops"
			} else {
				// Not a refusal: a deletion heard before is old news.
				lastPermanent = nil
				a.deletedSeen.Store(nil)
			}
			if errors.Is(err, errGatewayRestarted) || time.Since(started) >= a.cfg.HealthyAfter {
				attempt = 0
			}
			delay = a.backoff(attempt)
			attempt++
			log.Warn(msg, "error", err, "retry_in", delay.Round(time.Millisecond))
		}
		if slot > 0 && !warned && time.Since(downSince) >= a.cfg.HAWarnAfter {
			warned = true
			log.Warn("fewer tunnel connections than wanted: this connection found no replica of its own",
				"connections", a.fleet.live(), "want", a.cfg.HAConnections, "for", time.Since(downSince).Round(time.Second),
				"hint", "the gateway endpoint may not reach enough distinct replicas")
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
	}
}

// waitCluster waits until the gateway is a cluster of replicas (the
// primary's gateway names a replica), so an extra slot may dial. ok is
// false if ctx ended first; waited says whether it had to wait.
func (a *Agent) waitCluster(ctx context.Context) (waited, ok bool) {
	for {
		cluster, changed := a.fleet.isCluster()
		if cluster {
			return waited, true
		}
		waited = true
		select {
		case <-ctx.Done():
			return waited, false
		case <-changed:
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
	return jitter(a.cfg.BackoffMin, a.cfg.BackoffMax, attempt)
}

// jitter is full jitter over an exponential cap: from base, doubled attempt
// times, up to limit.
func jitter(base, limit time.Duration, attempt int) time.Duration {
	if attempt < 30 {
		limit = min(limit, base<<attempt)
	}
	return rand.N(limit) + 1
}

// connectOnce reads the config, dials, and serves one connection of slot
// until it ends or ctx does. up reports whether the connection was
// established.
func (a *Agent) connectOnce(ctx context.Context, slot int, log hclog.Logger) (up bool, err error) {
	set, err := a.loadSettings()
	if err != nil {
		return false, err
	}
	if now := a.cfg.Now(); slot == 0 && now.After(set.cert.NotAfter) {
		log.Error("the agent certificate has expired; the gateway will refuse it: enroll the agent again",
			"not_after", set.cert.NotAfter, "now", now)
	}
	a.handler.SetRoutes(set.routes)
	conn, tr, replica, err := a.dial(ctx, slot, set)
	defer a.fleet.release(slot)
	if err != nil {
		return false, err
	}
	defer tr.Conn.Close()
	defer tr.Close()
	if latest, err := a.loadSettings(); err == nil && !latest.cert.Equal(set.cert) {
		// Another connection renewed the certificate while this one dialed
		// with the old one: start over with the new one at once, rather
		// than hold a replica with a certificate on its way out.
		transport.Close(conn, dataplane.CloseCertRenewed)
		return false, errCertRenewed
	}
	log = log.With("gateway", set.endpoint, "remote", conn.RemoteAddr().String())
	if replica != "" {
		log = log.With("replica", replica)
	}
	return true, a.serve(ctx, slot, conn, set, log)
}

// mostSpecific returns the deletion another connection heard, if any, in
// place of err when err only says the gateway does not accept the agent:
// once one connection was closed with "agent-deleted", the others that
// come back are refused as unknown (agent-not-accepted), and the deletion
// says better what happened and what to do.
func (a *Agent) mostSpecific(err error) error {
	if d := a.deletedSeen.Load(); d != nil && errors.Is(err, errNotAccepted) {
		return *d
	}
	return err
}
