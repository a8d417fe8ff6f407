//! Key lifecycle operations: master-key rotation, KEK retirement and destruction, and
//! crypto-shredding. Each is an explicit, audited call; each writes only new registry entries
//! (append-only) and is safe to run again after a crash (insert-if-absent).

use crate::audit::event::EventName;
use crate::error::{Error, Result};
use crate::keys::lease::LeaseKey;
use crate::keys::registry::{InsertOutcome, KeyState, Purpose, RegistryEntry, entry_context};
use crate::kms::KeyRef;
use crate::service::{Cmk, now_secs};
use crate::tenant::context::RequestContext;
use crate::tenant::policy::{Class, LeasePolicy};

/// What a master-key rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RotateReport {
    /// Registry entries re-wrapped under the new master key by this call.
    pub rewrapped: usize,
    /// The configuration revision that now names the new key.
    pub revision: u64,
}

/// What shredding did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShredReport {
    /// Key versions marked destroyed.
    pub versions_destroyed: usize,
    /// Master keys the KMS destroyed.
    pub master_keys_destroyed: Vec<KeyRef>,
    /// Master keys the operator must have the tenant disable or delete: until then a
    /// database backup from before the shred can still be decrypted.
    pub operator_must_destroy: Vec<KeyRef>,
}

/// The body of [`Cmk::rotate_master_key`].
pub(crate) async fn rotate_master_key(
    cmk: &Cmk,
    ctx: &RequestContext,
    new_key: &KeyRef,
) -> Result<RotateReport> {
    let result = rotate_inner(cmk, ctx, new_key).await;
    cmk.emit(ctx, EventName::AdminKeyRotated, &result);
    result
}

async fn rotate_inner(cmk: &Cmk, ctx: &RequestContext, new_key: &KeyRef) -> Result<RotateReport> {
    let tenant = ctx.tenant();
    let view = crate::service::leasing::tenant_view(cmk, tenant, true).await?;
    if view.shredded {
        return Err(Error::TenantShredded {
            tenant: tenant.to_string(),
        });
    }
    // Prove the new key before anything depends on it.
    cmk.prove_key(ctx, new_key).await?;
    let mut entries = Vec::new();
    for v in view.views.iter().filter(|v| v.state != KeyState::Destroyed) {
        let Some(old) = &v.wrapped_by else { continue };
        if &old.cmk_ref == new_key {
            continue;
        }
        let old_context = entry_context(
            v.purpose,
            tenant,
            &v.policy,
            v.kek_id,
            v.version,
            &old.cmk_ref,
        );
        let material = cmk
            .kms
            .unwrap(&old.cmk_ref, &old.wrapped, &old_context)
            .await
            .map_err(|e| cmk.kms_error(ctx, &old.cmk_ref, e))?;
        let new_context = entry_context(v.purpose, tenant, &v.policy, v.kek_id, v.version, new_key);
        let wrapped = cmk
            .kms
            .wrap(new_key, material.expose_secret(), &new_context)
            .await
            .map_err(|e| cmk.kms_error(ctx, new_key, e))?;
        entries.push(RegistryEntry {
            cmk_ref: new_key.clone(),
            wrapped,
            state: KeyState::Active,
            ..old.clone()
        });
    }
    // One commit for the tenant's entries (a store with transactions); then the switch.
    let rewrapped = cmk
        .registry
        .insert_all_if_absent(entries)
        .await?
        .iter()
        .filter(|o| **o == InsertOutcome::Inserted)
        .count();
    let mut config = (*view.config).clone();
    config.revision += 1;
    config.root_key = new_key.clone();
    for policy in config.policies.values_mut() {
        policy.kms_key = new_key.clone();
    }
    cmk.configs.save(&config).await?;
    crate::service::leasing::forget_view(cmk, tenant);
    Ok(RotateReport {
        rewrapped,
        revision: config.revision,
    })
}

