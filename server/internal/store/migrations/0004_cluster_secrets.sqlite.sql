-- 0004: the secrets gateway replicas share (DESIGN.md §10): the CA
-- certificate and key, the server key and the token key, each sealed with
-- AES-256-GCM under the key-encryption key every replica is given
-- (--seal-key-file), with its name as the additional data. A gateway on
-- SQLite keeps them in files and leaves this table empty, unless secrets were
-- imported into it.
--
-- The value is binary, which the two databases spell differently: BLOB
-- here, BYTEA in the PostgreSQL file of this version.
CREATE TABLE cluster_secrets (
    name       TEXT   NOT NULL PRIMARY KEY,
    sealed     BLOB   NOT NULL,
    created_at BIGINT NOT NULL
);
