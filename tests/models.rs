//! The models real applications have: a single-tenant table (`tenant = "name"`: no tenant
//! column, the tenant still bound into every ciphertext) and lookups kept off a model that
//! has associated items of the same names (`lookups = Name`).
#![allow(missing_docs)] // diesel::table! generates public modules

use std::sync::Arc;

use cmk::diesel::ops;
use cmk::embedded::Embedded;
use cmk::{
    Encrypted, Error, Policy, RequestContext, SearchMode, TenantConfig, TenantId, TenantKeys,
};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

diesel::table! {
    use diesel::sql_types::*;
    use cmk::diesel::sql_types::*;
    members (id) {
        id -> BigInt,
        email -> CiphertextSql,
        email_bidx -> BlindIndexSql,
        private_keys -> Nullable<KeyColumnSql>,
    }
}

/// A single-tenant application's model: no tenant column; its own `by_email` and
/// `email_blind_index` would clash with the derive's, so the lookups go to `MemberLookups`.
#[derive(Debug, Clone, PartialEq, Encrypted)]
#[diesel(table_name = members)]
#[cmk(tenant = "conduit", id = id, ids = "app", lookups = MemberLookups)]
pub struct Member {
    pub id: i64,
    #[cmk(class = "private", blind_index(normalize = "casefold"))]
    pub email: String,
}

impl Member {
    /// The application's own method of the same name as a generated lookup.
    pub fn by_email(&self) -> &str {
        &self.email
    }
    /// And another.
    pub fn email_blind_index(&self) -> usize {
        self.email.len()
    }
}

async fn keys_of(embedded: &Embedded, tenant: &str) -> Arc<TenantKeys> {
    let tenant = TenantId::new(tenant).unwrap();
    let key = embedded.tenant_key(&tenant).unwrap();
    let private = Policy::new(key.clone()).with_search(SearchMode::BlindIndex);
    let config = TenantConfig::new(tenant.clone(), key)
        .with_class("private", private)
        .unwrap();
    let ctx = RequestContext::new(tenant);
    embedded.cmk().ensure_tenant(&ctx, &config).await.unwrap();
    embedded
        .cmk()
        .keys_for(&ctx, Member::CLASSES)
        .await
        .unwrap()
}

fn member(id: i64, email: &str) -> Member {
    Member {
        id,
        email: email.into(),
    }
}

#[tokio::test]
async fn a_single_tenant_table_binds_its_fixed_tenant_and_keeps_lookups_apart() {
    let dir = tempfile::tempdir().unwrap();
    let embedded = Embedded::open(dir.path()).unwrap();
    let conduit = keys_of(&embedded, "conduit").await;
    let acme = keys_of(&embedded, "acme").await;
    let mut conn = SqliteConnection::establish(":memory:").unwrap();
    conn.batch_execute(
        "CREATE TABLE members (id BIGINT PRIMARY KEY, email BLOB NOT NULL,
         email_bidx BLOB NOT NULL, private_keys BLOB)",
    )
    .unwrap();

    ops::insert(&mut conn, &conduit, &member(1, "Ann@Example.com")).unwrap();
    // The generated lookup lives on `MemberLookups`; the model keeps its own methods.
    let by_email =
        members::table.filter(MemberLookups::by_email(&conduit, b"ann@example.com").unwrap());
    let ann: Member = ops::first(&mut conn, &conduit, by_email).unwrap();
    assert_eq!(ann, member(1, "Ann@Example.com"));
    assert_eq!(
        (ann.by_email(), ann.email_blind_index()),
        ("Ann@Example.com", 15)
    );

    // Another tenant's handle can neither write to nor read the table: the fixed tenant is
    // checked on sealing and bound into every ciphertext.
    assert!(matches!(
        member(2, "bob@example.com").seal(&acme),
        Err(Error::TenantMismatch { .. })
    ));
    let stored: SealedMember = members::table.find(1).first(&mut conn).unwrap();
    assert!(matches!(
        Member::unseal(&stored, &acme),
        Err(Error::TenantMismatch { .. })
    ));
    // And the row is bound to its id as ever.
    let mut moved = stored.clone();
    moved.id = 9;
    assert!(matches!(
        Member::unseal(&moved, &conduit),
        Err(Error::Tampered)
    ));
}

mod sea_member {
    use cmk::Encrypted;
    use sea_orm::entity::prelude::*;

