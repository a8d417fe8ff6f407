//! Tenant configurations kept in a TOML file beside the database (feature `config-file`).
//!
//! One file holds every tenant, one table each, which an operator can read and review:
//!
//! ```toml
//! [tenants.acme]
//! revision = 3
//! key = "aws:arn:aws:kms:eu-west-1:111122223333:key/1234abcd"  # root key; every class's unless it names one
//! audit_sink = "acme-siem"                                       # optional: the default sink when absent
//! lease = { renewal_secs = 300, hard_expiry_secs = 3600 }      # optional: the tenant's default lease
//! mac = "9f2c..."                                                # written by cmk
//!
//! [tenants.acme.classes.public]
//! [tenants.acme.classes.secret]
//! key = "aws:alias/acme-secret"
//! search = "blind_index"      # none | blind_index | deterministic
//! readers = ["support"]       # roles that may read; none listed: every actor of the tenant
//! audit = "fail_closed"       # best_effort | fail_closed
//! pad_to = 32
//! hide_nulls = true
//! lease = { renewal_secs = 60, hard_expiry_secs = 600, max_uses = 1000 }  # or "none" (classic)
//! ```
//!
//! The file is no more trusted than the database (DESIGN.md §4): each table carries the same
//! MAC as a database record, under the operator key, over the configuration it describes
//! (its canonical JSON, not the TOML text: comments and layout may change, values may not),
//! and the same revision checks through a [`ConfigVerifier`]. A table edited without the
//! operator key, or an older file put back, is refused with an error naming the file, line,
//! tenant and field; the service turns that refusal into an `ADMIN_INTEGRITY_FAILURE` event.
//! An operator who edits a table by hand raises its revision and signs it
//! ([`FileConfigStore::sign_edited`], `cmk config sign`). The file holds no secret: key
//! references name keys, never credentials or PINs.
//!
//! Saves rewrite the tenant's table only (other tables, and their comments, are kept) under an
//! exclusive lock on a sibling lock file, through a temporary file of mode 0600 that is synced
//! and renamed into place; a save whose revision is not above the file's is refused, so two
//! writers never overwrite each other.

mod read;
mod write;

use std::path::{Path, PathBuf};

use toml_edit::{Document, DocumentMut, Item, Table, value};

use crate::Error;
use crate::tenant::config::{ConfigVerifier, SignedTenantConfig, TenantConfig, TenantConfigStore};
use crate::tenant::context::TenantId;
use read::{Locator, ReadTenant};

/// The first lines of a new file.
const PREAMBLE: &str = "\
# Tenant configurations of cmk: one [tenants.<id>] table per tenant (docs/CONFIG.md).
# Each table is signed: after editing one by hand, raise its revision and run
# `cmk config sign --tenant <id>`; an unsigned change is refused.

";

/// A [`TenantConfigStore`] over one TOML file.
#[derive(Debug)]
pub struct FileConfigStore {
    path: PathBuf,
    lock_path: PathBuf,
    verifier: ConfigVerifier,
}

