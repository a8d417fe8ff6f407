-- cmk: the key registry and tenant configuration tables (PostgreSQL).
-- Append-only: grant the application INSERT and SELECT only (docs/SECURITY.md).
CREATE TABLE cmk_key_registry (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id TEXT COLLATE "C" NOT NULL,
    purpose TEXT NOT NULL,
    policy TEXT NOT NULL,
    kek_id BIGINT NOT NULL,
    version BIGINT NOT NULL,
    cmk_ref TEXT COLLATE "C" NOT NULL,
    state TEXT NOT NULL,
    wrapped BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (tenant_id, purpose, policy, version, cmk_ref, state)
);
CREATE TABLE cmk_tenant_config (
    tenant_id TEXT COLLATE "C" NOT NULL,
    revision BIGINT NOT NULL,
    content BYTEA NOT NULL,
    mac BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, revision)
);
