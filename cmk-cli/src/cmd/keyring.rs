//! `cmk keyring`: the local KMS's keys (HOME/keyring.json).

use cmk_core::kms::local::VersionState;
use serde_json::json;

use crate::cli::KeyringCommand;
use crate::exit::{CliError, CliResult, Exit};
use crate::home::{Paths, create_private_dir};
use crate::output::print;

pub(crate) fn run(paths: &Paths, json: bool, command: KeyringCommand) -> CliResult {
    if let KeyringCommand::Init = command {
        create_private_dir(&paths.dir)?;
        let existed = paths.keyring().exists();
        paths.open_keyring()?;
        let verb = if existed { "exists" } else { "created" };
        print(
            json,
            &json!({ "keyring": paths.keyring(), "status": verb }),
            || format!("keyring {}: {verb}", paths.keyring().display()),
        );
        return Ok(());
    }
    if !paths.keyring().exists() {
        return Err(CliError::file(
            &paths.keyring(),
            "no keyring here (`cmk keyring init` creates one; is --home right?)",
        ));
    }
    let kms = paths.open_keyring()?;
    match command {
        KeyringCommand::Init => {}
        KeyringCommand::List => {
            let keys = kms.list()?;
            let listed: Vec<_> = keys
                .iter()
                .map(|k| {
                    let versions: Vec<_> = k
                        .versions
                        .iter()
                        .map(|(v, s)| json!({ "version": v, "state": state(*s) }))
                        .collect();
                    json!({ "name": k.name, "enabled": k.enabled, "primary": k.primary, "versions": versions })
                })
                .collect();
            print(json, &json!({ "keys": listed }), || {
                let mut out = format!("{} keys", keys.len());
                for k in &keys {
                    let live = k
                        .versions
                        .iter()
                        .filter(|(_, s)| *s == VersionState::Active)
                        .count();
                    out.push_str(&format!(
                        "\n  local:{:<30} {:<9} primary v{}, {} of {} versions live",
                        k.name,
                        if k.enabled { "enabled" } else { "DISABLED" },
                        k.primary,
                        live,
                        k.versions.len()
                    ));
                }
                out
            });
        }
        KeyringCommand::Create { name } => {
            let key = kms.create_key(&name)?;
            print(json, &json!({ "created": key.as_str() }), || {
                format!("created {}", key.as_str())
            });
        }
        KeyringCommand::Rotate { name } => {
            let version = kms.rotate(&name)?;
            print(json, &json!({ "key": name, "primary": version }), || {
                format!(
                    "local:{name}: new wraps use version {version}; older versions still unwrap"
                )
            });
        }
        KeyringCommand::Disable { name } => {
            kms.disable(&name)?;
            print(json, &json!({ "key": name, "enabled": false }), || {
                format!("local:{name} disabled: leases end within one renewal interval")
            });
        }
        KeyringCommand::Enable { name } => {
            kms.enable(&name)?;
            print(json, &json!({ "key": name, "enabled": true }), || {
                format!("local:{name} enabled")
            });
        }
        KeyringCommand::Destroy { name, confirm } => {
            if confirm.as_deref() != Some(name.as_str()) {
                return Err(CliError::new(
                    Exit::Usage,
                    format!(
                        "destroying local:{name} loses whatever it wrapped: repeat the name with --confirm {name}"
                    ),
                ));
            }
            kms.destroy(&name)?;
            print(json, &json!({ "key": name, "destroyed": true }), || {
                format!("local:{name} destroyed")
            });
        }
        KeyringCommand::Backup { to } => {
            backup(&paths.keyring(), &to)?;
            print(json, &json!({ "backup": to }), || {
                format!(
                    "keyring copied to {} (mode 0600): keep it as safe as the keys it holds",
                    to.display()
                )
            });
        }
    }
    Ok(())
}

fn state(s: VersionState) -> &'static str {
    match s {
        VersionState::Active => "active",
        VersionState::Destroyed => "destroyed",
        _ => "unknown",
    }
}

/// Copies the keyring to `to`, created new with mode 0600 (never over an existing file).
fn backup(from: &std::path::Path, to: &std::path::Path) -> CliResult {
    use std::io::Write;
    // The keyring holds key material: the copy in memory is wiped when dropped.
    let bytes =
        zeroize::Zeroizing::new(std::fs::read(from).map_err(|e| {
            CliError::new(Exit::Failure, format!("reading {}: {e}", from.display()))
        })?);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let fail =
        |e: std::io::Error| CliError::new(Exit::Failure, format!("writing {}: {e}", to.display()));
    let mut file = options.open(to).map_err(fail)?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(fail)
}