    /// The same single-tenant model through SeaORM.
    #[derive(Debug, Clone, PartialEq, Encrypted)]
    #[sea_orm(table_name = "members")]
    #[cmk(tenant = "conduit", id = id, ids = "app", lookups = SeaMemberLookups)]
    pub(crate) struct SeaMember {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        #[cmk(class = "private", blind_index(normalize = "casefold"))]
        pub email: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

#[tokio::test]
async fn a_single_tenant_seaorm_entity_finds_by_blind_index() {
    use sea_orm::{ConnectionTrait, Database, DbBackend, EntityTrait, QueryFilter, Schema};
    let dir = tempfile::tempdir().unwrap();
    let embedded = Embedded::open(dir.path()).unwrap();
    let conduit = keys_of(&embedded, "conduit").await;
    let db = Database::connect("sqlite::memory:").await.unwrap();
    db.execute(&Schema::new(DbBackend::Sqlite).create_table_from_entity(sea_member::Entity))
        .await
        .unwrap();
    let ann = sea_member::SeaMember {
        id: 1,
        email: "Ann@Example.com".into(),
    };
    cmk::seaorm::ops::insert(&db, &conduit, &ann).await.unwrap();
    let condition = sea_member::SeaMemberLookups::by_email(&conduit, b"ANN@example.com").unwrap();
    let found: Option<sea_member::SeaMember> =
        cmk::seaorm::ops::one(&db, &conduit, sea_member::Entity::find().filter(condition))
            .await
            .unwrap();
    assert_eq!(found, Some(ann));
}

/// An id type of another crate, bound through the application's own function: the orphan
/// rule keeps the application from implementing `IntoRowId` for it.
fn ulid_like_row_id(id: &uuid::Uuid) -> cmk::model::RowId {
    cmk::model::RowId::Uuid(*id.as_bytes())
}

#[derive(Debug, Clone, PartialEq, Encrypted)]
#[cmk(table = "tokens", tenant = tenant_id, id = id, ids = "app", row_id = ulid_like_row_id)]
pub struct Token {
    pub id: uuid::Uuid,
    pub tenant_id: String,
    #[cmk(class = "secret")]
    pub value: String,
}

#[tokio::test]
async fn an_id_type_of_another_crate_is_bound_through_the_applications_function() {
    let dir = tempfile::tempdir().unwrap();
    let embedded = Embedded::open(dir.path()).unwrap();
    let keys = keys_of(&embedded, "acme").await;
    let keys = embedded
        .cmk()
        .keys_for(keys.context(), Token::CLASSES)
        .await
        .unwrap();
    let token = Token {
        id: uuid::Uuid::from_u128(7),
        tenant_id: "acme".into(),
        value: "s3cret".into(),
    };
    let sealed = token.seal(&keys).unwrap();
    assert_eq!(Token::unseal(&sealed, &keys).unwrap(), token);
    let mut moved = sealed.clone();
    moved.id = uuid::Uuid::from_u128(8);
    assert!(matches!(Token::unseal(&moved, &keys), Err(Error::Tampered)));
}

diesel::table! {
    use diesel::sql_types::*;
    use cmk::diesel::sql_types::*;
    // print-schema's order, not the struct's, and a column the database fills.
    shuffled (id) {
        private_keys -> Nullable<KeyColumnSql>,
        email_bidx -> BlindIndexSql,
        created_at -> BigInt,
        email -> CiphertextSql,
        tenant_id -> Text,
        id -> BigInt,
    }
}

#[derive(Debug, Clone, PartialEq, Encrypted)]
#[diesel(table_name = shuffled)]
#[cmk(tenant = tenant_id, id = id, ids = "app")]
pub struct Shuffled {
    pub id: i64,
    pub tenant_id: String,
    #[cmk(class = "private", blind_index)]
    pub email: String,
}

#[tokio::test]
async fn column_order_in_table_does_not_matter_to_the_operations() {
    let dir = tempfile::tempdir().unwrap();
    let embedded = Embedded::open(dir.path()).unwrap();
    let keys = keys_of(&embedded, "acme").await;
    let mut conn = SqliteConnection::establish(":memory:").unwrap();
    conn.batch_execute(
        "CREATE TABLE shuffled (private_keys BLOB, email_bidx BLOB NOT NULL,
         created_at BIGINT NOT NULL DEFAULT 1700000000, email BLOB NOT NULL,
         tenant_id TEXT NOT NULL, id BIGINT PRIMARY KEY)",
    )
    .unwrap();
    let row = |id: i64| Shuffled {
        id,
        tenant_id: "acme".into(),
        email: format!("user{id}@example.com"),
    };
    // The insert names its columns; the database fills `created_at`.
    ops::insert_many(&mut conn, &keys, &[row(1), row(2)]).unwrap();
    // The reads select the sealed row's columns by name (`Selectable`), whatever the order.
    let all: Vec<Shuffled> =
        ops::load_all(&mut conn, &keys, shuffled::table.order(shuffled::id)).unwrap();
    assert_eq!(all, [row(1), row(2)]);
    let found: Shuffled = ops::first(
        &mut conn,
        &keys,
        shuffled::table.filter(Shuffled::by_email(&keys, b"user2@example.com").unwrap()),
    )
    .unwrap();
    assert_eq!(found, row(2));
    let changed = ops::update_with(
        &mut conn,
        &keys,
        shuffled::table.find(1),
        |s: &mut Shuffled| s.email = "new@example.com".into(),
    )
    .unwrap();
    assert_eq!(changed.email, "new@example.com");
    // A join selects each side by name too.
    let created: Vec<(i64, Shuffled)> = keys
        .scope(|| {
            shuffled::table
                .order(shuffled::id)
                .select((shuffled::created_at, Shuffled::as_select()))
                .load(&mut conn)
        })
        .unwrap();
    assert_eq!(created[1], (1_700_000_000, row(2)));
}

diesel::table! {
    use diesel::sql_types::*;
    use cmk::diesel::sql_types::*;
    docs (id) {
        id -> BigInt,
        tenant_id -> Text,
        status -> Text,
        title -> CiphertextSql,
        body -> CiphertextSql,
        private_keys -> Nullable<KeyColumnSql>,
        restricted_keys -> Nullable<KeyColumnSql>,
    }
}

/// A document as first written: both fields `private`.
#[derive(Debug, Clone, PartialEq, Encrypted)]
#[diesel(table_name = docs)]
#[cmk(tenant = tenant_id, id = id, ids = "app", sealed = SealedDocV1)]
pub struct DocV1 {
    pub id: i64,
    pub tenant_id: String,
    pub status: String,
    #[cmk(class = "private")]
    pub title: String,
    #[cmk(class = "private")]
    pub body: String,
}

/// The same table after `body` moved to `restricted`.
#[derive(Debug, Clone, PartialEq, Encrypted)]
#[diesel(table_name = docs)]
#[cmk(tenant = tenant_id, id = id, ids = "app", sealed = SealedDocV2)]
pub struct DocV2 {
    pub id: i64,
    pub tenant_id: String,
    pub status: String,
    #[cmk(class = "private")]
    pub title: String,
    #[cmk(class = "restricted")]
    pub body: String,
}

#[tokio::test]
async fn updates_write_plain_fields_and_reseal_rows_whose_layout_changed() {
    let dir = tempfile::tempdir().unwrap();
    let embedded = Embedded::open(dir.path()).unwrap();
    let acme = keys_of(&embedded, "acme").await;
    let keys = embedded
        .cmk()
        .keys_for(acme.context(), DocV2::CLASSES)
        .await
        .unwrap();
    let mut conn = SqliteConnection::establish(":memory:").unwrap();
    conn.batch_execute(
        "CREATE TABLE docs (id BIGINT PRIMARY KEY, tenant_id TEXT NOT NULL, status TEXT NOT NULL,
         title BLOB NOT NULL, body BLOB NOT NULL, private_keys BLOB, restricted_keys BLOB)",
    )
    .unwrap();
    let v1 = |id: i64| DocV1 {
        id,
        tenant_id: "acme".into(),
        status: "draft".into(),
        title: format!("title {id}"),
        body: format!("body {id}"),
    };
    ops::insert_many(&mut conn, &keys, &[v1(1), v1(2), v1(3)]).unwrap();

