package server

import (
	"context"
	"time"

	"github.com/outposthq/outpost/server/internal/approval"
	"github.com/outposthq/outpost/server/internal/broker"
)

// loadBook builds the book of approved and last advertised routes, makes it
// the registry's approver and loads it from the store, before any agent
// connects.
func (g *Gateway) loadBook() error {
	book, err := approval.New(approval.Config{
		Store:     g.store,
		Live:      g.agents,
		AcceptAny: g.cfg.AcceptAnyRoutes,
		Logger:    g.log.Named("approval"),
	})
	if err != nil {
		return err
	}
	g.agents.SetApprover(book)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := book.Load(ctx); err != nil {
		return err
	}
	if g.cfg.AcceptAnyRoutes {
		g.log.Warn("accept_any_routes is on: every route any agent advertises is accepted, approved or not; any enrolled agent can capture another's sessions (for labs only)")
	}
	g.book = book
	return nil
}

// knownRoutes is the book as the broker's KnownRoutes: the last advertised
// (and approved) routes of agents that cannot carry a session now.
type knownRoutes struct{ book *approval.Book }

func (k knownRoutes) Covering(host string) (broker.KnownRoute, bool) {
	r, ok := k.book.Covering(host)
	return broker.KnownRoute{AgentID: r.AgentID, Name: r.Name, Route: r.Route, State: r.State}, ok
}