impl FileConfigStore {
    /// A store over the file at `path` (created by the first save), verifying with
    /// `verifier`.
    pub fn new(path: impl Into<PathBuf>, verifier: ConfigVerifier) -> Self {
        let path = path.into();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let lock_path = parent_dir(&path).join(format!(".{name}.lock"));
        FileConfigStore {
            path,
            lock_path,
            verifier,
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tenants the file has a table for, in file order. Nothing is verified.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read; [`Error::ConfigFile`] when it is not
    /// valid TOML or `tenants` is not a table.
    pub fn tenants(&self) -> crate::Result<Vec<String>> {
        let text = self.read_text()?;
        let doc = self.parse(&text)?;
        Ok(match doc.get("tenants").and_then(Item::as_table_like) {
            Some(t) => t.iter().map(|(k, _)| k.to_string()).collect(),
            None => Vec::new(),
        })
    }

    /// Reads the table of `tenant` as an operator edited it, checking every field (the
    /// errors name the field and line) but not the MAC, which an edit breaks: what
    /// [`FileConfigStore::sign_edited`] would sign, for review (and for onboarding the keys a
    /// new class needs before the table is signed).
    ///
    /// # Errors
    /// [`Error::UnknownTenant`] when the file has no table for `tenant`;
    /// [`Error::ConfigFile`] when the table is invalid; [`Error::Io`] when the file cannot be
    /// read.
    pub fn read_edited(&self, tenant: &TenantId) -> crate::Result<TenantConfig> {
        let text = self.read_text()?;
        let doc = self.parse(&text)?;
        Ok(self.read_tenant(&doc, &text, tenant)?.config)
    }

    /// Signs the hand-edited table of `reviewed.tenant` in place, if it still reads as
    /// `reviewed` (from [`FileConfigStore::read_edited`]): only its `mac` changes, the rest of
    /// the file is kept byte for byte. The revision must be above every revision this store's
    /// verifier has seen (a floor file remembers them across restarts).
    ///
    /// Sign only what you have read: whoever can run this with the operator key can make any
    /// edit authentic.
    ///
    /// # Errors
    /// [`Error::UnknownTenant`] when the file has no table for the tenant;
    /// [`Error::ConfigFile`] when the table is invalid or its revision is not above the
    /// floor; [`Error::Conflict`] when it changed since it was reviewed; [`Error::Io`] when
    /// the file cannot be read or written.
    pub fn sign_edited(&self, reviewed: &TenantConfig) -> crate::Result<()> {
        let tenant = &reviewed.tenant;
        let _lock = self.lock()?;
        let text = self.read_text()?;
        let doc = self.parse(&text)?;
        let read = self.read_tenant(&doc, &text, tenant)?;
        if &read.config != reviewed {
            return Err(Error::Conflict);
        }
        let loc = self.locator(&text, tenant.as_str());
        let record = self
            .verifier
            .sign_for_save(&read.config)
            .map_err(|e| loc.at(read.revision_line, "revision", e))?;
        let mut doc = doc.into_mut();
        let table = tenant_table_mut(&mut doc, tenant.as_str())?;
        match table.get_mut("mac") {
            Some(item) if item.is_value() => {
                // Keep the comment after the value, if any.
                let decor = item.as_value().map(|v| v.decor().clone());
                *item = value(crate::hex::encode(&record.mac));
                if let (Some(decor), Some(v)) = (decor, item.as_value_mut()) {
                    *v.decor_mut() = decor;
                }
            }
            _ => {
                table.insert("mac", value(crate::hex::encode(&record.mac)));
            }
        }
        self.write_text(&doc.to_string())
    }

    fn locator<'a>(&'a self, raw: &'a str, tenant: &'a str) -> Locator<'a> {
        Locator {
            path: self.path.to_str().unwrap_or("(configuration file)"),
            raw,
            tenant,
        }
    }

    /// The file's text; empty when it does not exist yet.
    fn read_text(&self) -> crate::Result<String> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(Error::io(format!("reading {}", self.path.display()), e)),
        }
    }

    fn parse<'t>(&self, text: &'t str) -> crate::Result<Document<&'t str>> {
        Document::parse(text).map_err(|e| {
            let loc = self.locator(text, "?");
            // The parser's message only: its rendering quotes the offending line.
            loc.at(
                loc.line(e.span()),
                "(syntax)",
                Error::InvalidConfig(format!("not valid TOML: {}", e.message().trim())),
            )
        })
    }

    /// Reads (without verifying) the table of `tenant`.
    fn read_tenant(
        &self,
        doc: &Document<&str>,
        text: &str,
        tenant: &TenantId,
    ) -> crate::Result<ReadTenant> {
        let item = doc
            .get("tenants")
            .and_then(Item::as_table_like)
            .and_then(|t| t.get(tenant.as_str()))
            .ok_or_else(|| Error::UnknownTenant {
                tenant: tenant.to_string(),
            })?;
        read::tenant(&self.locator(text, tenant.as_str()), item)
    }

    /// An exclusive lock shared by every writer of the file; released on drop.
    fn lock(&self) -> crate::Result<std::fs::File> {
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options
            .open(&self.lock_path)
            .map_err(|e| Error::io(format!("opening {}", self.lock_path.display()), e))?;
        file.lock()
            .map_err(|e| Error::io(format!("locking {}", self.lock_path.display()), e))?;
        Ok(file)
    }

    /// Replaces the file: a new file of mode 0600, synced, renamed into place.
    fn write_text(&self, text: &str) -> crate::Result<()> {
        use std::io::Write;
        let dir = parent_dir(&self.path);
        let stem = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (tmp, mut file) = crate::tenant::config::temp_file_in(dir, &stem)
            .map_err(|e| Error::io(format!("creating a file in {}", dir.display()), e))?;
        let written = file
            .write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(format!("writing {}", self.path.display()), e));
        }
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all(); // best effort: not every filesystem syncs directories
        }
        Ok(())
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The table of `tenant` in an editable document, created (with `tenants`) if missing.
fn tenant_table_mut<'d>(doc: &'d mut DocumentMut, tenant: &str) -> crate::Result<&'d mut Table> {
    let tenants = doc
        .entry("tenants")
        .or_insert_with(|| {
            let mut t = Table::new();
            t.set_implicit(true);
            Item::Table(t)
        })
        .as_table_mut()
        .ok_or_else(|| Error::InvalidConfig("`tenants` must be a table".into()))?;
    tenants
        .entry(tenant)
        .or_insert_with(|| Item::Table(Table::new()))
        .as_table_mut()
        .ok_or_else(|| Error::InvalidConfig(format!("`tenants.{tenant}` must be a table")))
}

