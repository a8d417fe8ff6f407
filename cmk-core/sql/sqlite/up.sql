-- cmk: the key registry and tenant configuration tables (SQLite).
-- Append-only: grant the application INSERT and SELECT only (docs/SECURITY.md).
CREATE TABLE cmk_key_registry (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant_id TEXT NOT NULL,
    purpose TEXT NOT NULL,
    policy TEXT NOT NULL,
    kek_id BIGINT NOT NULL,
    version BIGINT NOT NULL,
    cmk_ref TEXT NOT NULL,
    state TEXT NOT NULL,
    wrapped BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (tenant_id, purpose, policy, version, cmk_ref, state)
);
CREATE TABLE cmk_tenant_config (
    tenant_id TEXT NOT NULL,
    revision BIGINT NOT NULL,
    content BLOB NOT NULL,
    mac BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, revision)
);
