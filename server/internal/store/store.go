// Package store persists the gateway's durable state (DESIGN.md §10): API
// keys, enrollment tokens and consumed token ids, enrolled agents with their
// approved routes and last advertised routes, the session audit, the
// sealed secrets that gateway replicas share, and the replicas themselves
// with the agent connections each one holds. The connections themselves
// stay in memory elsewhere. On PostgreSQL, agent deletions are announced
// to every replica (ListenAgents), and so is every change of where agents
// are connected and of their routes (ListenPresence, ListAgentPresence).
//
// Store is the interface, with two implementations sharing one body of SQL
// over database/sql: SQLite, opened with OpenSQLite, the default (one file
// in the data directory, pure Go driver), and PostgreSQL, opened with
// OpenPostgres (pgx), for several gateways on one database. The schema is
// versioned by embedded migrations written in portable SQL (TEXT and
// BIGINT, $N placeholders); what the databases do differently (locking,
// retries) is isolated in a small dialect of each.
//
// Conventions: times are stored as BIGINT Unix milliseconds and returned in
// UTC, truncated to the millisecond; a nil *time.Time means "not yet"
// (not revoked, not deleted). Every write that a method acknowledges is
// committed durably before it returns, so a restart loses nothing that was
// acknowledged. Every call has a deadline (Config.QueryTimeout).
package store

import (
	"context"
	"errors"
	"time"
)

// Errors callers branch on. Methods wrap them with the detail, so match
// them with errors.Is.
var (
	// ErrNotFound: no such API key, agent or session (or, for DeleteAgent
	// and UpdateAgentCert, the agent was deleted).
	ErrNotFound = errors.New("store: not found")
	// ErrConflict: a row with the same unique identifier (id, hash, jti)
	// already exists, or a session was already finished.
	ErrConflict = errors.New("store: conflict")
	// ErrNameTaken: a live agent already has this name, compared
	// case-insensitively.
	ErrNameTaken = errors.New("store: agent name taken")
	// ErrTokenUsed: a single-use token's jti was already consumed, or a
	// session token has opened as many connections as it may.
	ErrTokenUsed = errors.New("store: token already used")
	// ErrInvalid: a required field is missing or malformed; a programming
	// error in the caller.
	ErrInvalid = errors.New("store: invalid argument")
	// ErrSchemaTooNew: the database was migrated by a newer gateway.
	ErrSchemaTooNew = errors.New("store: database schema is newer than this gateway")
	// ErrUnavailable: the database could not be reached, or did not answer
	// within the call's deadline, so the call could not decide anything
	// (a write may or may not have committed if the connection broke at
	// its COMMIT). Try again later; never take it for a "no".
	ErrUnavailable = errors.New("store: database unavailable")
)

