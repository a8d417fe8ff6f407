//! `cmk tenant`: onboarding, configuration, policies.

use std::collections::BTreeSet;

use cmk_core::kms::KeyRef;
use cmk_core::registry::KeyRegistry;
use cmk_core::{
    AuditMode, Class, LeasePolicy, Policy, RequestContext, SearchMode, TenantConfig, TenantId,
};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::json;

use crate::cli::{Audit, Search, SetPolicy, TenantCommand};
use crate::exit::{CliError, CliResult, Exit};
use crate::home::Deployment;
use crate::output::print;

pub(crate) async fn run(d: &Deployment, json: bool, command: TenantCommand) -> CliResult {
    match command {
        TenantCommand::Onboard { tenant, key } => onboard(d, json, &tenant, key).await,
        TenantCommand::Show { tenant } => show(d, json, &tenant).await,
        TenantCommand::List => list(d, json).await,
        TenantCommand::SetPolicy(args) => set_policy(d, json, args).await,
    }
}

pub(crate) fn tenant_id(tenant: &str) -> CliResult<TenantId> {
    TenantId::new(tenant).map_err(|e| CliError::new(Exit::Usage, e.to_string()))
}

pub(crate) fn key_ref(key: &str) -> CliResult<KeyRef> {
    KeyRef::new(key).map_err(|e| CliError::new(Exit::Usage, e.to_string()))
}

/// The administrator's context for `tenant`'s events.
pub(crate) fn admin_context(tenant: &TenantId) -> RequestContext {
    RequestContext::new(tenant.clone())
        .with_actor(cmk_core::Actor::Service("cmk-cli".into()))
        .with_source("cmk-cli")
}

/// The local key named after the tenant, created if missing.
fn local_key_of(d: &Deployment, tenant: &TenantId) -> CliResult<KeyRef> {
    let name = tenant.as_str();
    if !d.kms.list()?.iter().any(|k| k.name == name) {
        d.kms.create_key(name)?;
    }
    key_ref(&format!("local:{name}"))
}

async fn onboard(d: &Deployment, json: bool, tenant: &str, key: Option<String>) -> CliResult {
    let tenant = tenant_id(tenant)?;
    let ctx = admin_context(&tenant);
    let (configured, report) = match d.cmk.tenant_config(&ctx).await {
        Ok(_) => (false, d.cmk.onboard(&ctx).await?),
        Err(cmk_core::Error::UnknownTenant { .. }) => {
            let key = match key {
                Some(key) => key_ref(&key)?,
                None => local_key_of(d, &tenant)?,
            };
            // Keys first, the configuration last: never a tenant configured without keys.
            let config = TenantConfig::new(tenant.clone(), key);
            (true, d.cmk.configure_and_onboard(&ctx, &config).await?)
        }
        Err(e) => return Err(e.into()),
    };
    let proven: Vec<&str> = report.proven_keys.iter().map(KeyRef::as_str).collect();
    print(
        json,
        &json!({ "tenant": tenant.as_str(), "configured": configured,
                 "proven_keys": proven, "entries_written": report.entries_written }),
        || {
            format!(
                "tenant {tenant}: {}master keys proven by a round trip ({}), {} keys provisioned",
                if configured { "configured; " } else { "" },
                proven.join(", "),
                report.entries_written
            )
        },
    );
    Ok(())
}

async fn show(d: &Deployment, json: bool, tenant: &str) -> CliResult {
    let tenant = tenant_id(tenant)?;
    let config = d.cmk.tenant_config(&admin_context(&tenant)).await?;
    let entries = d.registry.entries(&tenant).await?;
    // Versions and states only: the wrapped material stays in the registry.
    let keys: Vec<_> = entries
        .iter()
        .map(|e| {
            json!({ "purpose": e.purpose.as_str(), "class": e.policy, "version": e.version,
                    "state": e.state.as_str(), "master_key": e.cmk_ref.as_str() })
        })
        .collect();
    let config_json =
        serde_json::to_value(&config).map_err(|e| CliError::new(Exit::Failure, e.to_string()))?;
    print(
        json,
        &json!({ "tenant": tenant.as_str(), "config": config_json, "keys": keys }),
        || {
            let mut out = format!(
                "tenant {tenant}, configuration revision {}, root key {}",
                config.revision,
                config.root_key.as_str()
            );
            for (class, p) in &config.policies {
                let readers: Vec<&str> = p.readers.iter().map(String::as_str).collect();
                out.push_str(&format!(
                    "\n  class {:<12} key {}, search {:?}, readers {}, audit {:?}, lease {}",
                    class.as_str(),
                    p.kms_key.as_str(),
                    p.search,
                    if readers.is_empty() {
                        "any".into()
                    } else {
                        readers.join(",")
                    },
                    p.audit,
                    lease_text(&p.lease)
                ));
            }
            for e in &entries {
                out.push_str(&format!(
                    "\n  key {:<18} {:<12} v{:<3} {:<12} under {}",
                    e.purpose.as_str(),
                    e.policy,
                    e.version,
                    e.state.as_str(),
                    e.cmk_ref.as_str()
                ));
            }
            out
        },
    );
    Ok(())
}