/// The body of [`Cmk::roll_over_kek`].
pub(crate) async fn roll_over_kek(cmk: &Cmk, ctx: &RequestContext, class: &str) -> Result<u32> {
    let result = async {
        let tenant = ctx.tenant();
        let view = crate::service::leasing::tenant_view(cmk, tenant, true).await?;
        let class = Class::new(class)?;
        let next = crate::service::leasing::provision_next_kek(cmk, ctx, &view, &class).await?;
        crate::service::leasing::forget_view(cmk, tenant);
        Ok(next)
    }
    .await;
    cmk.emit(ctx, EventName::AdminKekStateChanged, &result);
    result
}

/// The body of [`Cmk::retire_kek`].
pub(crate) async fn retire_kek(
    cmk: &Cmk,
    ctx: &RequestContext,
    class: &str,
    version: u32,
) -> Result<()> {
    let result = retire_inner(cmk, ctx, class, version).await;
    cmk.emit(ctx, EventName::AdminKekStateChanged, &result);
    result
}

async fn retire_inner(cmk: &Cmk, ctx: &RequestContext, class: &str, version: u32) -> Result<()> {
    let tenant = ctx.tenant();
    let view = crate::service::leasing::tenant_view(cmk, tenant, true).await?;
    let class = Class::new(class)?;
    let policy = view.config.policy(&class)?;
    let grace = match policy.lease {
        LeasePolicy::Leased { renewal_secs, .. } => renewal_secs,
        LeasePolicy::None => 0,
    };
    let kek = |v: u32| {
        view.views
            .iter()
            .find(|x| x.purpose == Purpose::Kek && x.policy == class.as_str() && x.version == v)
    };
    let target = kek(version).ok_or_else(|| {
        Error::InvalidInput(format!("class `{class}` has no KEK version {version}"))
    })?;
    if target.state != KeyState::Active {
        return Err(Error::InvalidInput(format!(
            "KEK version {version} of `{class}` is {}",
            target.state.as_str()
        )));
    }
    let newer = view
        .views
        .iter()
        .filter(|x| {
            x.purpose == Purpose::Kek
                && x.policy == class.as_str()
                && x.version > version
                && x.state == KeyState::Active
        })
        .filter_map(|x| x.wrapped_by.as_ref())
        .map(|e| e.created_at)
        .min();
    match newer {
        Some(created) if now_secs().saturating_sub(created) >= grace => {}
        Some(_) => {
            return Err(Error::InvalidInput(format!(
                "the newer KEK of `{class}` is younger than one renewal interval ({grace} s): other instances may still write with version {version}"
            )));
        }
        None => {
            return Err(Error::InvalidInput(format!(
                "roll `{class}` over to a newer KEK version before retiring version {version}"
            )));
        }
    }
    state_entry(
        cmk,
        ctx,
        &class,
        version,
        target.kek_id,
        KeyState::DecryptOnly,
    )
    .await?;
    crate::service::leasing::forget_view(cmk, tenant);
    Ok(())
}

/// The body of [`Cmk::destroy_kek`].
pub(crate) async fn destroy_kek(
    cmk: &Cmk,
    ctx: &RequestContext,
    class: &str,
    version: u32,
) -> Result<()> {
    let result = async {
        let tenant = ctx.tenant();
        let view = crate::service::leasing::tenant_view(cmk, tenant, true).await?;
        let class = Class::new(class)?;
        let target = view
            .views
            .iter()
            .find(|x| {
                x.purpose == Purpose::Kek && x.policy == class.as_str() && x.version == version
            })
            .ok_or_else(|| {
                Error::InvalidInput(format!("class `{class}` has no KEK version {version}"))
            })?;
        if target.state != KeyState::DecryptOnly {
            return Err(Error::InvalidInput(format!(
                "retire KEK version {version} of `{class}` (decrypt-only) before destroying it"
            )));
        }
        state_entry(
            cmk,
            ctx,
            &class,
            version,
            target.kek_id,
            KeyState::Destroyed,
        )
        .await?;
        let key = LeaseKey {
            tenant: tenant.clone(),
            purpose: Purpose::Kek,
            policy: class.to_string(),
            version,
        };
        if let Some(lease) = cmk.leases.remove(&key) {
            lease.revoke("key version destroyed");
        }
        crate::service::leasing::forget_view(cmk, tenant);
        Ok(())
    }
    .await;
    cmk.emit(ctx, EventName::AdminKekStateChanged, &result);
    result
}

