-- What the risk assessment found when the session signed in.
ALTER TABLE sessions ADD COLUMN context TEXT NOT NULL DEFAULT '{}';

-- Browsers a user has completed a second factor on; `trusted_until` is set
-- when they asked to be remembered.
CREATE TABLE known_devices (
    username TEXT NOT NULL,
    device_id TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    trusted_until INTEGER,
    PRIMARY KEY (username, device_id)
);

-- Successful sign-ins, for the new-country and impossible-travel signals.
CREATE TABLE sign_ins (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL,
    at INTEGER NOT NULL,
    ip TEXT NOT NULL,
    country TEXT,
    latitude REAL,
    longitude REAL,
    confidence TEXT NOT NULL,
    signals TEXT NOT NULL
);
CREATE INDEX sign_ins_by_user ON sign_ins (username, at);