// Store is the gateway's persistent state. Implementations are safe for
// concurrent use, by several goroutines and by several processes (or
// replicas) sharing the database.
type Store interface {
	// Ping checks that the database answers.
	Ping(ctx context.Context) error
	// Close releases the database. It is idempotent.
	Close() error

	// CreateAPIKey stores a new key. ID, Name and Hash are required; a zero
	// CreatedAt means now; RevokedAt is ignored. ErrConflict if the id or
	// hash exists.
	CreateAPIKey(ctx context.Context, k APIKey) error
	// APIKeyByHash returns the key with this secret hash, revoked or not.
	// ErrNotFound if none.
	APIKeyByHash(ctx context.Context, hash []byte) (APIKey, error)
	// ListAPIKeys returns every key, revoked ones included, oldest first.
	ListAPIKeys(ctx context.Context) ([]APIKey, error)
	// RevokeAPIKey marks a key revoked. Revoking a revoked key succeeds and
	// keeps the first revocation time. ErrNotFound if no such key.
	RevokeAPIKey(ctx context.Context, id string) error
	// GetAPIKey returns the key with this id, revoked or not. ErrNotFound if
	// none.
	GetAPIKey(ctx context.Context, id string) (APIKey, error)
	// CountAPIKeys returns the number of keys, revoked ones included: zero
	// means the gateway has never created one.
	CountAPIKeys(ctx context.Context) (int, error)

	// RecordEnrollmentToken remembers a token this gateway minted, for
	// listing. Consuming a jti does not require it to be recorded.
	// ErrConflict if the jti is already recorded.
	RecordEnrollmentToken(ctx context.Context, t EnrollmentToken) error
	// ListEnrollmentTokens returns the recorded tokens, oldest first, with
	// their consumption if any.
	ListEnrollmentTokens(ctx context.Context) ([]EnrollmentToken, error)
	// EnrollAgent consumes an enrollment token's jti and stores the new
	// agent in one transaction; see EnrollRequest. The outcomes:
	//   - the jti is new and the name free: the agent is stored and the
	//     jti consumed; Replayed is false;
	//   - the jti was consumed by a request with the same CSR hash, and that
	//     agent is not deleted: the stored agent and certificate are returned
	//     with Replayed true and nothing changes (an idempotent retry);
	//   - the jti was consumed with another CSR, or its agent was deleted:
	//     ErrTokenUsed;
	//   - a live agent has the name (case-insensitively): ErrNameTaken, and
	//     the jti is NOT consumed;
	//   - the agent id exists: ErrConflict, and the jti is not consumed.
	// Concurrent calls with the same jti serialize: exactly one consumes it.
	EnrollAgent(ctx context.Context, req EnrollRequest) (EnrollResult, error)

	// GetAgent returns an agent, deleted or not (see Agent.DeletedAt).
	// ErrNotFound if the id was never enrolled.
	GetAgent(ctx context.Context, id string) (Agent, error)
	// ListAgents returns agents with ids greater than opts.AfterID in id
	// order, at most opts.Limit of them.
	ListAgents(ctx context.Context, opts ListAgentsOptions) ([]Agent, error)
	// DeleteAgent marks a live agent deleted (its name becomes reusable; the
	// row stays for audit). ErrNotFound if no such agent or it is already
	// deleted. On PostgreSQL, the listeners of every process sharing the
	// database learn it when it commits (Postgres.ListenAgents).
	DeleteAgent(ctx context.Context, id string) error
	// GoneAgents returns those of ids that are deleted or were never
	// enrolled, in id order, each once; an empty or nil slice when all
	// are live.
	GoneAgents(ctx context.Context, ids []string) ([]string, error)
	// UpdateAgentCert records a renewed certificate for a live agent.
	// ErrNotFound if no such agent or it is deleted.
	UpdateAgentCert(ctx context.Context, id, spkiSHA256, serial string, notAfter time.Time) error
	// SetApprovedRoutes replaces a live agent's approved routes.
	// ErrNotFound if no such agent or it is deleted.
	SetApprovedRoutes(ctx context.Context, id string, routes RouteSet) error
	// SetLastRoutes records a live agent's last advertised routes.
	// ErrNotFound if no such agent or it is deleted.
	SetLastRoutes(ctx context.Context, id string, routes RouteSet) error

	// InsertSession records a session at its start. ID is required; a zero
	// StartedAt means now; a zero EndedAt leaves it open. ErrConflict if the
	// id exists.
	InsertSession(ctx context.Context, r SessionRecord) error
	// FinishSession records the end of an open session; a zero end means
	// now. ErrNotFound if no such session, ErrConflict if already finished.
	FinishSession(ctx context.Context, id string, end time.Time, bytesUp, bytesDown int64, outcome, reason string) error
	// RecordSessions writes a batch of audit records in one transaction,
	// all of them or none, as if one by one in order: a record whose id is
	// not stored is inserted as given (open while its EndedAt is zero; a
	// zero StartedAt means now); a finished record (EndedAt set) whose
	// session is stored open records its end, bytes, outcome and reason;
	// any other record changes nothing. So a session may be written once,
	// finished, or open at its start and finished later, and writing the
	// same records again (a retry after an unknown outcome) is harmless.
	// ErrInvalid, and nothing is written, for a record without an id or
	// with a negative byte count.
	RecordSessions(ctx context.Context, recs []SessionRecord) error
	// GetSession returns a session record. ErrNotFound if none.
	GetSession(ctx context.Context, id string) (SessionRecord, error)
	// ListSessions returns the session records that match opts, newest
	// first (by StartedAt, then ID, both descending), at most opts.Limit of
	// them, starting after opts.After.
	ListSessions(ctx context.Context, opts ListSessionsOptions) ([]SessionRecord, error)
	// UseSessionToken counts one connection opened with the session token
	// jti, which may open at most max (1 for a single-use token), and
	// returns the count with this one. ErrTokenUsed, and nothing changes,
	// when the token has already opened max connections. The count is kept
	// until PruneExpired passes expiresAt. Concurrent calls, from any
	// process sharing the database, never count past max: the increment is
	// one conditional statement. ErrInvalid for an empty jti, a zero
	// expiresAt or a max below 1.
	UseSessionToken(ctx context.Context, jti string, expiresAt time.Time, max int64) (int64, error)
	// UseSessionTokenN counts n connections at once, all or none: as
	// UseSessionToken, but ErrTokenUsed (and nothing changes) unless the
	// count with the n stays within max. A standing client connection
	// reserves uses for its coming sessions this way and gives back what
	// it did not use with ReturnSessionTokenUses. ErrInvalid for n below 1
	// or above max.
	UseSessionTokenN(ctx context.Context, jti string, expiresAt time.Time, max, n int64) (int64, error)
	// ReturnSessionTokenUses takes back n uses of jti counted but never
	// used (a reservation's rest). The count never goes below zero; an
	// unknown (or pruned) jti is not an error.
	ReturnSessionTokenUses(ctx context.Context, jti string, n int64) error
	// PruneExpired deletes consumed enrollment jtis, session token counts and
	// recorded enrollment tokens whose token expired before before, and
	// returns how many rows it deleted. Pass a time early enough that every
	// token expiring before it is refused by token verification (now minus
	// the verification leeway): a pruned jti can be consumed (counted) again.
	PruneExpired(ctx context.Context, before time.Time) (int64, error)
	// PruneSessions deletes the audit records of sessions that started
	// before before (the audit retention) and returns how many it deleted.
	PruneSessions(ctx context.Context, before time.Time) (int64, error)

	// CreateSecrets stores the secrets gateway replicas share, all of them
	// or none: ErrConflict, and nothing is stored, when a secret of one of
	// the names exists. Of replicas that race to create the first secrets,
	// exactly one succeeds; the others read its secrets with ListSecrets.
	// ErrInvalid for an empty list, name or value.
	CreateSecrets(ctx context.Context, secrets []Secret) error
	// ListSecrets returns every stored secret in name order; an empty,
	// non-nil slice when there are none.
	ListSecrets(ctx context.Context) ([]Secret, error)

	// RegisterReplica records a gateway replica, or replaces the record
	// of a replica with its id (a restart). ID and a State are required
	// (ErrInvalid); a zero StartedAt or HeartbeatAt means now.
	RegisterReplica(ctx context.Context, r Replica) error
	// HeartbeatReplica records that the replica is alive at at (zero:
	// now), in state. ErrNotFound if it is not registered (never was, or
	// was swept as gone): register it again.
	HeartbeatReplica(ctx context.Context, id string, state ReplicaState, at time.Time) error
	// ListReplicas returns every registered replica, gone or not, oldest
	// start first, each with the count of its recorded agent connections.
	ListReplicas(ctx context.Context) ([]Replica, error)
	// SweepReplicas deletes the replicas, but keep, whose last heartbeat
	// is before heartbeatBefore, with their agent connections, and
	// returns their ids in order.
	SweepReplicas(ctx context.Context, heartbeatBefore time.Time, keep string) ([]string, error)
	// UpdateAgentConnections applies changes to the agent connections
	// recorded for the replica, in order, all of them or none: a
	// connection replaces the record of an earlier connection of its agent
	// to the replica (a zero ConnectedAt means now); a removal forgets the
	// record if it is of that generation (a later connection's record
	// stays; removing what is not recorded succeeds). ErrInvalid for a
	// change of another replica; ErrNotFound if the replica is not
	// registered.
	UpdateAgentConnections(ctx context.Context, replicaID string, changes []ConnectionChange) error
	// SetAgentConnections replaces every agent connection recorded for
	// the replica with conns, all of them or none. ErrInvalid for a
	// connection of another replica; ErrNotFound if the replica is not
	// registered and conns is not empty.
	SetAgentConnections(ctx context.Context, replicaID string, conns []AgentConnection) error
	// AgentReplicas returns, for those of agentIDs that have any, the ids
	// of the replicas recorded to hold a connection of the agent and
	// heard from (heartbeat) at or after heartbeatSince, in id order.
	AgentReplicas(ctx context.Context, agentIDs []string, heartbeatSince time.Time) (map[string][]string, error)
	// ListAgentPresence returns the live agents connected to serving
	// replicas other than opts.ExcludeReplica and heard from since
	// opts.HeartbeatSince (restricted to opts.AgentIDs if not nil), in id
	// order, each with its routes and the replicas holding it; an empty,
	// non-nil slice when there are none. It is one query (per
	// maxIDsPerQuery ids when AgentIDs is set). On PostgreSQL, each change
	// that can alter its answer for an agent is announced to
	// Postgres.ListenPresence.
	ListAgentPresence(ctx context.Context, opts PresenceOptions) ([]AgentPresence, error)

	// ExportRows reads every row but the cluster secrets, in one
	// consistent snapshot, to move the gateway to another store.
	ExportRows(ctx context.Context) (Rows, error)
	// ImportRows writes rows that ExportRows read into this store, all or
	// none. ErrConflict, and nothing changes, unless every table it fills
	// is empty; ErrInvalid for rows of another schema version or of an
	// unknown table or column.
	ImportRows(ctx context.Context, r Rows) error
}

