CREATE TABLE sessions (
    key BLOB PRIMARY KEY NOT NULL,
    username TEXT NOT NULL,
    factors TEXT NOT NULL,
    created INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    pending_totp BLOB
);
CREATE INDEX sessions_by_user ON sessions (username);

CREATE TABLE totp_credentials (
    username TEXT PRIMARY KEY NOT NULL,
    sealed_secret BLOB NOT NULL,
    algorithm TEXT NOT NULL,
    digits INTEGER NOT NULL,
    period INTEGER NOT NULL,
    created INTEGER NOT NULL,
    last_step INTEGER NOT NULL
);
