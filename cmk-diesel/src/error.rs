//! The adapter's error: cmk's or Diesel's, convertible both ways so it passes through
//! `conn.transaction(|conn| ...)`.

/// A failure of a one-call operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// cmk refused or failed (tampered data, wrong tenant, revoked key, access denied...).
    #[error(transparent)]
    Cmk(#[from] cmk_core::Error),
    /// The database failed.
    #[error("database: {0}")]
    Diesel(#[source] diesel::result::Error),
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
    /// The cmk error inside, if this is one (also from a row of a batch).
    pub fn cmk(&self) -> Option<&cmk_core::Error> {
        match self {
            Error::Cmk(e) | Error::Row { source: e, .. } => Some(e),
            Error::Diesel(_) => None,
        }
    }
}

/// A Diesel error; a cmk error that crossed Diesel (an unseal inside `Queryable`, or an
/// `Error` converted into Diesel's to leave a transaction closure) comes back as itself.
impl From<diesel::result::Error> for Error {
    fn from(e: diesel::result::Error) -> Self {
        match e {
            diesel::result::Error::DeserializationError(inner) => {
                match inner.downcast::<cmk_core::Error>() {
                    Ok(cmk) => Error::Cmk(*cmk),
                    Err(other) => match other.downcast::<Error>() {
                        Ok(ours) => *ours,
                        Err(other) => {
                            Error::Diesel(diesel::result::Error::DeserializationError(other))
                        }
                    },
                }
            }
            other => Error::Diesel(other),
        }
    }
}

/// Into Diesel's error, so `?` works inside Diesel's own closures; Diesel errors go back
/// unchanged and cmk's travel boxed (and come back out through the conversion above).
impl From<Error> for diesel::result::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Diesel(d) => d,
            other => diesel::result::Error::DeserializationError(Box::new(other)),
        }
    }
}

/// Folds into cmk's one error type, so `?` works across cmk and Diesel calls in a function
/// returning `cmk::Result`: cmk's errors come back as themselves (also from a row of a
/// batch), a unique violation as [`cmk_core::Error::UniqueViolation`] (without the database's
/// message, which can name a blind-index value), any other database error as
/// [`cmk_core::Error::Database`] with Diesel's error as its source.
impl From<Error> for cmk_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Cmk(e) | Error::Row { source: e, .. } => e,
            Error::Diesel(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                info,
            )) => cmk_core::Error::UniqueViolation {
                table: info.table_name().map(str::to_string),
                constraint: info.constraint_name().map(str::to_string),
            },
            Error::Diesel(d) => cmk_core::Error::Database(std::sync::Arc::new(d)),
        }
    }
}

/// cmk's error out of a Diesel error of the application's own query (a plain Diesel load of
/// a derived model inside a key scope): a cmk error that crossed Diesel comes back with its
/// identity (`Tampered`, `AccessDenied`...), anything else folds as [`Error`] does.
pub fn cmk_error(e: diesel::result::Error) -> cmk_core::Error {
    Error::from(e).into()
}

/// Result of the one-call operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
