//! Errors a person can act on, each with its exit code (listed in `cmk --help`).

use std::fmt;

use cmk_core::Error;

/// Why a command failed, as its exit code says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Anything else (and `verify` finding a bad row).
    Failure = 1,
    /// A wrong or missing argument.
    Usage = 2,
    UnknownTenant = 3,
    Database = 4,
    Kms = 5,
    MalformedFile = 6,
    TamperedConfig = 7,
    NoKeyColumns = 8,
    Shredded = 9,
    /// Ctrl-C: the job stopped between chunks and kept its checkpoint.
    Interrupted = 130,
}

/// A failed command: its exit code and a message that never holds plaintext or key material
/// (cmk's errors carry kinds, names and ids only).
#[derive(Debug)]
pub(crate) struct CliError {
    pub(crate) exit: Exit,
    pub(crate) message: String,
}

impl CliError {
    pub(crate) fn new(exit: Exit, message: impl Into<String>) -> Self {
        CliError {
            exit,
            message: message.into(),
        }
    }

    /// A malformed file, named.
    pub(crate) fn file(path: &std::path::Path, what: impl fmt::Display) -> Self {
        CliError::new(Exit::MalformedFile, format!("{}: {what}", path.display()))
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The exit code of an error of cmk's.
pub(crate) fn classify(e: &Error) -> Exit {
    // An invalid table of the configuration file is a malformed file; a forged one is not.
    if let (Error::ConfigFile { .. }, Error::InvalidConfig(_) | Error::InvalidName { .. }) =
        (e, e.underlying())
    {
        return Exit::MalformedFile;
    }
    match e.underlying() {
        Error::UnknownTenant { .. } => Exit::UnknownTenant,
        Error::Database(_) | Error::Registry(_) => Exit::Database,
        Error::Kms { .. } => Exit::Kms,
        Error::ConfigIntegrity { .. } | Error::ConfigRollback { .. } => Exit::TamperedConfig,
        Error::TenantShredded { .. } | Error::KeysDestroyed { .. } => Exit::Shredded,
        _ => Exit::Failure,
    }
}

impl From<Error> for CliError {
    fn from(e: Error) -> Self {
        let exit = classify(&e);
        let hint = match exit {
            Exit::TamperedConfig if matches!(e, Error::ConfigFile { .. }) => {
                " (the table changed since cmk signed it, or an older file was put back: if you \
                 edited it, review the change, raise its revision and run `cmk config sign`; \
                 otherwise restore the file from a backup)"
            }
            Exit::TamperedConfig => {
                " (the stored configuration was edited or rolled back outside cmk: restore it \
                 from a backup, or re-apply it with `cmk tenant set-policy`)"
            }
            Exit::Kms => " (is the KMS reachable, and does the key exist and allow this use?)",
            _ => "",
        };
        CliError::new(exit, format!("{e}{hint}"))
    }
}

impl From<sea_orm::DbErr> for CliError {
    fn from(e: sea_orm::DbErr) -> Self {
        CliError::new(Exit::Database, format!("database: {e}"))
    }
}

pub(crate) type CliResult<T = ()> = Result<T, CliError>;
