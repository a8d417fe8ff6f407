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
pub struct RotateReport {
    /// Registry entries re-wrapped under the new master key by this call.
    pub rewrapped: usize,
    /// The configuration revision that now names the new key.
    pub revision: u64,
}

/// What shredding did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShredReport {
    /// Key versions marked destroyed.
    pub versions_destroyed: usize,
    /// Master keys the KMS destroyed.
    pub master_keys_destroyed: Vec<KeyRef>,
    /// Master keys the operator must have the tenant disable or delete: until then a
    /// database backup from before the shred can still be decrypted.
    pub operator_must_destroy: Vec<KeyRef>,
}

impl Cmk {
    /// Re-wraps every live registry entry of the context's tenant under `new_key`, then
    /// switches the tenant configuration to it. O(registry entries), not O(rows): rows are
    /// untouched. Resumable: entries already re-wrapped are skipped. `new_key` is another key
    /// reference (another key, or another KMS); a KMS's own rotation of a key's backing
    /// version (AWS automatic rotation, `LocalKms::rotate`) needs no re-wrap, since the KMS
    /// still decrypts under earlier versions.
    pub async fn rotate_master_key(
        &self,
        ctx: &RequestContext,
        new_key: &KeyRef,
    ) -> Result<RotateReport> {
        let result = self.rotate_inner(ctx, new_key).await;
        self.emit(ctx, EventName::AdminKeyRotated, &result);
        result
    }

    async fn rotate_inner(&self, ctx: &RequestContext, new_key: &KeyRef) -> Result<RotateReport> {
        let tenant = ctx.tenant();
        let view = self.tenant_view(tenant, true).await?;
        if view.shredded {
            return Err(Error::TenantShredded {
                tenant: tenant.to_string(),
            });
        }
        // Prove the new key before anything depends on it.
        self.prove_key(ctx, new_key).await?;
        let mut rewrapped = 0;
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
            let material = self
                .kms
                .unwrap(&old.cmk_ref, &old.wrapped, &old_context)
                .await
                .map_err(|e| self.kms_error(ctx, &old.cmk_ref, e))?;
            let new_context =
                entry_context(v.purpose, tenant, &v.policy, v.kek_id, v.version, new_key);
            let wrapped = self
                .kms
                .wrap(new_key, material.expose_secret(), &new_context)
                .await
                .map_err(|e| self.kms_error(ctx, new_key, e))?;
            let entry = RegistryEntry {
                cmk_ref: new_key.clone(),
                wrapped,
                state: KeyState::Active,
                ..old.clone()
            };
            if self.registry.insert_if_absent(entry).await? == InsertOutcome::Inserted {
                rewrapped += 1;
            }
        }
        let mut config = (*view.config).clone();
        config.revision += 1;
        config.root_key = new_key.clone();
        for policy in config.policies.values_mut() {
            policy.kms_key = new_key.clone();
        }
        self.configs.save(&config).await?;
        self.forget_view(tenant);
        Ok(RotateReport {
            rewrapped,
            revision: config.revision,
        })
    }

    /// Rolls `class` over to a new KEK version now (keys_for also does this by age and wrap
    /// count). Returns the new version; when another instance rolled over at the same time,
    /// its version stands (insert-if-absent) and is returned.
    pub async fn roll_over_kek(&self, ctx: &RequestContext, class: &str) -> Result<u32> {
        let result = async {
            let tenant = ctx.tenant();
            let view = self.tenant_view(tenant, true).await?;
            let class = Class::new(class)?;
            let next = self.provision_next_kek(ctx, &view, &class).await?;
            self.forget_view(tenant);
            Ok(next)
        }
        .await;
        self.emit(ctx, EventName::AdminKekStateChanged, &result);
        result
    }

    /// Moves KEK `version` of `class` from active to decrypt-only. Refused unless a newer
    /// active version has existed for at least one renewal interval, so no instance still
    /// writes with the old one.
    pub async fn retire_kek(&self, ctx: &RequestContext, class: &str, version: u32) -> Result<()> {
        let result = self.retire_inner(ctx, class, version).await;
        self.emit(ctx, EventName::AdminKekStateChanged, &result);
        result
    }

    async fn retire_inner(&self, ctx: &RequestContext, class: &str, version: u32) -> Result<()> {
        let tenant = ctx.tenant();
        let view = self.tenant_view(tenant, true).await?;
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
        self.state_entry(ctx, &class, version, target.kek_id, KeyState::DecryptOnly)
            .await?;
        self.forget_view(tenant);
        Ok(())
    }

    /// Destroys a decrypt-only KEK version: rows still under it become unreadable, so re-wrap
    /// their key columns first ([`TenantKeys::rekey_key_column`]; the adapters' retirement jobs
    /// find them by the key column's prefix).
    pub async fn destroy_kek(&self, ctx: &RequestContext, class: &str, version: u32) -> Result<()> {
        let result = async {
            let tenant = ctx.tenant();
            let view = self.tenant_view(tenant, true).await?;
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
            self.state_entry(ctx, &class, version, target.kek_id, KeyState::Destroyed)
                .await?;
            let key = LeaseKey {
                tenant: tenant.clone(),
                purpose: Purpose::Kek,
                policy: class.to_string(),
                version,
            };
            if let Some(lease) = self.leases.remove(&key) {
                lease.revoke("key version destroyed");
            }
            self.forget_view(tenant);
            Ok(())
        }
        .await;
        self.emit(ctx, EventName::AdminKekStateChanged, &result);
        result
    }

    async fn state_entry(
        &self,
        ctx: &RequestContext,
        class: &Class,
        version: u32,
        id: u32,
        state: KeyState,
    ) -> Result<()> {
        let view = self.tenant_view(ctx.tenant(), false).await?;
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
        self.registry.insert_if_absent(entry).await?;
        Ok(())
    }

    /// Crypto-shreds the context's tenant: every key version is marked destroyed, a tombstone
    /// is written (every renewal checks it, so other instances stop within one renewal
    /// interval), this process's leases are wiped, and the tenant's master keys are destroyed
    /// where the KMS allows it. Where it does not, the report names the keys the tenant must
    /// disable or delete: a backup taken before the shred stays decryptable until then.
    pub async fn shred_tenant(&self, ctx: &RequestContext) -> Result<ShredReport> {
        let result = self.shred_inner(ctx).await;
        self.emit(ctx, EventName::AdminTenantShredded, &result);
        result
    }

    async fn shred_inner(&self, ctx: &RequestContext) -> Result<ShredReport> {
        let tenant = ctx.tenant();
        let view = self.tenant_view(tenant, true).await?;
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
            self.registry.insert_if_absent(entry).await?;
            versions_destroyed += 1;
        }
        self.registry
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
        for lease in self
            .leases
            .all()
            .into_iter()
            .filter(|l| &l.key.tenant == tenant)
        {
            self.leases.remove(&lease.key);
            lease.revoke("tenant shredded");
        }
        self.forget_view(tenant);
        let mut keys: Vec<KeyRef> = view
            .config
            .policies
            .values()
            .map(|p| p.kms_key.clone())
            .collect();
        keys.push(view.config.root_key.clone());
        keys.sort();
        keys.dedup();
        let mut report = ShredReport {
            versions_destroyed,
            master_keys_destroyed: Vec::new(),
            operator_must_destroy: Vec::new(),
        };
        for key in keys {
            match self.kms.destroy_key(&key).await {
                Ok(true) => report.master_keys_destroyed.push(key),
                Ok(false) | Err(_) => report.operator_must_destroy.push(key),
            }
        }
        Ok(report)
    }
}