// APIKey is a management API key. The secret itself is never stored.
type APIKey struct {
	ID        string     // unique, chosen by the caller (a UUID)
	Name      string     // for operators
	Hash      []byte     // SHA-256 of the secret; unique
	Scopes    []string   // granted scopes; nil is stored as none
	CreatedAt time.Time  // if zero on create, now
	RevokedAt *time.Time // nil while the key is valid
}

// EnrollmentToken is an enrollment token minted by this gateway.
type EnrollmentToken struct {
	JTI       string    // the token's unique id
	AgentName string    // the agent name the token carries; may be empty
	CreatedAt time.Time // if zero on record, now
	ExpiresAt time.Time // the token's exp

	// Filled by ListEnrollmentTokens, ignored by RecordEnrollmentToken.
	ConsumedAt *time.Time // nil while unused
	AgentID    string     // the agent enrolled with it, if consumed
}

// Agent is an enrolled agent.
type Agent struct {
	ID           string     // canonical UUID: lowercase, hyphenated
	Name         string     // unique among live agents, case-insensitively
	Hostname     string     // as reported at enrollment; may be empty
	SPKISHA256   string     // hex SHA-256 of the certificate key's SubjectPublicKeyInfo
	CertSerial   string     // hex serial of the current certificate
	CertNotAfter time.Time  // expiry of the current certificate
	EnrolledAt   time.Time  // if zero on enroll, now
	DeletedAt    *time.Time // nil while live
	// ApprovedRoutes are the routes the agent may serve, stored at
	// enrollment and replaced by SetApprovedRoutes.
	ApprovedRoutes RouteSet
	// LastRoutes are the agent's last advertised routes (SetLastRoutes);
	// empty at enrollment and ignored by EnrollAgent.
	LastRoutes RouteSet
}

