-- Names and last use of authenticator apps, shown on the security page.
ALTER TABLE totp_credentials ADD COLUMN name TEXT NOT NULL DEFAULT 'Authenticator app';
ALTER TABLE totp_credentials ADD COLUMN last_used INTEGER;

-- WebAuthn credentials: security keys and device biometrics. `credential`
-- is webauthn-rs's JSON form of the public key and its state; `counter` is
-- kept beside it so that a use can be claimed with one conditional UPDATE.
CREATE TABLE webauthn_credentials (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL,
    credential_id BLOB NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    credential TEXT NOT NULL,
    counter INTEGER NOT NULL,
    aaguid TEXT,
    discoverable INTEGER NOT NULL,
    created INTEGER NOT NULL,
    last_used INTEGER,
    -- Set when an authenticator presented a counter that went backwards.
    possible_clone_at INTEGER
);
CREATE INDEX webauthn_by_user ON webauthn_credentials (username);

-- Single-use recovery codes, stored as keyed hashes.
CREATE TABLE recovery_codes (
    username TEXT NOT NULL,
    hash BLOB NOT NULL,
    created INTEGER NOT NULL,
    used_at INTEGER,
    PRIMARY KEY (username, hash)
);
