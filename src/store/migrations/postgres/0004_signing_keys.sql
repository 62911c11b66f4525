-- The assertion signing keys, sealed, as the JSON the assertion module
-- owns. One row; `version` grows with every write so that instances notice
-- a rotation with a cheap read and two writers cannot both win.
CREATE TABLE signing_keys (
    id SMALLINT PRIMARY KEY CHECK (id = 1),
    keys TEXT NOT NULL,
    version BIGINT NOT NULL
);
