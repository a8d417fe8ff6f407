//! The embedded default in one call: everything cmk needs, kept in one directory.
//!
//! | file | what |
//! |---|---|
//! | `keyring.json` | the local KMS's keyring ([`LocalKms`]): the tenants' master keys |
//! | `operator.key` | the operator key that authenticates stored tenant configurations, created once, mode 0600 |
//! | `config-floors.json` | the highest configuration revision verified per tenant, so a restart refuses one rolled back in the database ([`ConfigVerifier::with_floor_file`]) |
//! | `cmk.sqlite3` | the key registry and tenant configurations (or the application's database: [`Embedded::open_with`]) |
//! | `events.jsonl` | security events as JSON Lines (rotated at 64 MiB, 5 kept), through a spool in `spool/` |
//!
//! Everything survives restarts: a second start finds the same keys, the same operator key
//! and the same registry, so rows written before read again. For a deployment with tenants'
//! own KMSes, build a [`Cmk`] with [`Cmk::builder`] instead.
//!
//! ```no_run
//! # async fn run() -> cmk_core::Result<()> {
//! let embedded = cmk_diesel::embedded::Embedded::open("cmk-data")?;
//! let acme = cmk_core::TenantId::new("acme")?;
//! let master = embedded.tenant_key(&acme)?; // created on first use
//! let config = cmk_core::TenantConfig::new(acme.clone(), master);
//! embedded.cmk().ensure_tenant(&cmk_core::RequestContext::new(acme), &config).await?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cmk_core::audit::{JsonLinesFile, Pipeline, PipelineConfig};
use cmk_core::kms::KeyRef;
use cmk_core::kms::local::LocalKms;
use cmk_core::tenant::{ConfigVerifier, OperatorKey};
use cmk_core::{Cmk, CmkSettings, TenantId};
#[cfg(feature = "sqlite")]
use diesel::{Connection, SqliteConnection, connection::SimpleConnection};

#[cfg(feature = "sqlite")]
use crate::StoreConnection;
use crate::{ConnectionSource, DieselConfigStore, DieselRegistry};

/// The security-event file is rotated at this size; this many rotated files are kept.
const EVENTS_MAX_BYTES: u64 = 64 << 20;
const EVENTS_KEEP: u32 = 5;

/// An embedded cmk deployment kept in one directory (see the [module](self) documentation).
#[derive(Debug)]
pub struct Embedded {
    dir: PathBuf,
    cmk: Cmk,
    kms: Arc<LocalKms>,
    pipeline: Arc<Pipeline>,
}

impl Embedded {
    /// Opens the deployment in `dir`, creating the directory and its files on first use;
    /// the registry and configurations go to `cmk.sqlite3` in it.
    ///
    /// # Errors
    /// The directory or a file cannot be created or read, the operator key file is readable
    /// by others, or the database cannot be opened.
    #[cfg(feature = "sqlite")]
    pub fn open(dir: impl AsRef<Path>) -> cmk_core::Result<Self> {
        let dir = dir.as_ref();
        create_private_dir(dir)?;
        let mut conn = sqlite(&dir.join("cmk.sqlite3"))?;
        conn.create_cmk_tables_if_missing()
            .map_err(|e| cmk_core::Error::Database(Arc::new(e)))?;
        Self::open_with(dir, Arc::new(std::sync::Mutex::new(conn)))
    }

    /// Like [`Embedded::open`], with the registry and configurations in the application's
    /// own database, through `source` (its cmk tables must exist: [`crate::ddl`], or
    /// [`crate::StoreConnection::create_cmk_tables_if_missing`]). Give cmk
    /// a connection or pool of its own, not the one the application holds while it awaits
    /// cmk ([`ConnectionSource`]).
    ///
    /// # Errors
    /// As [`Embedded::open`].
    pub fn open_with<S: ConnectionSource>(
        dir: impl AsRef<Path>,
        source: Arc<S>,
    ) -> cmk_core::Result<Self> {
        let dir = dir.as_ref();
        create_private_dir(dir)?;
        let operator = OperatorKey::load_or_create(&dir.join("operator.key"))?;
        let kms = Arc::new(LocalKms::open(dir.join("keyring.json"))?);
        let pipeline = Arc::new(
            Pipeline::start(
                PipelineConfig::new(dir.join("spool")),
                JsonLinesFile::new(dir.join("events.jsonl"), EVENTS_MAX_BYTES, EVENTS_KEEP),
            )
            .map_err(|e| cmk_core::Error::io("starting the event pipeline", e))?,
        );
        let cmk = Cmk::builder()
            .kms(kms.clone())
            .registry(Arc::new(DieselRegistry::new(Arc::clone(&source))))
            .configs(Arc::new(DieselConfigStore::new(
                source,
                // Revision floors kept beside the operator key: a restart refuses a
                // configuration rolled back in the database (docs/SECURITY.md).
                ConfigVerifier::new(operator).with_floor_file(dir.join("config-floors.json"))?,
            )))
            .sink(pipeline.clone())
            .settings(CmkSettings::default())
            .build()?;
        Ok(Embedded {
            dir: dir.to_path_buf(),
            cmk,
            kms,
            pipeline,
        })
    }

    /// The service.
    pub fn cmk(&self) -> &Cmk {
        &self.cmk
    }

    /// The local KMS (to create, rotate, disable or destroy keys as a tenant would).
    pub fn kms(&self) -> &Arc<LocalKms> {
        &self.kms
    }

    /// The master key of `tenant` in the local keyring (named after the tenant), created on
    /// first use.
    ///
    /// # Errors
    /// The keyring cannot be read or written, or the tenant id is not a valid key name.
    pub fn tenant_key(&self, tenant: &TenantId) -> cmk_core::Result<KeyRef> {
        let name = tenant.as_str();
        if !self.kms.list()?.iter().any(|k| k.name == name) {
            match self.kms.create_key(name) {
                Ok(key) => return Ok(key),
                // Another process created it meanwhile: fall through to its reference.
                Err(_) if self.kms.list()?.iter().any(|k| k.name == name) => {}
                Err(e) => return Err(e),
            }
        }
        KeyRef::new(format!("local:{name}"))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The SQLite file [`Embedded::open`] keeps cmk's tables in; the application may keep
    /// its own tables there too.
    pub fn database_path(&self) -> PathBuf {
        self.dir.join("cmk.sqlite3")
    }

    /// The security-event file.
    pub fn events_path(&self) -> PathBuf {
        self.dir.join("events.jsonl")
    }

    /// The event pipeline (its statistics, or a flush before exiting).
    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        // Events still queued reach the file (or stay spooled for the next start).
        self.pipeline.flush(Duration::from_secs(5));
    }
}

/// Creates `dir` (and its parents) readable by its owner only, if missing.
fn create_private_dir(dir: &Path) -> cmk_core::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| cmk_core::Error::io(format!("creating {}", dir.display()), e))
}

/// A SQLite connection in WAL mode that waits for other writers instead of failing.
#[cfg(feature = "sqlite")]
fn sqlite(path: &Path) -> cmk_core::Result<SqliteConnection> {
    let url = path
        .to_str()
        .ok_or_else(|| cmk_core::Error::InvalidInput(format!("{} is not UTF-8", path.display())))?;
    let mut conn =
        SqliteConnection::establish(url).map_err(|e| cmk_core::Error::Database(Arc::new(e)))?;
    conn.batch_execute("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000;")
        .map_err(|e| cmk_core::Error::Database(Arc::new(e)))?;
    Ok(conn)
}