#[async_trait::async_trait]
impl TenantConfigStore for FileConfigStore {
    async fn load(&self, tenant: &TenantId) -> crate::Result<TenantConfig> {
        let text = self.read_text()?;
        let doc = self.parse(&text)?;
        let read = self.read_tenant(&doc, &text, tenant)?;
        let loc = self.locator(&text, tenant.as_str());
        let mac = read.mac.ok_or_else(|| {
            loc.at(
                read.header_line,
                "mac",
                Error::ConfigIntegrity {
                    tenant: tenant.to_string(),
                },
            )
        })?;
        let content = serde_json::to_vec(&read.config)
            .map_err(|e| Error::InvalidConfig(format!("serialising configuration: {e}")))?;
        let record = SignedTenantConfig {
            tenant: tenant.to_string(),
            revision: read.config.revision,
            content,
            mac,
        };
        self.verifier
            .verify_loaded(tenant, &record)
            .map_err(|e| match e {
                Error::ConfigRollback { .. } => loc.at(read.revision_line, "revision", e),
                Error::ConfigIntegrity { .. } => loc.at(read.header_line, "mac", e),
                e => loc.at(read.header_line, "(table)", e),
            })
    }

    async fn save(&self, config: &TenantConfig) -> crate::Result<()> {
        let _lock = self.lock()?;
        let text = self.read_text()?;
        let doc = self.parse(&text)?;
        let tenant = config.tenant.as_str();
        // Another writer's newer table is not overwritten (compare-and-set on the revision).
        if let Some(found) = doc
            .get("tenants")
            .and_then(|t| t.get(tenant))
            .and_then(|t| t.get("revision"))
            .and_then(Item::as_integer)
            .and_then(|r| u64::try_from(r).ok())
            .filter(|r| *r >= config.revision)
        {
            return Err(Error::ConfigRollback {
                tenant: tenant.to_string(),
                seen: found,
                offered: config.revision,
            });
        }
        let record = self.verifier.sign_for_save(config)?;
        let table = write::tenant_table(config, &record.mac);
        // What is written must read back as exactly what was signed.
        let rendered = {
            let mut probe = DocumentMut::new();
            *tenant_table_mut(&mut probe, tenant)? = table.clone();
            probe.to_string()
        };
        let probe_doc = Document::parse(rendered.as_str()).map_err(|e| {
            Error::InvalidConfig(format!("rendering configuration: {}", e.message()))
        })?;
        let again = self.read_tenant(&probe_doc, &rendered, &config.tenant)?;
        if &again.config != config {
            return Err(Error::InvalidConfig(format!(
                "the configuration of `{tenant}` cannot be written to the file exactly"
            )));
        }
        let mut doc = doc.into_mut();
        let slot = tenant_table_mut(&mut doc, tenant)?;
        // Keep the comment above the tenant's header.
        let decor = slot.decor().clone();
        *slot = table;
        *slot.decor_mut() = decor;
        let preamble = if text.trim().is_empty() { PREAMBLE } else { "" };
        self.write_text(&format!("{preamble}{doc}"))
    }
}

#[cfg(test)]
mod tests;
