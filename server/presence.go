package server

import (
	"time"

	"github.com/outposthq/outpost/server/internal/cluster"
	"github.com/outposthq/outpost/server/internal/service/agentadmin"
)

// newPresence builds this replica's view of the agents connected to the
// other replicas, which feeds the router, on a PostgreSQL store; on SQLite
// (a cluster of one, nothing to listen to) it returns nil.
func (g *Gateway) newPresence() (*cluster.Presence, error) {
	l, ok := g.store.(cluster.PresenceListener)
	if !ok {
		return nil, nil
	}
	return cluster.NewPresence(cluster.PresenceConfig{
		Store:     g.store,
		Listener:  l,
		Sink:      g.router,
		Known:     g.book,
		ReplicaID: g.member.ID(),
		AcceptAny: g.cfg.AcceptAnyRoutes,
		GoneAfter: time.Duration(g.cfg.ReplicaGoneAfter),
		Now:       g.cfg.Now,
		Logger:    g.log.Named("presence"),
	})
}

// remote is the presence as the AgentAdmin service reads it: nil on
// SQLite.
func (g *Gateway) remote() agentadmin.Remote {
	if g.presence == nil {
		return nil
	}
	return g.presence
}
