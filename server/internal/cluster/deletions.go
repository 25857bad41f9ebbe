package cluster

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/outposthq/outpost/server/internal/store"
)

// Listener listens for the agent events that the replicas sharing a
// database announce; *store.Postgres is one.
type Listener interface {
	ListenAgents(ctx context.Context, ev store.AgentEvents, cfg store.ListenConfig) error
}

// AgentChecker tells which agents are gone from the store; store.Store is
// one.
type AgentChecker interface {
	GoneAgents(ctx context.Context, ids []string) ([]string, error)
}

// DefaultReconcileInterval is DeletionsConfig.ReconcileInterval's default.
const DefaultReconcileInterval = 30 * time.Second

// reconcileTimeout bounds one check of the held agents against the store.
const reconcileTimeout = 20 * time.Second

// DeletionsConfig configures RunDeletions. Listener, Store, Held and
// Deleted are required.
type DeletionsConfig struct {
	Listener Listener
	Store    AgentChecker
	// Held returns the ids of the agents the replica holds (connected or
	// admissible from its cache); tunnel.Server.Held is one.
	Held func() []string
	// Deleted closes a deleted agent's connection on this replica and
	// forgets what the replica remembers of it. It is called for every
	// deletion heard, this replica's own included, and again for a deleted
	// agent a check still finds held, so it must be idempotent; it may be
	// called from two goroutines at once.
	Deleted func(agentID string)
	// ReconcileInterval is how often the held agents are checked against
	// the store besides after every (re)connection of the listener: the
	// most a deletion whose notification was lost stays unnoticed. If zero,
	// 30 s.
	ReconcileInterval time.Duration
	// Listen tunes the listener's reconnection.
	Listen store.ListenConfig
	// Logger may be nil.
	Logger hclog.Logger
}

// RunDeletions applies the agent deletions made through any replica to
// this one until ctx ends, then returns nil once its goroutines have
// stopped; see the package comment.
func RunDeletions(ctx context.Context, cfg DeletionsConfig) error {
	if cfg.Listener == nil || cfg.Store == nil || cfg.Held == nil || cfg.Deleted == nil {
		return errors.New("cluster: Listener, Store, Held and Deleted are required")
	}
	if cfg.ReconcileInterval <= 0 {
		cfg.ReconcileInterval = DefaultReconcileInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	d := &deletions{cfg: cfg, log: cfg.Logger}
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(cfg.ReconcileInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				d.Resync(ctx)
			}
		}
	})
	err := cfg.Listener.ListenAgents(ctx, d, cfg.Listen)
	wg.Wait()
	return err
}

// deletions is the store.AgentEvents of RunDeletions.
type deletions struct {
	cfg DeletionsConfig
	log hclog.Logger
}

// AgentDeleted implements store.AgentEvents.
func (d *deletions) AgentDeleted(id string) {
	d.log.Info("agent deleted (announced by the store); closing its connection here", "agent_id", id)
	d.cfg.Deleted(id)
}

// Resync implements store.AgentEvents: every held agent the store no
// longer has live is treated as deleted. A store that cannot be reached is
// tried again at the next interval.
func (d *deletions) Resync(ctx context.Context) {
	held := d.cfg.Held()
	if len(held) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, reconcileTimeout)
	defer cancel()
	gone, err := d.cfg.Store.GoneAgents(ctx, held)
	if err != nil {
		if ctx.Err() == nil {
			d.log.Warn("could not check the held agents against the store", "agents", len(held), "error", err)
		}
		return
	}
	for _, id := range gone {
		d.log.Info("held agent is deleted in the store; closing its connection here", "agent_id", id)
		d.cfg.Deleted(id)
	}
}
