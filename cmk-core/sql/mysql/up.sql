-- cmk: the key registry and tenant configuration tables (MySQL, MariaDB).
-- Append-only: grant the application INSERT and SELECT only (docs/SECURITY.md).
-- Identifiers are VARBINARY: compared byte for byte (no case- or accent-insensitive
-- collation may merge two tenants), and short enough for one unique index.
CREATE TABLE cmk_key_registry (
    seq BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    tenant_id VARBINARY(255) NOT NULL,
    purpose VARBINARY(32) NOT NULL,
    policy VARBINARY(32) NOT NULL,
    kek_id BIGINT NOT NULL,
    version BIGINT NOT NULL,
    cmk_ref VARBINARY(2048) NOT NULL,
    state VARBINARY(16) NOT NULL,
    wrapped BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE KEY cmk_key_registry_unique (tenant_id, purpose, policy, version, cmk_ref, state)
) ENGINE = InnoDB;
CREATE TABLE cmk_tenant_config (
    tenant_id VARBINARY(255) NOT NULL,
    revision BIGINT NOT NULL,
    content MEDIUMBLOB NOT NULL,
    mac VARBINARY(32) NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, revision)
) ENGINE = InnoDB;
