-- API tokens of the admin listener. Only the SHA-256 of a token is kept:
-- tokens are 32 random bytes, so a plain hash cannot be searched back.
CREATE TABLE admin_tokens (
    name TEXT PRIMARY KEY,
    hash BYTEA NOT NULL UNIQUE,
    -- JSON lists: the scopes granted, and the groups the token is limited
    -- to (empty: every user).
    scopes TEXT NOT NULL,
    groups TEXT NOT NULL,
    created BIGINT NOT NULL,
    expires BIGINT,
    last_used BIGINT
);

-- Security events, newest last; swept after the configured retention.
CREATE TABLE audit_events (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    username TEXT,
    actor TEXT NOT NULL,
    ip TEXT,
    country TEXT,
    app TEXT,
    outcome TEXT NOT NULL,
    details TEXT NOT NULL
);
CREATE INDEX audit_by_time ON audit_events (at);
CREATE INDEX audit_by_user ON audit_events (username, id);

-- Enrolment tickets: one-time links that let a user enrol a factor after
-- the password, without one they lost. Only the SHA-256 of the link's
-- secret is kept.
CREATE TABLE enrolment_tickets (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username TEXT NOT NULL,
    hash BYTEA NOT NULL UNIQUE,
    created BIGINT NOT NULL,
    expires BIGINT NOT NULL,
    used_at BIGINT,
    created_by TEXT NOT NULL
);
CREATE INDEX tickets_by_user ON enrolment_tickets (username);
