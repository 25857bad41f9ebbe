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
// A SQLite store is a cluster of one: nothing is listened for.
package cluster
