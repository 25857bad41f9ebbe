package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
)

const agentColumns = `id, name, hostname, spki_sha256, cert_serial, cert_not_after, enrolled_at, deleted_at, approved_routes, last_routes`

// nameKey is the form in which agent names are compared: names are unique
// case-insensitively.
func nameKey(name string) string { return strings.ToLower(name) }

// RecordEnrollmentToken implements Store.
func (s *sqlStore) RecordEnrollmentToken(ctx context.Context, t EnrollmentToken) error {
	if t.JTI == "" || t.ExpiresAt.IsZero() {
		return fmt.Errorf("%w: enrollment token needs a jti and an expiry", ErrInvalid)
	}
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		return execOne(ctx, tx, fmt.Errorf("%w: enrollment token %q already recorded", ErrConflict, t.JTI),
			`INSERT INTO enrollment_tokens (jti, agent_name, created_at, expires_at)
VALUES ($1, $2, $3, $4)
ON CONFLICT DO NOTHING`,
			t.JTI, t.AgentName, millis(s.orNow(t.CreatedAt)), millis(t.ExpiresAt))
	})
	return wrapErr("record enrollment token", err)
}

// ListEnrollmentTokens implements Store.
func (s *sqlStore) ListEnrollmentTokens(ctx context.Context) ([]EnrollmentToken, error) {
	return queryAll(ctx, s, "list enrollment tokens", scanEnrollmentToken, `SELECT t.jti, t.agent_name, t.created_at, t.expires_at, c.consumed_at, c.agent_id
FROM enrollment_tokens t LEFT JOIN consumed_enrollment_tokens c ON c.jti = t.jti
ORDER BY t.created_at, t.jti`)
}

func scanEnrollmentToken(sc scanner) (EnrollmentToken, error) {
	var (
		t                EnrollmentToken
		created, expires int64
		consumed         sql.NullInt64
		agentID          sql.NullString
	)
	if err := sc.Scan(&t.JTI, &t.AgentName, &created, &expires, &consumed, &agentID); err != nil {
		return EnrollmentToken{}, err
	}
	t.CreatedAt, t.ExpiresAt = fromMillis(created), fromMillis(expires)
	t.ConsumedAt, t.AgentID = ptrMillis(consumed), agentID.String
	return t, nil
}

