// Package tunnel is the agent end of the tunnel (DESIGN.md §3, §7): it dials
// the gateway over QUIC with mutual TLS, keeps the control stream (route
// advertisements, heartbeats), serves the session streams the gateway opens,
// and reconnects with backoff. It keeps up to HAConnections connections,
// each to a distinct gateway replica behind the one endpoint (replicas.go).
//
// Over the life of the agent it also:
//   - renews the agent certificate over the control stream when a third of
//     its lifetime is left, with a CSR from the same key, and reconnects with
//     the new certificate (renew.go);
//   - re-reads agent.json on Reload (SIGHUP) and when the file changes on
//     disk (watch.go), advertising changed routes with epoch + 1 on every
//     live connection;
//   - advertises the host's DNS domain, auto-detected (package detect), when
//     no route (subnet or domain) is configured and AutoDetectDomain is not
//     false; the gateway counts it only if it is approved;
//   - stops (Run returns a *PermanentError) when it cannot work until
//     someone acts: an unusable config directory at start, or the gateway
//     refusing the agent's identity (deleted) on two attempts in a row;
//   - drains when Run's context ends: routes withdrawn with epoch + 1, new
//     sessions refused with "agent draining", live ones given DrainTimeout,
//     then the connections are closed with "shutdown".
//
// Files: config.go (Config, defaults, validation), supervisor.go (Run: the
// connection loops and their backoff), replicas.go (which replica each
// connection holds; renewal roll-over), errors.go (which failures are permanent:
// PermanentError), dial.go, conn.go (one connection's life),
// control.go (the control loop), drain.go, renew.go, watch.go, identity.go
// (agent.json and the certificates).
package tunnel

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/quic-go/quic-go"

	"github.com/outposthq/outpost/agent/internal/session"
)

// Agent keeps the tunnel up. Create it with New and call Run once; the other
// methods are safe for concurrent use, during Run and after.
type Agent struct {
	cfg     Config
	log     hclog.Logger
	handler *session.Handler
	quic    *quic.Config

	reload chan struct{} // Reload's signal to Run's reloader
	fleet  *fleet        // the connections to distinct replicas

	reportOnce sync.Once // logs the UDP socket report once
	suspects   suspects  // gateway addresses that failed lately

	renewFailures atomic.Uint64 // failed renewal attempts since New

	// deletedSeen is the first "agent-deleted" refusal any connection had
	// since a failure that was no refusal (mostSpecific).
	deletedSeen atomic.Pointer[error]

	mu      sync.Mutex
	epoch   uint64    // epoch of the routes last advertised
	current *settings // settings of the live connections; nil while draining
	// routesChanged is closed and replaced when epoch changes, so every
	// live connection advertises the new routes.
	routesChanged chan struct{}
	draining      bool // Run's context ended: no renewal reconnects any more
	// renewStreak counts consecutive failed renewals; renewRetryAt is the
	// earliest time of the next attempt (after a failure or a success).
	renewStreak  int
	renewRetryAt time.Time
}

// New returns an Agent for cfg. It returns an error when a field is out
// of range (HAConnections, RenewFraction, RenewBackoffMin/Max, QUIC); it does not read the
// config directory (Run does).
func New(cfg Config) (*Agent, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Agent{
		cfg: cfg,
		log: cfg.Logger,
		handler: session.New(session.Config{
			DialTimeout: cfg.DialTimeout,
			Logger:      cfg.Logger.Named("session"),
			Counters:    cfg.Counters,
		}),
		quic:          cfg.QUIC.QUIC(),
		reload:        make(chan struct{}, 1),
		fleet:         newFleet(),
		routesChanged: make(chan struct{}),
	}, nil
}

// Active returns the number of sessions being served.
func (a *Agent) Active() int { return a.handler.Active() }

// Connected reports whether at least one tunnel connection is up right
// now.
func (a *Agent) Connected() bool { return a.fleet.live() > 0 }

// Connections returns the number of tunnel connections up right now: at
// most HAConnections, each to a distinct gateway replica.
func (a *Agent) Connections() int { return a.fleet.live() }

// bumpEpochLocked advances the route epoch and tells every live
// connection. a.mu must be held.
func (a *Agent) bumpEpochLocked() {
	a.epoch++
	close(a.routesChanged)
	a.routesChanged = make(chan struct{})
}

// RenewalFailures returns the number of failed certificate renewal attempts
// since New: refusals by the gateway, timeouts, unusable certificates and
// write errors. Each failure is also logged as a warning. The agent keeps
// running on its current certificate and retries with backoff. It is the
// agent's stand-in for a metric until the agent exports metrics.
func (a *Agent) RenewalFailures() uint64 { return a.renewFailures.Load() }

// Reload asks the agent to re-read its config now: changed routes are
// advertised on every live connection with epoch + 1 (no reconnect). Run
// also calls it when agent.json changes on disk (see WatchInterval).
func (a *Agent) Reload() {
	select {
	case a.reload <- struct{}{}:
	default:
	}
}
