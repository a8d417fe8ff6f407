//! The SeaORM save guard: an entity whose `ActiveModelBehavior::before_save` calls
//! `cmk::seaorm::guard` refuses plaintext, arbitrary bytes, a class without its key column
//! and a key column of another class, through `insert`, `update` and `save`, with or without
//! a key scope; cmk's own output passes, and so does an update of unclassified columns only.

mod common;

use cmk::{Encrypted, SearchMode};
use sea_orm::sea_query::ValueType;
use sea_orm::{
    ActiveModelTrait, ActiveValue, ConnectionTrait, Database, DatabaseConnection, DbBackend,
    EntityTrait, Schema, Value,
};

mod account {
    use cmk::Encrypted;
    use sea_orm::entity::prelude::*;

    #[derive(Debug, Clone, PartialEq, Encrypted)]
    #[sea_orm(table_name = "accounts")]
    #[cmk(tenant = tenant_id, id = id, ids = "app")]
    pub(crate) struct Account {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub tenant_id: String,
        pub status: String,
        #[cmk(class = "private")]
        pub email: String,
        #[cmk(class = "restricted")]
        pub ssn: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    #[async_trait::async_trait]
    impl ActiveModelBehavior for ActiveModel {
        async fn before_save<C: ConnectionTrait>(
            self,
            _db: &C,
            insert: bool,
        ) -> Result<Self, DbErr> {
            cmk::seaorm::guard::<Account, _>(self, insert)
        }
    }
}

use account::Account;

async fn setup() -> (
    DatabaseConnection,
    std::sync::Arc<cmk::TenantKeys>,
    cmk::RequestContext,
) {
    let (cmk, ctx) = common::onboarded(SearchMode::None, &[], |_, _| {}).await;
    let keys = cmk.keys_for(&ctx, Account::CLASSES).await.unwrap();
    let db = Database::connect("sqlite::memory:").await.unwrap();
    let schema = Schema::new(DbBackend::Sqlite);
    db.execute(&schema.create_table_from_entity(account::Entity))
        .await
        .unwrap();
    (db, keys, ctx)
}

fn account(id: i64, ssn: Option<&str>) -> Account {
    Account {
        id,
        tenant_id: "acme".into(),
        status: "new".into(),
        email: format!("user{id}@example.com"),
        ssn: ssn.map(str::to_owned),
    }
}

/// A value type built from arbitrary bytes, as `ValueType::try_from` allows.
fn forged<T: ValueType>(bytes: &[u8]) -> T {
    T::try_from(Value::Bytes(Some(bytes.to_vec()))).unwrap()
}

/// The guard's refusal, checked to name the column and never the value.
fn assert_refused(err: sea_orm::DbErr, column: &str, secret: &str) {
    let text = err.to_string();
    assert!(text.contains(&format!("`{column}`")), "{text}");
    assert!(!text.contains(secret), "the error shows a value: {text}");
    let cmk_err = cmk::seaorm::Error::from(err);
    assert!(
        matches!(cmk_err.cmk(), Some(cmk::Error::InvalidInput(_))),
        "{cmk_err:?}"
    );
}

#[tokio::test]
async fn cmk_output_passes_the_guard_with_or_without_a_scope() {
    let (db, keys, _) = setup().await;
    let sealed = account(1, Some("123-45-6789")).seal(&keys).unwrap();
    account::ActiveModel::from(sealed)
        .reset_all()
        .insert(&db)
        .await
        .unwrap();
    let sealed = account(2, None).seal(&keys).unwrap();
    keys.scope_async(|| async {
        account::ActiveModel::from(sealed)
            .reset_all()
            .insert(&db)
            .await
            .unwrap();
    })
    .await;
    // An update of unclassified columns only touches no class.
    let row = account::Entity::find_by_id(1)
        .one(&db)
        .await
        .unwrap()
        .unwrap();
    let mut active = account::ActiveModel::from(row);
    active.status = ActiveValue::Set("active".into());
    active.update(&db).await.unwrap();
    // A whole re-seal (every class with its key column) passes as an update.
    let resealed = Account {
        status: "active".into(),
        ..account(1, Some("999"))
    }
    .seal(&keys)
    .unwrap();
    account::ActiveModel::from(resealed)
        .reset_all()
        .update(&db)
        .await
        .unwrap();
    let all: Vec<Account> = cmk::seaorm::ops::load_all(&db, &keys, account::Entity::find())
        .await
        .unwrap();
    assert_eq!(all[0].ssn.as_deref(), Some("999"));
    assert_eq!(all[0].status, "active");
}

#[tokio::test]
async fn plaintext_and_arbitrary_bytes_are_refused() {
    let (db, keys, _) = setup().await;
    let secret = "Secret-Plaintext-Ssn";
    let good = account(1, Some("1")).seal(&keys).unwrap();

    // Plaintext bytes in a classified column, through a value type built from them.
    let mut bad = good.clone();
    bad.ssn = Some(forged(secret.as_bytes()));
    let err = account::ActiveModel::from(bad)
        .reset_all()
        .insert(&db)
        .await
        .unwrap_err();
    assert_refused(err, "ssn", secret);

    // Bytes with a plausible header but too short, inside a scope: still refused.
    let mut bad = good.clone();
    bad.email = forged(&[1, 0, 1, 2, 3]);
    let err = keys
        .scope_async(|| async {
            account::ActiveModel::from(bad)
                .reset_all()
                .insert(&db)
                .await
                .unwrap_err()
        })
        .await;
    assert_refused(err, "email", secret);

    // A class written without its key column.
    let mut bad = account::ActiveModel::from(good.clone()).reset_all();
    bad.restricted_keys = ActiveValue::Set(None);
    let err = bad.insert(&db).await.unwrap_err();
    assert_refused(err, "restricted_keys", secret);

    // One class's key column in the other's place.
    let mut bad = good.clone();
    bad.restricted_keys = good.private_keys.clone();
    let err = account::ActiveModel::from(bad)
        .reset_all()
        .insert(&db)
        .await
        .unwrap_err();
    assert_refused(err, "restricted_keys", secret);

    // NULL where the key column recorded a value.
    let mut bad = good.clone();
    bad.ssn = None;
    let err = account::ActiveModel::from(bad)
        .reset_all()
        .insert(&db)
        .await
        .unwrap_err();
    assert_refused(err, "ssn", secret);

    // Nothing reached the table.
    assert!(account::Entity::find().all(&db).await.unwrap().is_empty());
}

#[tokio::test]
async fn an_update_must_bring_the_whole_class() {
    let (db, keys, _) = setup().await;
    let good = account(1, Some("1")).seal(&keys).unwrap();
    account::ActiveModel::from(good.clone())
        .reset_all()
        .insert(&db)
        .await
        .unwrap();
    let other = account(1, Some("2")).seal(&keys).unwrap();

    // A new ciphertext without its new key column (sealed under another DEK).
    let mut active = account::ActiveModel::from(good.clone());
    active.ssn = ActiveValue::Set(other.ssn.clone());
    let err = active.update(&db).await.unwrap_err();
    assert_refused(err, "restricted_keys", "never");

    // A new key column without the fields it sealed.
    let mut active = account::ActiveModel::from(good.clone());
    active.private_keys = ActiveValue::Set(other.private_keys.clone());
    let err = active.update(&db).await.unwrap_err();
    assert_refused(err, "email", "never");

    // One class whole, from another write of the row: refused, as the row's key columns
    // must come from one write (the row would never read).
    let mut active = account::ActiveModel::from(good.clone());
    active.ssn = ActiveValue::Set(other.ssn.clone());
    active.restricted_keys = ActiveValue::Set(other.restricted_keys.clone());
    let err = active.update(&db).await.unwrap_err();
    assert_refused(err, "private_keys", "never");

    // Key columns of two writes together: refused.
    let mut active = account::ActiveModel::from(good.clone());
    active.private_keys = ActiveValue::Set(good.private_keys.clone());
    active.email = ActiveValue::Set(good.email.clone());
    active.ssn = ActiveValue::Set(other.ssn.clone());
    active.restricted_keys = ActiveValue::Set(other.restricted_keys.clone());
    let err = active.update(&db).await.unwrap_err();
    assert!(err.to_string().contains("another write"), "{err}");

    // Every class of one write: passes, and the row reads back.
    let mut active = account::ActiveModel::from(other).reset_all();
    active.id = ActiveValue::Unchanged(1);
    active.update(&db).await.unwrap();
    let row: Option<Account> = cmk::seaorm::ops::one(&db, &keys, account::Entity::find_by_id(1))
        .await
        .unwrap();
    assert_eq!(row.unwrap().ssn.as_deref(), Some("2"));
}
