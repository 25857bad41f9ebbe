-- 0001: the first schema.
--
-- Portable SQL (SQLite and PostgreSQL): TEXT and BIGINT only. Timestamps are
-- BIGINT Unix milliseconds, UTC; NULL means "not yet". Identifiers are
-- canonical lowercase UUID strings.

-- Management API keys. key_hash is the lowercase hex SHA-256 of the secret;
-- scopes is a JSON array of strings.
CREATE TABLE api_keys (
    id         TEXT   NOT NULL PRIMARY KEY,
    name       TEXT   NOT NULL,
    key_hash   TEXT   NOT NULL UNIQUE,
    scopes     TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

-- Enrolled agents. Rows are never deleted: deleted_at marks a deleted agent.
-- name_key is the lowercased name, so uniqueness is case-insensitive.
CREATE TABLE agents (
    id             TEXT   NOT NULL PRIMARY KEY,
    name           TEXT   NOT NULL,
    name_key       TEXT   NOT NULL,
    hostname       TEXT   NOT NULL,
    spki_sha256    TEXT   NOT NULL,
    cert_serial    TEXT   NOT NULL,
    cert_not_after BIGINT NOT NULL,
    enrolled_at    BIGINT NOT NULL,
    deleted_at     BIGINT
);

-- A live agent's name is unique; a deleted agent's name may be reused.
CREATE UNIQUE INDEX agents_live_name ON agents (name_key) WHERE deleted_at IS NULL;

-- Enrollment tokens minted by this gateway, for listing.
CREATE TABLE enrollment_tokens (
    jti        TEXT   NOT NULL PRIMARY KEY,
    agent_name TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE INDEX enrollment_tokens_expires_at ON enrollment_tokens (expires_at);

-- Every consumed enrollment jti, whoever minted the token (this gateway, a
-- replica, an external provisioner). The jti primary key makes consumption
-- single-use; csr_sha256 and cert_pem answer an identical retry.
CREATE TABLE consumed_enrollment_tokens (
    jti         TEXT   NOT NULL PRIMARY KEY,
    expires_at  BIGINT NOT NULL,
    csr_sha256  TEXT   NOT NULL,
    agent_id    TEXT   NOT NULL REFERENCES agents (id),
    cert_pem    TEXT   NOT NULL,
    consumed_at BIGINT NOT NULL
);

CREATE INDEX consumed_enrollment_tokens_expires_at ON consumed_enrollment_tokens (expires_at);

-- Consumed single-use session token jtis.
CREATE TABLE consumed_session_tokens (
    jti         TEXT   NOT NULL PRIMARY KEY,
    expires_at  BIGINT NOT NULL,
    consumed_at BIGINT NOT NULL
);

CREATE INDEX consumed_session_tokens_expires_at ON consumed_session_tokens (expires_at);

-- Session audit. agent_id is '' for a direct connection (no foreign key: the
-- audit must not fail on it).
CREATE TABLE sessions (
    id         TEXT   NOT NULL PRIMARY KEY,
    target     TEXT   NOT NULL,
    agent_id   TEXT   NOT NULL,
    decision   TEXT   NOT NULL,
    started_at BIGINT NOT NULL,
    ended_at   BIGINT,
    bytes_up   BIGINT NOT NULL,
    bytes_down BIGINT NOT NULL,
    outcome    TEXT   NOT NULL,
    reason     TEXT   NOT NULL
);

CREATE INDEX sessions_started_at ON sessions (started_at);
