-- Phone numbers and email addresses that one-time codes are sent to, each
-- stored only after the user typed a code sent to it.
CREATE TABLE oob_factors (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL,
    -- `phone` (E.164) or `email`.
    channel TEXT NOT NULL,
    destination TEXT NOT NULL,
    name TEXT NOT NULL,
    created INTEGER NOT NULL,
    last_used INTEGER,
    UNIQUE (username, channel, destination)
);