// RouteSet is a set of routes as the API writes them: IPv4 CIDR subnets and
// domain routes. The store keeps the strings as given; a nil list reads back
// as an empty one.
type RouteSet struct {
	Subnets []string `json:"subnets"`
	Domains []string `json:"domains"`
}

// ListAgentsOptions selects a page of ListAgents.
type ListAgentsOptions struct {
	// AfterID starts the page after this id (keyset pagination); "" starts
	// at the beginning.
	AfterID string
	// Limit is the page size. If zero or negative, 100.
	Limit int
	// IncludeDeleted also returns deleted agents.
	IncludeDeleted bool
}

// ListSessionsOptions selects a page of ListSessions. Every set filter
// must match.
type ListSessionsOptions struct {
	// After starts the page after this position in the list order (keyset
	// pagination); nil starts with the newest session.
	After *SessionCursor
	// Limit is the page size. If zero or negative, 100.
	Limit int
	// AgentID, if set, selects the sessions of this agent.
	AgentID string
	// Target, if set, selects the sessions to this target, compared
	// exactly.
	Target string
	// Outcome, if set, selects the sessions with this outcome, compared
	// exactly.
	Outcome string
	// OpenOnly selects the sessions that have not ended.
	OpenOnly bool
	// From, if not zero, selects the sessions that started at or after it.
	From time.Time
	// Until, if not zero, selects the sessions that started before it.
	Until time.Time
}

// SessionCursor is a position in the order of ListSessions: the last
// record of a page.
type SessionCursor struct {
	StartedAt time.Time
	ID        string
}

// DefaultListLimit is the page size of ListAgents when none is given.
const DefaultListLimit = 100

// EnrollRequest is one enrollment: the token's jti to consume and the agent
// to store with its first certificate.
type EnrollRequest struct {
	JTI            string    // required
	TokenExpiresAt time.Time // required; the consumed jti is kept until then (see PruneExpired)
	CSRSHA256      string    // required; identifies a retry of the same request
	Agent          Agent     // ID (canonical UUID), Name, SPKISHA256 required; DeletedAt ignored
	CertPEM        []byte    // required; returned again on an idempotent retry
}

// EnrollResult is the outcome of EnrollAgent.
type EnrollResult struct {
	Agent    Agent  // the stored agent (for a replay: as it is now)
	CertPEM  []byte // the certificate issued at enrollment
	Replayed bool   // true when this was a retry of an earlier, identical request
}

// SessionRecord is the audit record of one client session.
type SessionRecord struct {
	ID        string    // the session id (the session token's jti); required
	Target    string    // host:port
	AgentID   string    // the agent that carried it; "" for a direct connection
	Decision  string    // the routing decision and why
	StartedAt time.Time // if zero on insert, now
	EndedAt   time.Time // zero while open
	BytesUp   int64     // client → target
	BytesDown int64     // target → client
	Outcome   string    // e.g. "ok", "refused", "error"; "" while open
	Reason    string    // detail for the outcome
	// KeyID is the id of the API key that minted the session token; ""
	// for rows written before it was recorded.
	KeyID string
	// ClientAddr is the client's address as the gateway saw it
	// ("203.0.113.7:51234"); "" when unknown.
	ClientAddr string
}
