// Package retention prunes what the gateway's store no longer needs, on a
// schedule: consumed and recorded tokens once they can no longer verify, and
// session audit records past the retention period (DESIGN.md §12).
package retention

import (
	"context"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Defaults of Config.
const (
	DefaultInterval = time.Hour
	DefaultAudit    = 90 * 24 * time.Hour
)

// pruneTimeout bounds one round of pruning.
const pruneTimeout = time.Minute

// Store is what pruning needs.
type Store interface {
	PruneExpired(ctx context.Context, before time.Time) (int64, error)
	PruneSessions(ctx context.Context, before time.Time) (int64, error)
}

// Config says what to keep. Zero fields take the defaults.
type Config struct {
	// Interval between rounds. If zero, DefaultInterval (1 h).
	Interval time.Duration
	// Audit is how long session audit records are kept. If zero,
	// DefaultAudit (90 days).
	Audit time.Duration
	// TokenGrace is how long after its expiry a token row is kept: the
	// largest clock-skew leeway any token is verified with, so a pruned jti
	// can never verify again.
	TokenGrace time.Duration
	// Now is the clock. If nil, time.Now.
	Now func() time.Time
}

// Once prunes once and returns the rows deleted (tokens, sessions).
func Once(ctx context.Context, s Store, cfg Config) (tokens, sessions int64, err error) {
	cfg = cfg.withDefaults()
	now := cfg.Now()
	ctx, cancel := context.WithTimeout(ctx, pruneTimeout)
	defer cancel()
	if tokens, err = s.PruneExpired(ctx, now.Add(-cfg.TokenGrace)); err != nil {
		return 0, 0, err
	}
	sessions, err = s.PruneSessions(ctx, now.Add(-cfg.Audit))
	return tokens, sessions, err
}

func (c Config) withDefaults() Config {
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.Audit <= 0 {
		c.Audit = DefaultAudit
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Run prunes at start and every Interval until ctx ends. A failed round is
// logged and retried at the next one.
func Run(ctx context.Context, s Store, cfg Config, log hclog.Logger) {
	cfg = cfg.withDefaults()
	if log == nil {
		log = hclog.NewNullLogger()
	}
	t := time.NewTicker(cfg.Interval)
	defer t.Stop()
	for {
		tokens, sessions, err := Once(ctx, s, cfg)
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("pruning the store failed; retrying at the next round", "error", err, "interval", cfg.Interval)
		case tokens+sessions > 0:
			log.Info("pruned the store", "expired_token_rows", tokens, "audit_rows_older_than_retention", sessions, "retention", cfg.Audit)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
