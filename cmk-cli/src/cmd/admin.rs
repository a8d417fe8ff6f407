//! `cmk kek`, `cmk rotate-master`, `cmk shred`: key lifecycle operations on one tenant.

use cmk_core::TenantId;
use cmk_core::kms::KeyRef;
use serde_json::json;

use crate::cli::KekCommand;
use crate::cmd::tenant::{admin_context, key_ref, tenant_id};
use crate::exit::{CliError, CliResult, Exit};
use crate::home::Deployment;
use crate::output::print;

pub(crate) async fn kek(d: &Deployment, json: bool, command: KekCommand) -> CliResult {
    match command {
        KekCommand::RollOver { tenant, class } => {
            let tenant = tenant_id(&tenant)?;
            let ctx = admin_context(&tenant);
            let classes: Vec<String> = match class {
                Some(c) => vec![c],
                None => {
                    let config = d.cmk.tenant_config(&ctx).await?;
                    config
                        .policies
                        .keys()
                        .map(|c| c.as_str().to_string())
                        .collect()
                }
            };
            let mut rolled = Vec::new();
            for class in &classes {
                let version = d.cmk.roll_over_kek(&ctx, class).await?;
                rolled.push(json!({ "class": class, "version": version }));
            }
            print(
                json,
                &json!({ "tenant": tenant.as_str(), "rolled_over": rolled }),
                || {
                    let list: Vec<String> = rolled
                        .iter()
                        .map(|r| {
                            format!("{} v{}", r["class"].as_str().unwrap_or("?"), r["version"])
                        })
                        .collect();
                    format!(
                        "tenant {tenant}: new active KEKs {}; `cmk rekey` moves rows onto them",
                        list.join(", ")
                    )
                },
            );
        }
        KekCommand::Retire {
            tenant,
            class,
            version,
        } => kek_state(d, json, &tenant, &class, version, false).await?,
        KekCommand::Destroy {
            tenant,
            class,
            version,
        } => kek_state(d, json, &tenant, &class, version, true).await?,
    }
    Ok(())
}

/// A new local key for `tenant`, named after it and the time.
fn new_local_key(d: &Deployment, tenant: &TenantId) -> CliResult<KeyRef> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(d.kms.create_key(&format!("{tenant}-{now}"))?)
}

/// Retires a KEK version (decrypt-only) or, with `destroy`, destroys a decrypt-only one.
async fn kek_state(
    d: &Deployment,
    json: bool,
    tenant: &str,
    class: &str,
    version: u32,
    destroy: bool,
) -> CliResult {
    let tenant = tenant_id(tenant)?;
    let ctx = admin_context(&tenant);
    let (key, state) = if destroy {
        d.cmk.destroy_kek(&ctx, class, version).await?;
        ("destroyed", "destroyed")
    } else {
        d.cmk.retire_kek(&ctx, class, version).await?;
        ("retired", "decrypt-only")
    };
    print(
        json,
        &json!({ "tenant": tenant.as_str(), "class": class, key: version }),
        || format!("tenant {tenant}: {class} KEK v{version} is {state}"),
    );
    Ok(())
}

pub(crate) async fn rotate_master(
    d: &Deployment,
    json: bool,
    tenant: &str,
    key: Option<String>,
) -> CliResult {
    let tenant = tenant_id(tenant)?;
    let new_key = match key {
        Some(key) => key_ref(&key)?,
        None => new_local_key(d, &tenant)?,
    };
    let report = d
        .cmk
        .rotate_master_key(&admin_context(&tenant), &new_key)
        .await?;
    print(
        json,
        &json!({ "tenant": tenant.as_str(), "master_key": new_key.as_str(),
                 "rewrapped": report.rewrapped, "revision": report.revision }),
        || {
            format!(
                "tenant {tenant}: {} registry entries re-wrapped under {} (configuration revision {}); no row touched",
                report.rewrapped,
                new_key.as_str(),
                report.revision
            )
        },
    );
    Ok(())
}

/// Rotates every configured tenant to a new local key of its own (all the keys are made in
/// one write of the keyring first). A failure stops the run; run it again to rotate the
/// rest (each run rotates every tenant anew: use `--tenant` to finish one).
pub(crate) async fn rotate_all(d: &Deployment, json: bool) -> CliResult {
    let tenants = crate::cmd::tenant::configured(d).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let names: Vec<String> = tenants.iter().map(|t| format!("{t}-{now}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let keys = d.kms.create_keys(&refs)?;
    let mut entries = 0usize;
    for (tenant, new_key) in tenants.iter().zip(&keys) {
        let tenant = tenant_id(tenant)?;
        let report = d
            .cmk
            .rotate_master_key(&admin_context(&tenant), new_key)
            .await?;
        entries += report.rewrapped;
    }
    let count = tenants.len();
    print(
        json,
        &json!({ "tenants": count, "rewrapped": entries }),
        || {
            format!(
                "{count} tenants rotated to new master keys: {entries} registry entries re-wrapped; no row touched"
            )
        },
    );
    Ok(())
}

pub(crate) async fn shred(
    d: &Deployment,
    json: bool,
    tenant: &str,
    confirm: Option<&str>,
) -> CliResult {
    if confirm != Some(tenant) {
        return Err(CliError::new(
            Exit::Usage,
            format!(
                "shredding makes every row of `{tenant}` unreadable for good: repeat the tenant with --confirm {tenant}"
            ),
        ));
    }
    let tenant = tenant_id(tenant)?;
    let report = d.cmk.shred_tenant(&admin_context(&tenant)).await?;
    let destroyed: Vec<&str> = report
        .master_keys_destroyed
        .iter()
        .map(|k| k.as_str())
        .collect();
    let remaining: Vec<&str> = report
        .operator_must_destroy
        .iter()
        .map(|k| k.as_str())
        .collect();
    let backups_hold = remaining.is_empty();
    print(
        json,
        &json!({ "tenant": tenant.as_str(), "versions_destroyed": report.versions_destroyed,
                 "master_keys_destroyed": destroyed, "operator_must_destroy": remaining,
                 "holds_against_backups": backups_hold }),
        || {
            let mut out = format!(
                "tenant {tenant} shredded: {} key versions destroyed; other instances stop within one renewal interval",
                report.versions_destroyed
            );
            if backups_hold {
                out.push_str(&format!(
                    "\nmaster keys destroyed in the KMS ({}): backups taken before the shred are unreadable too",
                    destroyed.join(", ")
                ));
            } else {
                out.push_str(&format!(
                    "\nNOT yet against backups: the KMS kept {}; until the tenant disables or deletes it, a backup from before the shred can still be decrypted",
                    remaining.join(", ")
                ));
            }
            out
        },
    );
    Ok(())
}
