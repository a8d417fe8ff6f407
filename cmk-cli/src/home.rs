//! The deployment a command works on: the home directory's files (as the embedded preset
//! keeps them), the database, and the cmk service built over them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cmk_core::audit::{JsonLinesFile, Pipeline, PipelineConfig};
use cmk_core::kms::KmsRouter;
use cmk_core::kms::local::LocalKms;
use cmk_core::tenant::{ConfigVerifier, FileConfigStore, OperatorKey, TenantConfigStore};
use cmk_core::{Cmk, CmkSettings};
use cmk_seaorm::{SeaOrmConfigStore, SeaOrmRegistry};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};

use crate::exit::{CliError, CliResult, Exit};

/// This tool's own event file and spool: the spool is one process's (it is locked), and a
/// JSON Lines file is written by one process (docs of `JsonLinesFile`).
pub(crate) const CLI_EVENTS: &str = "cli-events.jsonl";
pub(crate) const CLI_SPOOL: &str = "cli-spool";
/// The application's spool under the embedded preset.
pub(crate) const APP_SPOOL: &str = "spool";
/// The application's event file under the embedded preset.
pub(crate) const APP_EVENTS: &str = "events.jsonl";

/// The home directory's paths.
#[derive(Debug, Clone)]
pub(crate) struct Paths {
    pub(crate) dir: PathBuf,
    /// The TOML file of tenant configurations, when they are kept there rather than in the
    /// database (`--config-file`).
    pub(crate) config_file: Option<PathBuf>,
    /// The providers file named by `--kms-config` (default: HOME/kms.toml if it exists).
    pub(crate) kms_config: Option<PathBuf>,
}

impl Paths {
    pub(crate) fn keyring(&self) -> PathBuf {
        self.dir.join("keyring.json")
    }
    fn operator_key(&self) -> PathBuf {
        self.dir.join("operator.key")
    }
    pub(crate) fn jobs(&self) -> PathBuf {
        self.dir.join("jobs")
    }
    fn database_url(&self, create: bool) -> CliResult<String> {
        let file = self.dir.join("cmk.sqlite3");
        let file = file.to_str().ok_or_else(|| {
            CliError::new(Exit::Usage, format!("{} is not UTF-8", file.display()))
        })?;
        Ok(format!(
            "sqlite://{file}?mode={}",
            if create { "rwc" } else { "rw" }
        ))
    }

    /// The providers the deployment's kms.toml configures, connected.
    pub(crate) async fn providers(
        &self,
    ) -> CliResult<Vec<(crate::providers::ProviderSpec, crate::providers::Provider)>> {
        let Some(file) = crate::providers::file_of(&self.dir, self.kms_config.as_deref()) else {
            return Ok(Vec::new());
        };
        let mut connected = Vec::new();
        for spec in crate::providers::load(&file)? {
            let provider = crate::providers::Provider::connect(&spec).await?;
            connected.push((spec, provider));
        }
        Ok(connected)
    }

    /// The local keyring (created empty if missing).
    pub(crate) fn open_keyring(&self) -> CliResult<LocalKms> {
        LocalKms::open(self.keyring()).map_err(|e| match e {
            cmk_core::Error::InvalidConfig(why) => CliError::file(&self.keyring(), why),
            e => e.into(),
        })
    }
}

/// Creates `dir` readable by its owner only, if missing.
pub(crate) fn create_private_dir(dir: &Path) -> CliResult {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| CliError::new(Exit::Failure, format!("creating {}: {e}", dir.display())))
}

/// Everything a command that touches tenants or tables needs.
pub(crate) struct Deployment {
    pub(crate) paths: Paths,
    pub(crate) db: DatabaseConnection,
    pub(crate) kms: Arc<LocalKms>,
    /// The configuration file, when `--config-file` names one.
    pub(crate) config_file: Option<Arc<FileConfigStore>>,
    pub(crate) registry: Arc<SeaOrmRegistry>,
    pub(crate) cmk: Cmk,
    pipeline: Arc<Pipeline>,
}