    // A change of an unclassified field alone is written; the classes keep their DEKs.
    let before: SealedDocV1 = docs::table
        .find(1)
        .select(SealedDocV1::as_select())
        .first(&mut conn)
        .unwrap();
    ops::update_with(&mut conn, &keys, docs::table.find(1), |d: &mut DocV1| {
        d.status = "published".into()
    })
    .unwrap();
    let after: SealedDocV1 = docs::table
        .find(1)
        .select(SealedDocV1::as_select())
        .first(&mut conn)
        .unwrap();
    assert_eq!(after.status, "published");
    assert_eq!(after.private_keys, before.private_keys);

    // After `body` moved to `restricted`, rows written before read through the new model;
    // an update of either field must leave a row that still reads (the stored lists no
    // longer match a fresh seal's, so the whole row is re-sealed).
    ops::update_with(&mut conn, &keys, docs::table.find(2), |d: &mut DocV2| {
        d.title = "new title".into()
    })
    .unwrap();
    ops::update_with(&mut conn, &keys, docs::table.find(3), |d: &mut DocV2| {
        d.body = "new body".into()
    })
    .unwrap();
    let all: Vec<DocV2> = ops::load_all(&mut conn, &keys, docs::table.order(docs::id)).unwrap();
    assert_eq!(
        all.iter()
            .map(|d| (d.title.as_str(), d.body.as_str()))
            .collect::<Vec<_>>(),
        [
            ("title 1", "body 1"),
            ("new title", "body 2"),
            ("title 3", "new body")
        ]
    );
}
