//! `cmk config`: checking every tenant's configuration, and signing a table of the
//! configuration file after a hand edit.

use cmk_core::Error;
use cmk_core::event::{EventName, Outcome, SecurityEvent};
use serde_json::json;

use crate::cli::ConfigCommand;
use crate::cmd::tenant::{admin_context, configured, tenant_id};
use crate::exit::{CliError, CliResult, Exit, classify};
use crate::home::Deployment;
use crate::output::print;

pub(crate) async fn run(d: &Deployment, json: bool, command: ConfigCommand) -> CliResult {
    match command {
        ConfigCommand::Check => check(d, json).await,
        ConfigCommand::Sign { tenant } => sign(d, json, &tenant).await,
    }
}

/// Loads every tenant's configuration as a request would (a refusal is an
/// `ADMIN_INTEGRITY_FAILURE` event) and reports each.
async fn check(d: &Deployment, json: bool) -> CliResult {
    let tenants = configured(d).await?;
    let mut reports = Vec::new();
    let mut worst: Option<Exit> = None;
    for tenant in &tenants {
        let id = tenant_id(tenant)?;
        match d.cmk.tenant_config(&admin_context(&id)).await {
            Ok(config) => reports.push(json!({ "tenant": tenant, "ok": true,
                                               "revision": config.revision })),
            Err(e) => {
                let exit = classify(&e);
                // A forged record outranks an invalid one, which outranks anything else.
                worst = Some(match (worst, exit) {
                    (Some(Exit::TamperedConfig), _) | (_, Exit::TamperedConfig) => {
                        Exit::TamperedConfig
                    }
                    (Some(Exit::MalformedFile), _) | (_, Exit::MalformedFile) => {
                        Exit::MalformedFile
                    }
                    (_, exit) => exit,
                });
                reports.push(json!({ "tenant": tenant, "ok": false, "kind": e.kind(),
                                     "error": e.to_string() }));
            }
        }
    }
    let failed = reports.iter().filter(|r| r["ok"] == false).count();
    print(
        json,
        &json!({ "tenants": reports, "checked": tenants.len(), "failed": failed }),
        || {
            let mut out = format!(
                "{} tenant configurations checked, {failed} refused",
                tenants.len()
            );
            for r in &reports {
                match r["ok"].as_bool() {
                    Some(true) => out.push_str(&format!(
                        "\n  ok       {} (revision {})",
                        r["tenant"].as_str().unwrap_or_default(),
                        r["revision"]
                    )),
                    _ => out.push_str(&format!(
                        "\n  REFUSED  {}",
                        r["error"].as_str().unwrap_or_default()
                    )),
                }
            }
            out
        },
    );
    match worst {
        None => Ok(()),
        Some(exit) => Err(CliError::new(
            exit,
            format!(
                "{failed} of {} tenant configurations refused",
                tenants.len()
            ),
        )),
    }
}

/// Signs a hand-edited table: reads it (every field checked), provisions the keys it names
/// that the registry lacks, then writes its MAC, if it still reads as reviewed.
async fn sign(d: &Deployment, json: bool, tenant: &str) -> CliResult {
    let Some(file) = &d.config_file else {
        return Err(CliError::new(
            Exit::Usage,
            "`config sign` signs a table of the configuration file: name it with --config-file \
             (configurations in the database change through `cmk tenant set-policy`)",
        ));
    };
    let id = tenant_id(tenant)?;
    let ctx = admin_context(&id);
    let config = file.read_edited(&id).map_err(CliError::from)?;
    // Keys before the configuration that names them (the commit point is the signature).
    let report = d.cmk.onboard_config(&ctx, &config).await?;
    let signed = file.sign_edited(&config);
    let outcome = match &signed {
        Ok(()) => Outcome::Success,
        Err(e) => Outcome::Failure {
            error: e.kind().to_string(),
        },
    };
    let _ = d.cmk.sink().emit(SecurityEvent::new(
        &ctx,
        EventName::AdminTenantConfigChanged,
        outcome,
    ));
    signed.map_err(|e| match e {
        Error::Conflict => CliError::new(
            Exit::Failure,
            format!(
                "the table of `{tenant}` changed while it was being signed; run the command again"
            ),
        ),
        Error::ConfigFile { line, .. }
            if matches!(e.underlying(), Error::ConfigRollback { .. }) =>
        {
            CliError::new(
                Exit::Usage,
                format!(
                    "{e}: raise the revision of [tenants.{tenant}] (line {line}) above every \
                     revision signed before, then sign it"
                ),
            )
        }
        e => CliError::from(e),
    })?;
    let classes: Vec<&str> = config.policies.keys().map(|c| c.as_str()).collect();
    print(
        json,
        &json!({ "tenant": tenant, "revision": config.revision, "classes": classes,
                 "entries_written": report.entries_written,
                 "file": file.path().display().to_string() }),
        || {
            format!(
                "tenant {tenant}: revision {} signed in {} (classes {}), {} keys provisioned",
                config.revision,
                file.path().display(),
                classes.join(", "),
                report.entries_written
            )
        },
    );
    Ok(())
}