async fn state_entry(
    cmk: &Cmk,
    ctx: &RequestContext,
    class: &Class,
    version: u32,
    id: u32,
    state: KeyState,
) -> Result<()> {
    let view = crate::service::leasing::tenant_view(cmk, ctx.tenant(), false).await?;
    let policy = view.config.policy(class)?;
    let entry = RegistryEntry {
        tenant: ctx.tenant().clone(),
        purpose: Purpose::Kek,
        policy: class.to_string(),
        kek_id: id,
        version,
        cmk_ref: policy.kms_key.clone(),
        state,
        wrapped: Vec::new(),
        created_at: now_secs(),
    };
    cmk.registry.insert_if_absent(entry).await?;
    Ok(())
}

/// The body of [`Cmk::shred_tenant`].
pub(crate) async fn shred_tenant(cmk: &Cmk, ctx: &RequestContext) -> Result<ShredReport> {
    let result = shred_inner(cmk, ctx).await;
    cmk.emit(ctx, EventName::AdminTenantShredded, &result);
    result
}

async fn shred_inner(cmk: &Cmk, ctx: &RequestContext) -> Result<ShredReport> {
    let tenant = ctx.tenant();
    let view = crate::service::leasing::tenant_view(cmk, tenant, true).await?;
    let mut versions_destroyed = 0;
    for v in view.views.iter().filter(|v| v.state != KeyState::Destroyed) {
        let cmk_ref = match v.purpose {
            Purpose::Kek => Class::new(&v.policy)
                .ok()
                .and_then(|c| view.config.policies.get(&c).map(|p| p.kms_key.clone()))
                .unwrap_or_else(|| view.config.root_key.clone()),
            _ => view.config.root_key.clone(),
        };
        let entry = RegistryEntry {
            tenant: tenant.clone(),
            purpose: v.purpose,
            policy: v.policy.clone(),
            kek_id: v.kek_id,
            version: v.version,
            cmk_ref,
            state: KeyState::Destroyed,
            wrapped: Vec::new(),
            created_at: now_secs(),
        };
        cmk.registry.insert_if_absent(entry).await?;
        versions_destroyed += 1;
    }
    cmk.registry
        .insert_if_absent(RegistryEntry {
            tenant: tenant.clone(),
            purpose: Purpose::Tombstone,
            policy: String::new(),
            kek_id: 0,
            version: 0,
            cmk_ref: view.config.root_key.clone(),
            state: KeyState::Destroyed,
            wrapped: Vec::new(),
            created_at: now_secs(),
        })
        .await?;
    for lease in cmk
        .leases
        .all()
        .into_iter()
        .filter(|l| &l.key.tenant == tenant)
    {
        cmk.leases.remove(&lease.key);
        lease.revoke("tenant shredded");
    }
    crate::service::leasing::forget_view(cmk, tenant);
    let mut keys: Vec<KeyRef> = view
        .config
        .policies
        .values()
        .map(|p| p.kms_key.clone())
        .collect();
    keys.push(view.config.root_key.clone());
    // Every master key that ever wrapped one of the tenant's entries: after a master-key
    // rotation, a backup from before it holds entries wrapped under the earlier key.
    keys.extend(
        cmk.registry
            .entries(tenant)
            .await?
            .into_iter()
            .filter(|e| e.purpose != Purpose::Tombstone)
            .map(|e| e.cmk_ref),
    );
    keys.sort();
    keys.dedup();
    let mut report = ShredReport {
        versions_destroyed,
        master_keys_destroyed: Vec::new(),
        operator_must_destroy: Vec::new(),
    };
    for key in keys {
        match cmk.kms.destroy_key(&key).await {
            Ok(true) => report.master_keys_destroyed.push(key),
            Ok(false) | Err(_) => report.operator_must_destroy.push(key),
        }
    }
    Ok(report)
}
