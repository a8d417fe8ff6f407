//! One fresh database per test on each backend the build enables.
//!
//! SQLite always (a file in a temporary directory, so a test can dump it). PostgreSQL and
//! MySQL/MariaDB when the features `postgres` and `mysql` are on; then their URLs are
//! required (`CMK_TEST_POSTGRES_URL`, `CMK_TEST_MYSQL_URL`, set by `scripts/test-all`): a
//! build that enables a backend and cannot reach it fails instead of skipping it silently.
#![allow(dead_code)]

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use cmk::diesel::StoreConnection;
use diesel::Connection;
use diesel::connection::SimpleConnection;

/// A database made for one test, dropped with it.
pub(crate) struct TestDb<C> {
    /// Its connection, shareable with the registry and configuration store.
    pub conn: Arc<Mutex<C>>,
    /// How to dump it and drop it.
    place: Place,
}

enum Place {
    Sqlite {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
    },
    Postgres {
        admin_url: String,
        url: String,
        name: String,
    },
    Mysql {
        admin_url: String,
        name: String,
    },
}

impl<C: StoreConnection> TestDb<C> {
    /// The database's URL (a path for SQLite).
    pub(crate) fn url(&self) -> String {
        match &self.place {
            Place::Sqlite { path, .. } => path.to_str().unwrap().to_string(),
            Place::Postgres { url, .. } => url.clone(),
            Place::Mysql { admin_url, name } => {
                let (host, port, user) = mysql_parts(admin_url);
                format!("mysql://{user}@{host}:{port}/{name}")
            }
        }
    }

    /// Another connection to the same database (for concurrent writers).
    pub(crate) fn connect(&self) -> C {
        let mut conn = C::establish(&self.url()).unwrap();
        if matches!(self.place, Place::Sqlite { .. }) {
            conn.batch_execute("PRAGMA busy_timeout = 10000;").unwrap();
        }
        conn
    }

    /// A SeaORM connection (pool) to the same database.
    #[cfg(feature = "seaorm")]
    pub(crate) async fn sea(&self) -> sea_orm::DatabaseConnection {
        let url = match &self.place {
            Place::Sqlite { path, .. } => format!("sqlite://{}?mode=rwc", path.display()),
            _ => self.url(),
        };
        sea_orm::Database::connect(url).await.unwrap()
    }

    /// Runs statements (DDL of the test's own tables).
    pub(crate) fn execute(&self, sql: &str) {
        self.conn.lock().unwrap().batch_execute(sql).unwrap();
    }

    /// Creates cmk's own tables.
    pub(crate) fn with_cmk_tables(self) -> Self {
        self.conn.lock().unwrap().create_cmk_tables().unwrap();
        self
    }

    /// Everything the database holds on disk or in a dump: the SQLite file with its `-wal`,
    /// or the output of `pg_dump` / `mysqldump`.
    pub(crate) fn dump(&self) -> Vec<u8> {
        match &self.place {
            Place::Sqlite { path, .. } => {
                let mut bytes = std::fs::read(path).unwrap();
                let wal = path.with_extension("db-wal");
                if let Ok(more) = std::fs::read(&wal) {
                    bytes.extend_from_slice(&more);
                }
                bytes
            }
            Place::Postgres { url, .. } => run_dump(Command::new("pg_dump").arg(url)),
            Place::Mysql { admin_url, name } => {
                let (host, port, user) = mysql_parts(admin_url);
                run_dump(
                    Command::new("mysqldump")
                        .args(["-h", &host, "-P", &port, "-u", &user])
                        .arg(name),
                )
            }
        }
    }
}

