//! A deployment made as the quickstart makes it (the embedded preset, its `patients` model),
//! and the `cmk` binary run against it.

#![allow(dead_code, missing_docs, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use cmk::diesel::ops;
use cmk::embedded::Embedded;
use cmk::{Actor, Encrypted, Policy, RequestContext, SearchMode, TenantConfig, TenantId};
use diesel::connection::SimpleConnection;
use diesel::prelude::*;

diesel::table! {
    use diesel::sql_types::*;
    use cmk::diesel::sql_types::*;
    patients (id) {
        id -> BigInt,
        tenant_id -> Text,
        name -> CiphertextSql,
        email -> CiphertextSql,
        email_bidx -> BlindIndexSql,
        ssn -> Nullable<CiphertextSql>,
        public_keys -> Nullable<KeyColumnSql>,
        private_keys -> Nullable<KeyColumnSql>,
        restricted_keys -> Nullable<KeyColumnSql>,
    }
}

/// The quickstart's model.
#[derive(Debug, Clone, PartialEq, Encrypted)]
#[diesel(table_name = patients)]
#[cmk(tenant = tenant_id, id = id, ids = "app")]
pub struct Patient {
    pub id: i64,
    pub tenant_id: String,
    #[cmk(class = "public")]
    pub name: String,
    #[cmk(class = "private", blind_index(normalize = "casefold"))]
    pub email: String,
    #[cmk(class = "restricted")]
    pub ssn: Option<String>,
}

pub const SCHEMA: &str = "PRAGMA busy_timeout = 5000;
    CREATE TABLE IF NOT EXISTS patients (
    id BIGINT PRIMARY KEY, tenant_id TEXT NOT NULL,
    name BLOB NOT NULL, email BLOB NOT NULL, email_bidx BLOB NOT NULL, ssn BLOB,
    public_keys BLOB, private_keys BLOB, restricted_keys BLOB);";

/// A home directory with `rows` patients of `acme` (ids 1..=rows) and 5 of `globex`.
pub struct Deployment {
    pub dir: tempfile::TempDir,
}

impl Deployment {
    pub async fn new(rows: i64) -> Deployment {
        Self::with_renewal(rows, None).await
    }

    /// As [`Deployment::new`], with every class of `acme` renewed every `renewal_secs`.
    pub async fn with_renewal(rows: i64, renewal_secs: Option<u64>) -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        {
            let embedded = Embedded::open(&home).unwrap();
            let mut conn = conn(&embedded.database_path());
            conn.batch_execute(SCHEMA).unwrap();
            let mut next = 1;
            for (tenant, n) in [("acme", rows), ("globex", 5)] {
                let id = TenantId::new(tenant).unwrap();
                let key = embedded.tenant_key(&id).unwrap();
                let mut config = TenantConfig::new(id.clone(), key.clone())
                    .with_class(
                        "private",
                        Policy::new(key.clone()).with_search(SearchMode::BlindIndex),
                    )
                    .unwrap()
                    .with_class("restricted", Policy::new(key).with_readers(["doctor"]))
                    .unwrap();
                if let (Some(renewal), "acme") = (renewal_secs, tenant) {
                    config = config.with_lease(cmk::LeasePolicy::Leased {
                        hard_expiry_secs: 3600,
                        renewal_secs: renewal,
                        max_uses: None,
                    });
                }
                let admin = RequestContext::new(id.clone());
                embedded.cmk().ensure_tenant(&admin, &config).await.unwrap();
                let ctx = RequestContext::new(id)
                    .with_actor(Actor::User("dr-who".into()))
                    .with_role("doctor");
                let keys = embedded
                    .cmk()
                    .keys_for(&ctx, Patient::CLASSES)
                    .await
                    .unwrap();
                for _ in 0..n {
                    ops::insert(&mut conn, &keys, &patient(next, tenant)).unwrap();
                    next += 1;
                }
            }
            cmk::model::write_manifests(&home.join("manifests"), &[Patient::manifest().unwrap()])
                .unwrap();
        }
        Deployment { dir }
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    pub fn manifest(&self) -> PathBuf {
        self.home().join("manifests/patients.manifest.json")
    }

    pub fn database(&self) -> PathBuf {
        self.home().join("cmk.sqlite3")
    }

    /// `cmk --home HOME args...`.
    pub fn cmk(&self, args: &[&str]) -> Output {
        cmk_in(&self.home(), args)
    }

    /// `cmk --home HOME --json args...`, which must exit with `code`, as JSON.
    pub fn json(&self, args: &[&str], code: i32) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.cmk(&all);
        assert_code(&out, code);
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out)))
    }

    pub fn sql(&self, sql: &str) {
        conn(&self.database()).batch_execute(sql).unwrap();
    }
}

pub fn patient(id: i64, tenant: &str) -> Patient {
    Patient {
        id,
        tenant_id: tenant.into(),
        name: format!("Patient {id}"),
        email: format!("Patient{id}@Example.com"),
        ssn: Some(format!("123-45-{id:04}")),
    }
}

pub fn conn(path: &Path) -> SqliteConnection {
    let mut conn = SqliteConnection::establish(path.to_str().unwrap()).unwrap();
    conn.batch_execute("PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000;")
        .unwrap();
    conn
}

pub fn cmk_in(home: &Path, args: &[&str]) -> Output {
    Command::cargo_bin("cmk")
        .unwrap()
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("CMK_HOME")
        .env_remove("CMK_DATABASE_URL")
        .env_remove("CMK_CONFIG_FILE")
        .env_remove("CMK_KMS_CONFIG")
        .output()
        .unwrap()
}

pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn assert_code(out: &Output, code: i32) {
    assert_eq!(out.status.code(), Some(code), "{}", text(out));
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
