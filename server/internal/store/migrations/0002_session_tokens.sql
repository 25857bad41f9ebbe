-- 0002: session tokens answer to the API key that minted them (DESIGN.md §9).
--
-- The audit names the minting key and the client's address; rows written
-- before this migration keep '' in both.
ALTER TABLE sessions ADD COLUMN key_id TEXT NOT NULL DEFAULT '';
ALTER TABLE sessions ADD COLUMN client_addr TEXT NOT NULL DEFAULT '';

CREATE INDEX sessions_key_id ON sessions (key_id);

-- How many connections each session token has opened, single-use and
-- reusable alike: a single-use token may open one, a reusable one up to its
-- cap. The row is kept until the token expires (see PruneExpired).
CREATE TABLE session_token_uses (
    jti           TEXT   NOT NULL PRIMARY KEY,
    uses          BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    first_used_at BIGINT NOT NULL,
    last_used_at  BIGINT NOT NULL
);

CREATE INDEX session_token_uses_expires_at ON session_token_uses (expires_at);

-- Single-use tokens consumed before this migration stay consumed.
INSERT INTO session_token_uses (jti, uses, expires_at, first_used_at, last_used_at)
SELECT jti, 1, expires_at, consumed_at, consumed_at FROM consumed_session_tokens;

DROP TABLE consumed_session_tokens;
