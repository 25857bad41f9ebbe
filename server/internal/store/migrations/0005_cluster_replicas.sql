-- 0005: the gateway replicas sharing the database (DESIGN.md §10a), each
-- registered by itself and kept fresh by its heartbeats, and the agent
-- connections each replica holds. A SQLite gateway is a cluster of one: it
-- registers itself alone.
--
-- state is 'serving' or 'draining'; a replica whose heartbeat_at is older
-- than the cluster's timeout is gone, whatever its state, and its rows are
-- swept by the survivors (agent_connections with it, by the cascade).
CREATE TABLE gateway_replicas (
    id            TEXT   NOT NULL PRIMARY KEY,
    name          TEXT   NOT NULL,
    quic_endpoint TEXT   NOT NULL,
    api_endpoint  TEXT   NOT NULL,
    peer_endpoint TEXT   NOT NULL,
    started_at    BIGINT NOT NULL,
    heartbeat_at  BIGINT NOT NULL,
    state         TEXT   NOT NULL
);

-- One row per agent and replica: the replica's live connection of the
-- agent, with the connection's generation on that replica.
CREATE TABLE agent_connections (
    agent_id     TEXT   NOT NULL,
    replica_id   TEXT   NOT NULL REFERENCES gateway_replicas (id) ON DELETE CASCADE,
    generation   BIGINT NOT NULL,
    connected_at BIGINT NOT NULL,
    PRIMARY KEY (agent_id, replica_id)
);
CREATE INDEX agent_connections_replica ON agent_connections (replica_id);
