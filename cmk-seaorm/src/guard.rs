//! The save guard: SeaORM has no typed columns, so `ActiveModel { ssn: Set(...), .. }`
//! accepts any bytes and `Column::Ssn.eq("123")` compiles. The guard refuses, in the
//! entity's `ActiveModelBehavior::before_save`, a save that would put anything but cmk's
//! output into a classified column or write a class without its key column:
//!
//! ```rust
//! # mod patient {
//! # use sea_orm::entity::prelude::*;
//! # #[derive(Debug, Clone, PartialEq, cmk::Encrypted)]
//! # #[sea_orm(table_name = "patients")]
//! # #[cmk(tenant = tenant_id)]
//! # pub struct Patient {
//! #     #[sea_orm(primary_key)]
//! #     pub id: i64,
//! #     pub tenant_id: String,
//! #     #[cmk(class = "restricted")]
//! #     pub ssn: Option<String>,
//! # }
//! # #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
//! # pub enum Relation {}
//! #[async_trait::async_trait]
//! impl ActiveModelBehavior for ActiveModel {
//!     async fn before_save<C: ConnectionTrait>(self, _db: &C, insert: bool) -> Result<Self, DbErr> {
//!         cmk_seaorm::guard::<Patient, _>(self, insert)
//!     }
//! }
//! # }
//! ```
//!
//! It checks structure, with or without a key scope (`cmk_core::guard`): every classified
//! column written must parse as a cmk ciphertext recorded by its class's key column, and
//! every key column of a class written must be set and belong to that class. A `Ciphertext`
//! built from arbitrary bytes fails; bytes forged to look like a ciphertext pass it and then
//! fail authentication on every read.
//!
//! What it cannot see: SeaORM runs `before_save` only for `ActiveModel::insert`, `update`
//! and `save`. `Entity::insert_many`, `Entity::update_many`, `Entity::insert(..).exec` and
//! raw SQL bypass every `ActiveModelBehavior`: write sealed rows through this crate's
//! [`crate::ops`] there (which only write what cmk sealed), and in review treat any
//! `update_many().col_expr(...)` on a sealed table as a finding.

use cmk_core::guard::{Written, check_write};
use cmk_core::model::Encrypted;
use sea_orm::{ActiveModelTrait, ActiveValue, DbErr, Value};

use crate::error::Error;
use crate::ops::column;

/// What a save writes to a column, owned.
enum Stored {
    NotSet,
    Null,
    Bytes(Vec<u8>),
}

fn stored(value: ActiveValue<Value>, insert: bool) -> Stored {
    let value = match value {
        ActiveValue::Set(v) => v,
        // An insert writes unchanged values too; an update writes only what was set.
        ActiveValue::Unchanged(v) if insert => v,
        _ => return Stored::NotSet,
    };
    match value {
        Value::Bytes(Some(b)) => Stored::Bytes(b),
        Value::Bytes(None) => Stored::Null,
        // Any other type is not cmk's output; empty bytes fail every parse.
        other if other == other.as_null() => Stored::Null,
        _ => Stored::Bytes(Vec::new()),
    }
}

/// Checks a save of `active` (an `ActiveModel` of `M`'s entity) and returns it unchanged,
/// or refuses it with a `DbErr` whose source is the cmk error. `insert` is the flag
/// `before_save` receives.
///
/// # Errors
/// A `DbErr` whose source is [`crate::Error::Cmk`] with [`cmk_core::Error::InvalidInput`]
/// (recover it with [`crate::cmk_error`]) when the save writes a class without a well-formed
/// key column of that class, or a classified column with anything but a cmk ciphertext that
/// its key column records.
pub fn guard<M, A>(active: A, insert: bool) -> Result<A, DbErr>
where
    M: Encrypted,
    A: ActiveModelTrait,
{
    check::<M, A>(&active, insert).map_err(DbErr::from)?;
    Ok(active)
}

fn check<M: Encrypted, A: ActiveModelTrait>(active: &A, insert: bool) -> Result<(), Error> {
    let schema = M::schema()?;
    let mut written: Vec<(&str, Stored)> = Vec::new();
    let names = schema
        .fields()
        .iter()
        .map(|f| f.column.as_str())
        .chain(M::KEY_COLUMNS.iter().copied());
    for name in names {
        let col = column::<A::Entity>(name)?;
        written.push((name, stored(active.get(col), insert)));
    }
    check_write(schema, M::KEY_COLUMNS, insert, |name| {
        match written.iter().find(|(n, _)| *n == name) {
            Some((_, Stored::Bytes(b))) => Written::Bytes(b),
            Some((_, Stored::Null)) => Written::Null,
            _ => Written::NotSet,
        }
    })?;
    Ok(())
}
