// Package cluster is a gateway replica's part in a cluster of replicas
// sharing one PostgreSQL database (DESIGN.md §10a).
//
// Deletions (deletions.go) makes a deletion through any replica take
// effect on every replica within about a second: each replica listens for
// the deletions the store announces (LISTEN/NOTIFY), closes the deleted
// agent's connection and forgets its cached admission; after every
// (re)connection of the listener, and periodically, it checks the agents
// it holds against the store, so a lost notification heals.
//
// Member (member.go) registers the replica in the store under a stable id
// (LoadOrCreateID: a file in its data directory), heartbeats every 10 s,
// marks it draining on a graceful stop, records the agent connections it
// holds, and sweeps the rows of replicas gone (no heartbeat for 30 s) for
// longer than a grace. Gateways lists the replicas with their state
// (serving, draining, gone) and agent counts; AgentReplicas says which
// replicas hold each agent.
//
// Presence (presence.go) keeps this replica's view of the agents
// connected to the other replicas — their routes, their latest connection
// and the replicas holding them — and hands it to the router, so any
// replica routes to any agent. It follows the store's presence
// notifications (LISTEN/NOTIFY, fired by triggers on the connection and
// agent rows) and reads everything again every 10 s, so a lost
// notification heals.
//
// A SQLite store is a cluster of one: the gateway registers itself alone,
// and nothing is listened for.
package cluster
