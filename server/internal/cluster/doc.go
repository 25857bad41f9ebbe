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
// A SQLite store is a cluster of one: the gateway registers itself alone,
// and nothing is listened for.
package cluster
