//! cmk's own tables as SeaORM entities (the SQL that creates them is `cmk_core::sql`).

/// `cmk_key_registry`: append-only key registry rows.
pub(crate) mod registry {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "cmk_key_registry")]
    pub(crate) struct Model {
        #[sea_orm(primary_key)]
        pub seq: i64,
        pub tenant_id: String,
        pub purpose: String,
        pub policy: String,
        pub kek_id: i64,
        pub version: i64,
        pub cmk_ref: String,
        pub state: String,
        pub wrapped: Vec<u8>,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `cmk_tenant_config`: signed tenant configuration records, one per revision.
pub(crate) mod config {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "cmk_tenant_config")]
    pub(crate) struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        #[sea_orm(primary_key, auto_increment = false)]
        pub revision: i64,
        pub content: Vec<u8>,
        pub mac: Vec<u8>,
        pub created_at: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
