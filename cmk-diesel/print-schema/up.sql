-- The example application's table, as its own migration creates it.
CREATE TABLE patients (
    id BIGINT PRIMARY KEY NOT NULL,
    tenant_id TEXT NOT NULL,
    email BLOB NOT NULL,
    email_bidx BLOB NOT NULL,
    ssn BLOB,
    private_keys BLOB,
    restricted_keys BLOB
);