fn lease_text(lease: &LeasePolicy) -> String {
    match (lease.renewal(), lease.hard_expiry()) {
        (Some(r), Some(h)) => format!("renew {} s, expire {} s", r.as_secs(), h.as_secs()),
        _ => "none (classic)".into(),
    }
}

async fn list(d: &Deployment, json: bool) -> CliResult {
    let tenants = configured(d).await?;
    print(json, &json!({ "tenants": tenants }), || {
        format!("{} tenants\n{}", tenants.len(), tenants.join("\n"))
    });
    Ok(())
}

/// Every tenant with a stored configuration, in order.
pub(crate) async fn configured(d: &Deployment) -> CliResult<Vec<String>> {
    if let Some(file) = &d.config_file {
        let mut tenants = file.tenants()?;
        tenants.sort();
        return Ok(tenants);
    }
    let rows =
        d.db.query_all_raw(Statement::from_string(
            d.db.get_database_backend(),
            "SELECT DISTINCT tenant_id FROM cmk_tenant_config ORDER BY tenant_id",
        ))
        .await?;
    // Text, or bytes where the column is binary (MySQL keeps tenant ids in VARBINARY).
    let tenants: Vec<String> = rows
        .iter()
        .map(|r| {
            r.try_get_by_index::<String>(0).or_else(|_| {
                r.try_get_by_index::<Vec<u8>>(0)
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(tenants)
}

async fn set_policy(d: &Deployment, json: bool, args: SetPolicy) -> CliResult {
    let tenant = tenant_id(&args.tenant)?;
    let class =
        Class::new(args.class.clone()).map_err(|e| CliError::new(Exit::Usage, e.to_string()))?;
    let ctx = admin_context(&tenant);
    let mut config = d.cmk.tenant_config(&ctx).await?;
    let mut policy = match config.policies.get(&class) {
        Some(p) => p.clone(),
        None => Policy::new(config.root_key.clone()),
    };
    if let Some(key) = &args.key {
        policy.kms_key = key_ref(key)?;
    }
    if let Some(search) = args.search {
        policy.search = match search {
            Search::None => SearchMode::None,
            Search::BlindIndex => SearchMode::BlindIndex,
            Search::Deterministic => SearchMode::Deterministic,
        };
    }
    if let Some(readers) = args.readers {
        policy.readers = readers
            .into_iter()
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
            .collect::<BTreeSet<_>>();
    }
    if let Some(audit) = args.audit {
        policy.audit = match audit {
            Audit::BestEffort => AuditMode::BestEffort,
            Audit::FailClosed => AuditMode::FailClosed,
        };
    }
    if args.renewal_secs.is_some() || args.hard_expiry_secs.is_some() {
        let (renewal, hard, max_uses) = match policy.lease {
            LeasePolicy::Leased {
                renewal_secs,
                hard_expiry_secs,
                max_uses,
            } => (renewal_secs, hard_expiry_secs, max_uses),
            _ => (1200, 3600, None),
        };
        policy.lease = LeasePolicy::Leased {
            renewal_secs: args.renewal_secs.unwrap_or(renewal),
            hard_expiry_secs: args.hard_expiry_secs.unwrap_or(hard),
            max_uses,
        };
    }
    if let Some(pad) = args.pad_to {
        policy.pad_to = pad;
    }
    config.policies.insert(class.clone(), policy);
    config.revision += 1;
    config
        .validate()
        .map_err(|e| CliError::new(Exit::Usage, e.to_string()))?;
    // A new class, or a new master key for one, has its keys provisioned before the
    // configuration naming them is saved.
    let report = d.cmk.configure_and_onboard(&ctx, &config).await?;
    print(
        json,
        &json!({ "tenant": tenant.as_str(), "class": class.as_str(), "revision": config.revision,
                 "entries_written": report.entries_written }),
        || {
            format!(
                "tenant {tenant}: class {} set (configuration revision {}), {} keys provisioned",
                class.as_str(),
                config.revision,
                report.entries_written
            )
        },
    );
    Ok(())
}
