DROP TABLE cmk_tenant_config;
DROP TABLE cmk_key_registry;
