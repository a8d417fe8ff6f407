//! The adapter's error: cmk's or SeaORM's, each kept whole (never flattened into a string),
//! and convertible into `DbErr` so it can leave SeaORM's own closures and hooks.

use std::sync::Arc;

use sea_orm::DbErr;

/// A failure of a SeaORM operation of cmk.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// cmk refused or failed (tampered data, wrong tenant, revoked key, access denied,
    /// a compare-and-set conflict...).
    #[error(transparent)]
    Cmk(#[from] cmk_core::Error),
    /// The database failed.
    #[error("database: {0}")]
    Db(#[source] DbErr),
    /// One row of a batch failed: a write (`insert_many`) wrote nothing; a read
    /// (`load_all`) returned nothing.
    #[error(
        "{operation}: row {position} {}: {source}",
        if operation.starts_with("insert") { "of the batch failed to seal, nothing was written" } else { "of the result failed to unseal" }
    )]
    Row {
        /// The operation (`insert_many`, `load_all`).
        operation: &'static str,
        /// Position in the input (a write) or in the result (a read), from 0.
        position: usize,
        /// Why.
        #[source]
        source: cmk_core::Error,
    },
}

impl Error {
    /// The cmk error inside, if this is one (also from a row of a batch, or one that
    /// crossed SeaORM inside a `DbErr`).
    pub fn cmk(&self) -> Option<&cmk_core::Error> {
        match self {
            Error::Cmk(e) | Error::Row { source: e, .. } => Some(e),
            Error::Db(_) => None,
        }
    }
}

/// A SeaORM error; one that carries a cmk error (an unseal inside `FromQueryResult`, the
/// save guard, or an `Error` converted to leave a closure) comes back as itself.
impl From<DbErr> for Error {
    fn from(e: DbErr) -> Self {
        if let DbErr::TryIntoErr { source, .. } = &e {
            if let Some(ours) = source.downcast_ref::<Error>() {
                return ours.clone();
            }
            if let Some(cmk) = source.downcast_ref::<cmk_core::Error>() {
                return Error::Cmk(cmk.clone());
            }
        }
        Error::Db(e)
    }
}

/// Into SeaORM's error, with this error as its source: SeaORM's own errors go back
/// unchanged.
impl From<Error> for DbErr {
    fn from(e: Error) -> Self {
        match e {
            Error::Db(d) => d,
            other => DbErr::TryIntoErr {
                from: "cmk",
                into: "SeaORM",
                source: Arc::new(other),
            },
        }
    }
}

/// Folds into cmk's one error type, so `?` works across cmk and SeaORM calls in a function
/// returning `cmk::Result`: cmk's errors come back as themselves (also from a row of a
/// batch), a unique violation as [`cmk_core::Error::UniqueViolation`] (without the
/// database's message, which can name a blind-index value), any other database error as
/// [`cmk_core::Error::Database`] with SeaORM's error as its source.
impl From<Error> for cmk_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Cmk(e) | Error::Row { source: e, .. } => e,
            Error::Db(d) => match d.sql_err() {
                Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => {
                    cmk_core::Error::UniqueViolation {
                        table: None,
                        constraint: None,
                    }
                }
                _ => cmk_core::Error::Database(Arc::new(d)),
            },
        }
    }
}

/// cmk's error out of a SeaORM error of the application's own query (a plaintext model
/// loaded inside a key scope): a cmk error that crossed SeaORM comes back with its identity
/// (`Tampered`, `NoKeyScope`...), anything else folds as [`Error`] does.
pub fn cmk_error(e: DbErr) -> cmk_core::Error {
    Error::from(e).into()
}

/// Result of the SeaORM operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