// EnrollAgent implements Store. The transaction is serialized with every
// other enrollment first (SQLite: BEGIN IMMEDIATE takes the write lock;
// PostgreSQL: a transaction-scoped advisory lock), so concurrent
// enrollments, also from other processes, run one after the other and see
// each other's results.
func (s *sqlStore) EnrollAgent(ctx context.Context, req EnrollRequest) (EnrollResult, error) {
	a := req.Agent
	switch {
	case req.JTI == "" || req.TokenExpiresAt.IsZero() || req.CSRSHA256 == "" || len(req.CertPEM) == 0:
		return EnrollResult{}, fmt.Errorf("%w: enrollment needs a jti, the token expiry, the CSR hash and the certificate", ErrInvalid)
	case !canonicalUUID(a.ID):
		return EnrollResult{}, fmt.Errorf("%w: agent id %q is not a canonical UUID", ErrInvalid, a.ID)
	case a.Name == "" || a.SPKISHA256 == "":
		return EnrollResult{}, fmt.Errorf("%w: agent needs a name and an SPKI hash", ErrInvalid)
	}
	a.EnrolledAt = s.orNow(a.EnrolledAt)
	a.CertNotAfter = truncate(a.CertNotAfter)
	a.DeletedAt = nil
	a.ApprovedRoutes, a.LastRoutes = a.ApprovedRoutes.normal(), RouteSet{}.normal()
	approved, err := json.Marshal(a.ApprovedRoutes)
	if err != nil {
		return EnrollResult{}, fmt.Errorf("%w: approved routes: %v", ErrInvalid, err)
	}
	last, _ := json.Marshal(a.LastRoutes)

	var res EnrollResult
	err = s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if err := s.d.serialize(ctx, tx); err != nil {
			return err
		}
		var csrHash, agentID, certPEM string
		err := tx.QueryRowContext(ctx, `SELECT csr_sha256, agent_id, cert_pem FROM consumed_enrollment_tokens WHERE jti = $1`,
			req.JTI).Scan(&csrHash, &agentID, &certPEM)
		switch {
		case err == nil:
			return s.replayLocked(ctx, tx, req, csrHash, agentID, certPEM, &res)
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}

		var holder string
		err = tx.QueryRowContext(ctx, `SELECT id FROM agents WHERE name_key = $1 AND deleted_at IS NULL`,
			nameKey(a.Name)).Scan(&holder)
		switch {
		case err == nil:
			return fmt.Errorf("%w: %q (agent %s)", ErrNameTaken, a.Name, holder)
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}

		r, err := tx.ExecContext(ctx, `INSERT INTO agents (`+agentColumns+`, name_key)
VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8, $9, $10)
ON CONFLICT DO NOTHING`,
			a.ID, a.Name, a.Hostname, a.SPKISHA256, a.CertSerial, millis(a.CertNotAfter), millis(a.EnrolledAt),
			string(approved), string(last), nameKey(a.Name))
		if err != nil {
			return err
		}
		if n, err := rowsAffected(r); err != nil {
			return err
		} else if n == 0 {
			// The live name was checked above, serialized with other
			// enrollments, so the id is what collides.
			return fmt.Errorf("%w: agent id %s exists", ErrConflict, a.ID)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO consumed_enrollment_tokens
(jti, expires_at, csr_sha256, agent_id, cert_pem, consumed_at)
VALUES ($1, $2, $3, $4, $5, $6)`,
			req.JTI, millis(req.TokenExpiresAt), req.CSRSHA256, a.ID, string(req.CertPEM), millis(s.now())); err != nil {
			return err
		}
		res = EnrollResult{Agent: a, CertPEM: append([]byte(nil), req.CertPEM...)}
		return nil
	})
	if err != nil {
		return EnrollResult{}, wrapErr("enroll agent", err)
	}
	if !res.Replayed {
		s.log.Debug("enrolled agent", "agent_id", a.ID, "name", a.Name, "jti", req.JTI)
	}
	return res, nil
}

// replayLocked answers an enrollment whose jti was already consumed.
func (s *sqlStore) replayLocked(ctx context.Context, tx *sql.Tx, req EnrollRequest, csrHash, agentID, certPEM string, res *EnrollResult) error {
	if csrHash != req.CSRSHA256 {
		return fmt.Errorf("%w: enrollment token %s was used with another CSR", ErrTokenUsed, req.JTI)
	}
	a, err := getAgent(ctx, tx, agentID)
	if err != nil {
		return err
	}
	if a.DeletedAt != nil {
		return fmt.Errorf("%w: enrollment token %s enrolled agent %s, since deleted", ErrTokenUsed, req.JTI, agentID)
	}
	*res = EnrollResult{Agent: a, CertPEM: []byte(certPEM), Replayed: true}
	return nil
}

// canonicalUUID reports whether s is a UUID in lowercase hyphenated form.
func canonicalUUID(s string) bool {
	id, err := uuid.Parse(s)
	return err == nil && id.String() == s
}

// GetAgent implements Store.
func (s *sqlStore) GetAgent(ctx context.Context, id string) (Agent, error) {
	var a Agent
	err := s.read(ctx, func(ctx context.Context) (err error) {
		a, err = getAgent(ctx, s.db, id)
		return err
	})
	return a, wrapErr("get agent", err)
}

func getAgent(ctx context.Context, q queryer, id string) (Agent, error) {
	a, err := scanAgent(q.QueryRowContext(ctx, `SELECT `+agentColumns+` FROM agents WHERE id = $1`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Agent{}, fmt.Errorf("%w: agent %q", ErrNotFound, id)
	}
	return a, err
}

// ListAgents implements Store.
func (s *sqlStore) ListAgents(ctx context.Context, opts ListAgentsOptions) ([]Agent, error) {
	limit := opts.Limit
	if limit <= 0 {
		limit = DefaultListLimit
	}
	query := `SELECT ` + agentColumns + ` FROM agents WHERE id > $1 AND deleted_at IS NULL ORDER BY id LIMIT $2`
	if opts.IncludeDeleted {
		query = `SELECT ` + agentColumns + ` FROM agents WHERE id > $1 ORDER BY id LIMIT $2`
	}
	return queryAll(ctx, s, "list agents", scanAgent, query, opts.AfterID, limit)
}

// DeleteAgent implements Store. On PostgreSQL the deletion is announced
// on agentDeletedChannel in the same transaction, so every listener learns
// it exactly when it is committed.
func (s *sqlStore) DeleteAgent(ctx context.Context, id string) error {
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if err := execOne(ctx, tx, fmt.Errorf("%w: live agent %q", ErrNotFound, id),
			`UPDATE agents SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL`,
			id, millis(s.now())); err != nil {
			return err
		}
		return s.d.notify(ctx, tx, agentDeletedChannel, id)
	})
	return wrapErr("delete agent", err)
}

// maxIDsPerQuery bounds the ids bound to one IN list.
const maxIDsPerQuery = 500

// GoneAgents implements Store.
func (s *sqlStore) GoneAgents(ctx context.Context, ids []string) ([]string, error) {
	var gone []string
	for batch := range slices.Chunk(slices.Compact(slices.Sorted(slices.Values(ids))), maxIDsPerQuery) {
		live, err := queryAll(ctx, s, "gone agents", scanString,
			`SELECT id FROM agents WHERE deleted_at IS NULL AND id IN (`+placeholders(1, len(batch))+`)`, anys(batch)...)
		if err != nil {
			return nil, err
		}
		for _, id := range batch {
			if !slices.Contains(live, id) {
				gone = append(gone, id)
			}
		}
	}
	return gone, nil
}

// placeholders returns n comma-separated placeholders from $first on.
func placeholders(first, n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "$%d", first+i)
	}
	return b.String()
}

// anys returns ss as query arguments.
func anys(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

func scanString(sc scanner) (string, error) {
	var v string
	err := sc.Scan(&v)
	return v, err
}

// UpdateAgentCert implements Store.
func (s *sqlStore) UpdateAgentCert(ctx context.Context, id, spkiSHA256, serial string, notAfter time.Time) error {
	if spkiSHA256 == "" {
		return fmt.Errorf("%w: empty SPKI hash", ErrInvalid)
	}
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		return execOne(ctx, tx, fmt.Errorf("%w: live agent %q", ErrNotFound, id),
			`UPDATE agents SET spki_sha256 = $2, cert_serial = $3, cert_not_after = $4
WHERE id = $1 AND deleted_at IS NULL`,
			id, spkiSHA256, serial, millis(notAfter))
	})
	return wrapErr("update agent certificate", err)
}

// SetApprovedRoutes implements Store.
func (s *sqlStore) SetApprovedRoutes(ctx context.Context, id string, routes RouteSet) error {
	return wrapErr("set approved routes", s.setRoutes(ctx, id, "approved_routes", routes))
}

// SetLastRoutes implements Store.
func (s *sqlStore) SetLastRoutes(ctx context.Context, id string, routes RouteSet) error {
	return wrapErr("set last routes", s.setRoutes(ctx, id, "last_routes", routes))
}

// setRoutes writes a RouteSet column of a live agent; column is one of the
// two route columns, never input.
func (s *sqlStore) setRoutes(ctx context.Context, id, column string, routes RouteSet) error {
	b, err := json.Marshal(routes.normal())
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrInvalid, column, err)
	}
	return s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		return execOne(ctx, tx, fmt.Errorf("%w: live agent %q", ErrNotFound, id),
			`UPDATE agents SET `+column+` = $2 WHERE id = $1 AND deleted_at IS NULL`, id, string(b))
	})
}

// normal returns r with nil lists made empty, so that JSON holds [] rather
// than null.
func (r RouteSet) normal() RouteSet {
	if r.Subnets == nil {
		r.Subnets = []string{}
	}
	if r.Domains == nil {
		r.Domains = []string{}
	}
	return r
}

func scanAgent(sc scanner) (Agent, error) {
	var (
		a                  Agent
		notAfter, enrolled int64
		deleted            sql.NullInt64
		approved, last     string
	)
	if err := sc.Scan(&a.ID, &a.Name, &a.Hostname, &a.SPKISHA256, &a.CertSerial, &notAfter, &enrolled, &deleted, &approved, &last); err != nil {
		return Agent{}, err
	}
	a.CertNotAfter, a.EnrolledAt, a.DeletedAt = fromMillis(notAfter), fromMillis(enrolled), ptrMillis(deleted)
	if err := json.Unmarshal([]byte(approved), &a.ApprovedRoutes); err != nil {
		return Agent{}, fmt.Errorf("agent %s: approved_routes: %w", a.ID, err)
	}
	if err := json.Unmarshal([]byte(last), &a.LastRoutes); err != nil {
		return Agent{}, fmt.Errorf("agent %s: last_routes: %w", a.ID, err)
	}
	a.ApprovedRoutes, a.LastRoutes = a.ApprovedRoutes.normal(), a.LastRoutes.normal()
	return a, nil
}
