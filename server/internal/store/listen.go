package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/jackc/pgx/v5"
)

// agentDeletedChannel is the PostgreSQL notification channel on which
// DeleteAgent announces a deletion; the payload is the agent id.
const agentDeletedChannel = "outpost_agent_deleted"

// presenceChannel is the PostgreSQL notification channel on which the
// triggers of migration 0006 announce a change of an agent's connections or
// routes; the payload is the agent id.
const presenceChannel = "outpost_agent_presence"

// listenerAppName and presenceAppName name the listeners' connections in
// pg_stat_activity.
const (
	listenerAppName = "outpost-listener"
	presenceAppName = "outpost-presence"
)

// AgentEvents receives what gateway replicas sharing a PostgreSQL database
// tell each other about agents (Postgres.ListenAgents). Its methods are
// called from the listener's goroutine, one at a time.
type AgentEvents interface {
	// Resync is called each time the listener has (re)connected and
	// listens: notifications sent while it was not listening are lost,
	// so the receiver checks again what it holds (GoneAgents). ctx ends
	// when the listener stops.
	Resync(ctx context.Context)
	// AgentDeleted is called for each agent deleted, through any process,
	// while the listener listens; the deleting process is told too.
	AgentDeleted(id string)
}

// PresenceEvents receives the changes of where agents are connected and of
// their routes, as ListAgentPresence reads them (Postgres.ListenPresence).
// Its methods are called from the listener's goroutine, one at a time.
type PresenceEvents interface {
	// Resync is called each time the listener has (re)connected and
	// listens: changes made while it was not listening are not announced,
	// so the receiver reads everything again. ctx ends when the listener
	// stops.
	Resync(ctx context.Context)
	// PresenceChanged is called, once per transaction, for each agent
	// whose connections (to any replica), routes, name or deletion a
	// committed transaction changed while the listener listens.
	PresenceChanged(agentID string)
}

// ListenConfig tunes Postgres.ListenAgents. The zero value is usable.
type ListenConfig struct {
	// BackoffMin and BackoffMax bound the jittered, doubling pause before
	// reconnecting a lost listener connection. If zero, 250 ms and 15 s.
	BackoffMin, BackoffMax time.Duration
	// PingInterval is how long the listener waits for a notification
	// before it checks that its connection still answers, so a silently
	// dead connection is replaced. If zero, 30 s.
	PingInterval time.Duration
}

// Defaults of ListenConfig.
const (
	DefaultListenBackoffMin   = 250 * time.Millisecond
	DefaultListenBackoffMax   = 15 * time.Second
	DefaultListenPingInterval = 30 * time.Second
	// listenHealthy is how long a listener connection must have lasted for
	// the next reconnect to start from BackoffMin again.
	listenHealthy = 30 * time.Second
)

func (c ListenConfig) withDefaults() ListenConfig {
	if c.BackoffMin <= 0 {
		c.BackoffMin = DefaultListenBackoffMin
	}
	if c.BackoffMax < c.BackoffMin {
		c.BackoffMax = max(DefaultListenBackoffMax, c.BackoffMin)
	}
	if c.PingInterval <= 0 {
		c.PingInterval = DefaultListenPingInterval
	}
	return c
}

// ListenAgents listens, on a connection of its own, for the agent
// deletions that any process sharing the database commits, and tells ev
// about them until ctx ends; then it returns nil. When the connection is
// lost (a server restart, pg_terminate_backend, a network failure, or a
// ping unanswered for PingInterval plus the query timeout) it reconnects
// with a capped, jittered backoff, and calls ev.Resync after every
// (re)connection, once it listens, so a notification lost meanwhile
// heals. Not safe to call twice at once with the same ev.
func (p *Postgres) ListenAgents(ctx context.Context, ev AgentEvents, cfg ListenConfig) error {
	return p.listen(ctx, listenTo{
		channel: agentDeletedChannel, appName: listenerAppName, what: "agent event",
		resync: ev.Resync, notified: ev.AgentDeleted,
	}, cfg)
}

// ListenPresence listens, on a connection of its own (application_name
// outpost-presence), for the changes of agent presence that any process
// sharing the database commits, and tells ev about them until ctx ends;
// then it returns nil. It reconnects and resyncs as ListenAgents does. Not
// safe to call twice at once with the same ev.
func (p *Postgres) ListenPresence(ctx context.Context, ev PresenceEvents, cfg ListenConfig) error {
	return p.listen(ctx, listenTo{
		channel: presenceChannel, appName: presenceAppName, what: "agent presence",
		resync: ev.Resync, notified: ev.PresenceChanged,
	}, cfg)
}

// listenTo is one channel a listener follows, and where its events go.
type listenTo struct {
	channel, appName string
	// what names the events in logs.
	what     string
	resync   func(ctx context.Context)
	notified func(payload string)
}

// listen runs listenOnce until ctx ends, reconnecting with a capped,
// jittered backoff.
func (p *Postgres) listen(ctx context.Context, to listenTo, cfg ListenConfig) error {
	cfg = cfg.withDefaults()
	log := p.log.Named("listener")
	pause := cfg.BackoffMin
	for {
		began := time.Now()
		err := p.listenOnce(ctx, to, cfg)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(began) >= listenHealthy {
			pause = cfg.BackoffMin
		}
		wait := pause/2 + rand.N(pause/2+1)
		log.Warn(to.what+" listener lost its connection; reconnecting", "error", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		pause = min(2*pause, cfg.BackoffMax)
	}
}

// listenOnce connects, listens and delivers notifications until the
// connection fails or ctx ends.
func (p *Postgres) listenOnce(ctx context.Context, to listenTo, cfg ListenConfig) error {
	cc := p.connCfg.Copy()
	cc.RuntimeParams["application_name"] = to.appName
	cctx, cancel := context.WithTimeout(ctx, p.timeout)
	c, err := pgx.ConnectConfig(cctx, cc)
	if err == nil {
		_, err = c.Exec(cctx, "LISTEN "+to.channel)
	}
	cancel()
	if err != nil {
		if c != nil {
			c.Close(context.WithoutCancel(ctx))
		}
		return fmt.Errorf("listen: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		c.Close(cctx)
	}()
	p.log.Named("listener").Debug("listening", "channel", to.channel)
	to.resync(ctx)
	for {
		wctx, cancel := context.WithTimeout(ctx, cfg.PingInterval)
		n, err := c.WaitForNotification(wctx)
		cancel()
		switch {
		case err == nil:
			if n.Channel == to.channel {
				to.notified(n.Payload)
			}
			continue
		case ctx.Err() != nil:
			return ctx.Err()
		case !errors.Is(err, context.DeadlineExceeded):
			return err
		}
		// Nothing for PingInterval: make sure the connection still answers.
		pctx, cancel := context.WithTimeout(ctx, p.timeout)
		err = c.Ping(pctx)
		cancel()
		if err != nil {
			return fmt.Errorf("ping: %w", err)
		}
	}
}