impl Deployment {
    /// Opens the deployment in `dir` over `url` (default: HOME/cmk.sqlite3). With `create`
    /// (onboarding), a missing home, operator key, database file or cmk table is created;
    /// otherwise a missing one is an error, so that a mistyped `--home` never makes a new
    /// operator key under which every stored configuration would look forged.
    pub(crate) async fn open(paths: &Paths, url: Option<&str>, create: bool) -> CliResult<Self> {
        let paths = paths.clone();
        let dir = paths.dir.as_path();
        if create {
            create_private_dir(dir)?;
        } else if !dir.is_dir() {
            return Err(CliError::new(
                Exit::Usage,
                format!(
                    "{} is no cmk home (set --home or CMK_HOME; `cmk tenant onboard` creates one)",
                    dir.display()
                ),
            ));
        }
        let operator = if create {
            OperatorKey::load_or_create(&paths.operator_key())
        } else if paths.operator_key().exists() {
            OperatorKey::load(&paths.operator_key())
        } else {
            return Err(CliError::file(
                &paths.operator_key(),
                "missing: is --home the deployment's directory?",
            ));
        }
        .map_err(|e| CliError::file(&paths.operator_key(), e))?;
        let verifier = ConfigVerifier::new(operator)
            .with_floor_file(dir.join("config-floors.json"))
            .map_err(|e| CliError::file(&dir.join("config-floors.json"), e))?;
        let kms = Arc::new(paths.open_keyring()?);
        let url = match url {
            Some(url) => url.to_string(),
            None => paths.database_url(create)?,
        };
        let db = connect(&url).await?;
        ensure_cmk_tables(&db, create).await?;
        let pipeline = Arc::new(
            Pipeline::start(
                PipelineConfig::new(dir.join(CLI_SPOOL)),
                JsonLinesFile::new(dir.join(CLI_EVENTS), 64 << 20, 5),
            )
            .map_err(|e| {
                CliError::new(
                    Exit::Failure,
                    format!("the event spool {}: {e}", dir.join(CLI_SPOOL).display()),
                )
            })?,
        );
        // Where tenant configurations live: the file, or the database's table.
        let (configs, config_file): (Arc<dyn TenantConfigStore>, _) = match &paths.config_file {
            Some(file) => {
                let file = Arc::new(FileConfigStore::new(file, verifier));
                (file.clone(), Some(file))
            }
            None => (Arc::new(SeaOrmConfigStore::new(db.clone(), verifier)), None),
        };
        let registry = Arc::new(SeaOrmRegistry::new(db.clone()));
        let mut router = KmsRouter::new().with(kms.clone());
        for (_, provider) in paths.providers().await? {
            router = router.with(provider.kms);
        }
        let cmk = Cmk::builder()
            .kms(Arc::new(router))
            .registry(registry.clone())
            .configs(configs.clone())
            .sink(pipeline.clone())
            .settings(CmkSettings::default())
            .build()?;
        Ok(Deployment {
            paths,
            db,
            kms,
            config_file,
            registry,
            cmk,
            pipeline,
        })
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        // Events still queued reach the file (or stay spooled for the next command).
        self.pipeline.flush(Duration::from_secs(5));
    }
}

/// Connects, telling an unreachable database from a malformed URL.
async fn connect(url: &str) -> CliResult<DatabaseConnection> {
    let mut options = ConnectOptions::new(url.to_string());
    options
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(10))
        .max_connections(4)
        .sqlx_logging(false)
        // A 64 MiB page cache per SQLite connection: a table pass re-reads fewer pages.
        .map_sqlx_sqlite_opts(|o| o.pragma("cache_size", "-65536"));
    Database::connect(options).await.map_err(|e| {
        // The URL may hold a password: name only its scheme.
        let scheme = url.split(':').next().unwrap_or("?");
        CliError::new(
            Exit::Database,
            format!("cannot open the {scheme} database: {e}"),
        )
    })
}

/// Creates cmk's tables when missing and allowed to.
async fn ensure_cmk_tables(db: &DatabaseConnection, create: bool) -> CliResult {
    let probe = db
        .execute_unprepared("SELECT 1 FROM cmk_tenant_config WHERE 1 = 0")
        .await;
    match probe {
        Ok(_) => Ok(()),
        Err(_) if create => Ok(cmk_seaorm::migration::create_cmk_tables(db).await?),
        Err(e) => Err(CliError::new(
            Exit::Database,
            format!("the database has no cmk tables ({e}); `cmk tenant onboard` creates them"),
        )),
    }
}
