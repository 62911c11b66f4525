-- The PostgreSQL twin of sqlite/0001_initial.sql: same tables, same columns.
CREATE TABLE sessions (
    key BYTEA PRIMARY KEY NOT NULL,
    username TEXT NOT NULL,
    factors TEXT NOT NULL,
    created BIGINT NOT NULL,
    last_seen BIGINT NOT NULL,
    pending_totp BYTEA
);
CREATE INDEX sessions_by_user ON sessions (username);

CREATE TABLE totp_credentials (
    username TEXT PRIMARY KEY NOT NULL,
    sealed_secret BYTEA NOT NULL,
    algorithm TEXT NOT NULL,
    digits BIGINT NOT NULL,
    period BIGINT NOT NULL,
    created BIGINT NOT NULL,
    last_step BIGINT NOT NULL
);
