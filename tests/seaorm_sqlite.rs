//! A derived model forwarded to SeaORM 2 on SQLite: the sealed type is the entity's `Model`;
//! the plaintext model loads through `into_model` and `find_also_related` inside a task-local
//! key scope; a tampered related row is an error, not a silent `None`.

mod common;

use sea_orm::QueryFilter;

use cmk::{Encrypted, SearchMode};
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, Database, DbBackend, EntityTrait, QueryOrder, Schema,
};

mod patient {
    use cmk::Encrypted;
    use sea_orm::entity::prelude::*;

    #[derive(Debug, Clone, PartialEq, Encrypted)]
    #[sea_orm(table_name = "patients")]
    #[cmk(tenant = tenant_id, id = id, ids = "app")]
    pub struct Patient {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub tenant_id: String,
        #[cmk(class = "private", blind_index(normalize = "casefold"))]
        pub email: String,
        #[cmk(class = "restricted")]
        pub ssn: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(has_many = "super::visit::Entity")]
        Visit,
    }

    impl Related<super::visit::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Visit.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

mod visit {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "visits")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i64,
        pub tenant_id: String,
        pub patient_id: i64,
        pub reason: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {
        #[sea_orm(
            belongs_to = "super::patient::Entity",
            from = "Column::PatientId",
            to = "super::patient::Column::Id"
        )]
        Patient,
    }

    impl Related<super::patient::Entity> for Entity {
        fn to() -> RelationDef {
            Relation::Patient.def()
        }
    }

    impl ActiveModelBehavior for ActiveModel {}
}

use patient::Patient;

#[tokio::test]
async fn plaintext_models_load_through_seaorm_inside_a_task_local_scope() {
    let (cmk, ctx) = common::onboarded(SearchMode::BlindIndex, &[], |_, _| {}).await;
    let keys = cmk.keys_for(&ctx, Patient::CLASSES).await.unwrap();

    let db = Database::connect("sqlite::memory:").await.unwrap();
    let schema = Schema::new(DbBackend::Sqlite);
    db.execute(&schema.create_table_from_entity(patient::Entity))
        .await
        .unwrap();
    db.execute(&schema.create_table_from_entity(visit::Entity))
        .await
        .unwrap();

    let people = [
        Patient {
            id: 1,
            tenant_id: "acme".into(),
            email: "Ann@Example.com".into(),
            ssn: Some("123".into()),
        },
        Patient {
            id: 2,
            tenant_id: "acme".into(),
            email: "bob@example.com".into(),
            ssn: None,
        },
    ];
    for p in &people {
        let sealed: patient::Model = p.seal(&ctx, &keys).unwrap();
        patient::ActiveModel::from(sealed)
            .reset_all()
            .insert(&db)
            .await
            .unwrap();
    }
    let v = visit::Model {
        id: 10,
        tenant_id: "acme".into(),
        patient_id: 1,
        reason: "checkup".into(),
    };
    visit::ActiveModel::from(v.clone())
        .reset_all()
        .insert(&db)
        .await
        .unwrap();

    // Outside a scope: a clear error that keeps cmk's error as its source.
    let err = patient::Entity::find()
        .into_model::<Patient>()
        .all(&db)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no key scope"), "{err}");

    keys.scope_async(async {
        let all = patient::Entity::find()
            .order_by_asc(patient::Column::Id)
            .into_model::<Patient>()
            .all(&db)
            .await
            .unwrap();
        assert_eq!(all, people);
        // By blind index: plaintext in, the key handle's tenant constrained.
        let ann = patient::Entity::find()
            .filter(Patient::by_email(&keys, b" ANN@example.com").unwrap())
            .into_model::<Patient>()
            .one(&db)
            .await
            .unwrap();
        assert_eq!(ann.as_ref(), Some(&people[0]));
        // Another tenant's row with the same index value (copied) is not matched.
        db.execute_unprepared(
            "INSERT INTO patients SELECT 3, 'globex', email, email_bidx, ssn, private_keys, restricted_keys FROM patients WHERE id = 1",
        )
        .await
        .unwrap();
        let matched = patient::Entity::find()
            .filter(Patient::by_email(&keys, b"ann@example.com").unwrap())
            .into_model::<Patient>()
            .all(&db)
            .await
            .unwrap();
        assert_eq!(matched, vec![people[0].clone()]);
        db.execute_unprepared("DELETE FROM patients WHERE id = 3").await.unwrap();
        let joined = visit::Entity::find()
            .find_also_related(patient::Entity)
            .into_model::<visit::Model, Patient>()
            .all(&db)
            .await
            .unwrap();
        assert_eq!(joined, vec![(v.clone(), Some(people[0].clone()))]);
    })
    .await;

    // The related row is tampered with: the joined load fails instead of returning None.
    db.execute_unprepared("UPDATE patients SET email = email || x'00' WHERE id = 1")
        .await
        .unwrap();
    keys.scope_async(async {
        let err = visit::Entity::find()
            .find_also_related(patient::Entity)
            .into_model::<visit::Model, Patient>()
            .all(&db)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("failed authentication"), "{err}");
        // `Checked<Patient>` reports the bad row in place and returns the others.
        let rows = patient::Entity::find()
            .order_by_asc(patient::Column::Id)
            .into_model::<cmk::Checked<Patient>>()
            .all(&db)
            .await
            .unwrap();
        assert!(matches!(rows[0].0, Err(cmk::Error::Tampered)));
        assert_eq!(rows[1].0.as_ref().unwrap(), &people[1]);
    })
    .await;
}
