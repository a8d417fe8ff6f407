//! Partial reads in one call, through Diesel and SeaORM: classes the handle's actor may not
//! read come back withheld, the rest decrypted; the strict forms refuse.
#![allow(missing_docs)] // diesel::table! generates public modules

mod common;

use cmk::model::Partial;
use cmk::{Actor, Encrypted, Error, Policy, SearchMode};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use sea_orm::{ConnectionTrait, Database, DbBackend, EntityTrait, Schema};

diesel::table! {
    use diesel::sql_types::*;
    use cmk::diesel::sql_types::*;
    charts (id) {
        id -> BigInt,
        tenant_id -> Text,
        name -> CiphertextSql,
        diagnosis -> CiphertextSql,
        private_keys -> Nullable<KeyColumnSql>,
        restricted_keys -> Nullable<KeyColumnSql>,
    }
}

#[derive(Debug, Clone, PartialEq, Encrypted)]
#[diesel(table_name = charts)]
#[cmk(tenant = tenant_id, id = id, ids = "app")]
struct Chart {
    id: i64,
    tenant_id: String,
    #[cmk(class = "private")]
    name: String,
    #[cmk(class = "restricted")]
    diagnosis: String,
}

mod chart_sea {
    use cmk::Encrypted;
    use sea_orm::entity::prelude::*;

    #[derive(Debug, Clone, PartialEq, Encrypted)]
    #[sea_orm(table_name = "charts")]
    #[cmk(tenant = tenant_id, id = id, ids = "app")]
    pub(crate) struct SeaChart {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub tenant_id: String,
        #[cmk(class = "private")]
        pub name: String,
        #[cmk(class = "restricted")]
        pub diagnosis: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `acme` with `restricted` readable by doctors only; keys for a doctor.
async fn doctor_keys() -> std::sync::Arc<cmk::TenantKeys> {
    let (cmk, ctx) = common::onboarded(SearchMode::None, &["doctor"], |cfg, key| {
        cfg.policies.insert(
            cmk::Class::new("restricted").unwrap(),
            Policy::new(key.clone()).with_readers(["doctor"]),
        );
    })
    .await;
    cmk.keys_for(&ctx, Chart::CLASSES).await.unwrap()
}

fn assert_withheld<T: PartialEq + std::fmt::Debug>(
    name: &Partial<T>,
    diagnosis: &Partial<T>,
    want: T,
) {
    assert_eq!(name, &Partial::Revealed(want));
    assert_eq!(diagnosis, &Partial::Withheld);
}

#[tokio::test]
async fn diesel_partial_reads_withhold_what_the_actor_may_not_read() {
    let keys = doctor_keys().await;
    let mut conn = SqliteConnection::establish(":memory:").unwrap();
    conn.batch_execute(
        "CREATE TABLE charts (id BIGINT PRIMARY KEY, tenant_id TEXT NOT NULL, name BLOB NOT NULL,
         diagnosis BLOB NOT NULL, private_keys BLOB, restricted_keys BLOB)",
    )
    .unwrap();
    let chart = |id| Chart {
        id,
        tenant_id: "acme".into(),
        name: format!("patient {id}"),
        diagnosis: "flu".into(),
    };
    cmk::diesel::ops::insert_many(&mut conn, &keys, &[chart(1), chart(2)]).unwrap();
    let clerk = keys.as_actor(Actor::User("clerk".into()), ["clerk"]);

    let views = cmk::diesel::ops::load_partial::<Chart, _, _>(
        &mut conn,
        &clerk,
        charts::table.order(charts::id),
    )
    .unwrap();
    assert_eq!(views.len(), 2);
    for (i, view) in views.into_iter().enumerate() {
        let view = view.unwrap();
        assert_withheld(&view.name, &view.diagnosis, format!("patient {}", i + 1));
    }
    let one =
        cmk::diesel::ops::first_partial::<Chart, _, _>(&mut conn, &clerk, charts::table.find(2))
            .unwrap();
    assert_withheld(&one.name, &one.diagnosis, "patient 2".to_string());
    assert_eq!((one.id, one.tenant_id.as_str()), (2, "acme"));
    // The strict read refuses the clerk, and gives the doctor everything.
    let strict = cmk::diesel::ops::first::<Chart, _, _>(&mut conn, &clerk, charts::table.find(2));
    assert!(matches!(
        strict.map_err(cmk::Error::from),
        Err(Error::AccessDenied { .. })
    ));
    let full: Chart = cmk::diesel::ops::first(&mut conn, &keys, charts::table.find(2)).unwrap();
    assert_eq!(full, chart(2));
}

#[tokio::test]
async fn seaorm_partial_reads_withhold_what_the_actor_may_not_read() {
    let keys = doctor_keys().await;
    let db = Database::connect("sqlite::memory:").await.unwrap();
    db.execute(&Schema::new(DbBackend::Sqlite).create_table_from_entity(chart_sea::Entity))
        .await
        .unwrap();
    let chart = chart_sea::SeaChart {
        id: 1,
        tenant_id: "acme".into(),
        name: "patient 1".into(),
        diagnosis: "flu".into(),
    };
    cmk::seaorm::ops::insert(&db, &keys, &chart).await.unwrap();
    let clerk = keys.as_actor(Actor::User("clerk".into()), ["clerk"]);

    let views = cmk::seaorm::ops::load_partial::<chart_sea::SeaChart, _, _>(
        &db,
        &clerk,
        chart_sea::Entity::find(),
    )
    .await
    .unwrap();
    let view = views.into_iter().next().unwrap().unwrap();
    assert_withheld(&view.name, &view.diagnosis, "patient 1".to_string());
    let one = cmk::seaorm::ops::one_partial::<chart_sea::SeaChart, _, _>(
        &db,
        &clerk,
        chart_sea::Entity::find_by_id(1),
    )
    .await
    .unwrap()
    .unwrap();
    assert_withheld(&one.name, &one.diagnosis, "patient 1".to_string());
    assert_eq!((one.id, one.tenant_id.as_str()), (1, "acme"));
    let strict = cmk::seaorm::ops::one::<chart_sea::SeaChart, _, _>(
        &db,
        &clerk,
        chart_sea::Entity::find_by_id(1),
    )
    .await;
    assert!(matches!(
        strict.map_err(cmk::Error::from),
        Err(Error::AccessDenied { .. })
    ));
}
