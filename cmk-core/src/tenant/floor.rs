//! The configuration revision floor kept in a local file, so that it survives restarts without
//! the database's help.
//!
//! A fresh process has seen no configuration revision, so a database writer who puts back an
//! older, validly signed record (fewer readers, no fail-closed audit) would be believed. The
//! floor file holds the highest revision this host verified per tenant, as a JSON object
//! `{"tenant": revision, ...}`; a verifier that has one starts from it and raises it as it
//! verifies newer records. It is written to a temporary file of mode 0600 beside it, synced
//! and renamed into place, merged with what the file holds at that moment (the highest
//! revision wins), so a crash never leaves half a file and two processes on one host never
//! lower each other's floors.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Where a verifier keeps its floors.
#[derive(Debug)]
pub(crate) struct FloorFile {
    path: PathBuf,
}

impl FloorFile {
    pub(crate) fn new(path: PathBuf) -> Self {
        FloorFile { path }
    }

    /// The floors the file holds; none when it does not exist yet.
    ///
    /// # Errors
    /// [`crate::Error::Io`] when it exists and cannot be read;
    /// [`crate::Error::InvalidConfig`] when it does not hold a JSON object of revisions (a
    /// damaged floor is not silently dropped: that would reopen rollbacks).
    pub(crate) fn load(&self) -> crate::Result<HashMap<String, u64>> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
            Err(e) => {
                return Err(crate::Error::io(
                    format!("reading the revision floors {}", self.path.display()),
                    e,
                ));
            }
        };
        serde_json::from_slice(&bytes).map_err(|e| {
            crate::Error::InvalidConfig(format!(
                "the revision floor file {} is damaged ({e}); restore it, or remove it and \
                 set the floors from deployment settings (ConfigVerifier::with_floor)",
                self.path.display()
            ))
        })
    }

    /// Writes `floors`, merged with what the file holds now (highest revision wins).
    ///
    /// # Errors
    /// An I/O error when the file cannot be read, written, synced or renamed.
    pub(crate) fn save(&self, floors: &HashMap<String, u64>) -> std::io::Result<()> {
        let mut merged = self.load().map_err(std::io::Error::other)?;
        for (tenant, revision) in floors {
            let floor = merged.entry(tenant.clone()).or_insert(0);
            *floor = (*floor).max(*revision);
        }
        let json = serde_json::to_vec(&merged).map_err(std::io::Error::other)?;
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let (tmp, mut file) = super::config::temp_file_in(dir, "config-floors")?;
        let written = file
            .write_all(&json)
            .and_then(|()| file.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written?;
        #[cfg(unix)]
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_round_trip_merge_upwards_and_damage_is_an_error() {
        let dir = std::env::temp_dir().join(format!("cmk-floor-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = FloorFile::new(dir.join("floors.json"));
        assert!(file.load().unwrap().is_empty(), "no file: no floors");
        file.save(&HashMap::from([("acme".into(), 7), ("globex".into(), 2)]))
            .unwrap();
        // Another process saves a lower floor for acme: the file keeps the higher one.
        file.save(&HashMap::from([("acme".into(), 3), ("initech".into(), 1)]))
            .unwrap();
        let floors = file.load().unwrap();
        assert_eq!(
            (floors["acme"], floors["globex"], floors["initech"]),
            (7, 2, 1)
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("floors.json"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "owner only");
        }
        std::fs::write(dir.join("floors.json"), b"{\"acme\": ").unwrap();
        let err = file.load().unwrap_err();
        assert!(err.to_string().contains("damaged"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