fn run_dump(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().expect("dump tool runs");
    assert!(
        out.status.success(),
        "dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn mysql_parts(url: &str) -> (String, String, String) {
    // mysql://user@host:port[/db]
    let rest = url.trim_start_matches("mysql://");
    let (user, hostport) = rest.split_once('@').unwrap_or(("root", rest));
    let hostport = hostport.split('/').next().unwrap_or("127.0.0.1:3306");
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, "3306"));
    (
        host.to_string(),
        port.to_string(),
        user.split(':').next().unwrap_or("root").to_string(),
    )
}

impl<C> Drop for TestDb<C> {
    fn drop(&mut self) {
        match &self.place {
            Place::Sqlite { .. } => {}
            #[cfg(feature = "postgres")]
            Place::Postgres {
                admin_url, name, ..
            } => {
                if let Ok(mut admin) = diesel::PgConnection::establish(admin_url) {
                    let _ = admin
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
                }
            }
            #[cfg(feature = "mysql")]
            Place::Mysql { admin_url, name } => {
                if let Ok(mut admin) = diesel::MysqlConnection::establish(admin_url) {
                    let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {name}"));
                }
            }
            #[allow(unreachable_patterns)]
            _ => {}
        }
    }
}

fn unique_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "cmk_t{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        nanos
    )
}

/// A SQLite database in a file (WAL journal, as production would run it).
pub(crate) fn sqlite() -> TestDb<diesel::SqliteConnection> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("test.db");
    let mut conn = diesel::SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    conn.batch_execute("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000;")
        .unwrap();
    TestDb {
        conn: Arc::new(Mutex::new(conn)),
        place: Place::Sqlite { _dir: dir, path },
    }
}

fn required(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: this build enables the backend, so its tests must run (scripts/test-all sets it)")
    })
}

/// A fresh PostgreSQL database.
#[cfg(feature = "postgres")]
pub(crate) fn postgres() -> TestDb<diesel::PgConnection> {
    let admin_url = required("CMK_TEST_POSTGRES_URL");
    let name = unique_name();
    let mut admin = diesel::PgConnection::establish(&admin_url).unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let base = admin_url
        .rsplit_once('/')
        .map(|(b, _)| b)
        .unwrap_or(&admin_url);
    let url = format!("{base}/{name}");
    let conn = diesel::PgConnection::establish(&url).unwrap();
    TestDb {
        conn: Arc::new(Mutex::new(conn)),
        place: Place::Postgres {
            admin_url,
            url,
            name,
        },
    }
}

/// A fresh MySQL/MariaDB database.
#[cfg(feature = "mysql")]
pub(crate) fn mysql() -> TestDb<diesel::MysqlConnection> {
    let admin_url = required("CMK_TEST_MYSQL_URL");
    let name = unique_name();
    let mut admin = diesel::MysqlConnection::establish(&admin_url).unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap();
    let (host, port, user) = mysql_parts(&admin_url);
    let url = format!("mysql://{user}@{host}:{port}/{name}");
    let conn = diesel::MysqlConnection::establish(&url).unwrap();
    TestDb {
        conn: Arc::new(Mutex::new(conn)),
        place: Place::Mysql { admin_url, name },
    }
}

/// Defines `#[tokio::test]`s named `<backend>_<name>` that call `$body(db).await` with a
/// fresh database of each enabled backend.
#[macro_export]
macro_rules! on_every_backend {
    ($name:ident, $body:ident, $arg:expr) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body(super::common::db::sqlite(), {
                    use super::*;
                    $arg
                })
                .await
            }
            #[cfg(feature = "postgres")]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$body(super::common::db::postgres(), {
                    use super::*;
                    $arg
                })
                .await
            }
            #[cfg(feature = "mysql")]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mysql() {
                super::$body(super::common::db::mysql(), {
                    use super::*;
                    $arg
                })
                .await
            }
        }
    };
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body(super::common::db::sqlite()).await
            }
            #[cfg(feature = "postgres")]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$body(super::common::db::postgres()).await
            }
            #[cfg(feature = "mysql")]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mysql() {
                super::$body(super::common::db::mysql()).await
            }
        }
    };
}
