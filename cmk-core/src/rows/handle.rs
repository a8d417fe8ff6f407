//! Key handles: the unwrapped keys of one tenant that a request needs.
//!
//! [`crate::Cmk::keys_for`] fetches them asynchronously (through the KMS); sealing and
//! unsealing with a handle is then synchronous CPU work (DESIGN.md §5). A handle holds every
//! non-destroyed version of the requested classes' KEKs (newest first, at most
//! [`crate::CmkSettings::max_warm_versions`] per class), so rows sealed before a roll-over
//! still read, and the index and deterministic roots when a requested class is searchable.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};

use zeroize::Zeroizing;

use crate::audit::event::EventSink;

use crate::crypto::search;
use crate::crypto::secret::SecretKey;
use crate::error::Result;
use crate::format::aad::RowId;
use crate::keys::lease::{Lease, LeasedKek, Material};
use crate::rows::schema::RowSchema;
use crate::rows::seal::{RowValues, SealOut, SealedRow, StoredRow, UnsealedRow};
use crate::tenant::config::TenantConfig;
use crate::tenant::context::TenantId;
use crate::tenant::policy::{Class, Policy};

/// Keys derived per field from a root, cached for the handle's life.
#[derive(Default)]
pub(crate) struct DerivedKeys {
    pub(crate) index: HashMap<FieldKeyId, Arc<SecretKey>>,
    pub(crate) deterministic: HashMap<FieldKeyId, Arc<Zeroizing<[u8; 64]>>>,
}

/// (table, column, root version) of a derived per-field key.
pub(crate) type FieldKeyId = (String, String, u8);

/// The keys of one tenant for one request (or one batch).
pub struct TenantKeys {
    pub(crate) tenant: TenantId,
    /// The request the keys were fetched for: row-loading code in a key scope unseals with it.
    pub(crate) ctx: crate::tenant::context::RequestContext,
    pub(crate) config: Arc<TenantConfig>,
    /// Leased KEKs by (id, version). A handful per handle: a linear scan beats hashing.
    pub(crate) keks: Vec<((u32, u32), LeasedKek)>,
    /// Write KEK per class.
    pub(crate) active: Vec<(Class, (u32, u32))>,
    /// Requested classes in classic mode (no lease): only the async path serves them.
    pub(crate) classic: Vec<Class>,
    /// Every (KEK id, version) the registry records for the tenant, requested, destroyed or
    /// not: a value naming one of these that is not loaded is `KeyUnavailable`; a value
    /// naming anything else is `Tampered`.
    pub(crate) known_keks: HashSet<(u32, u32)>,
    /// Every index and deterministic root version the registry records.
    pub(crate) known_roots: HashSet<(bool, u8)>,
    pub(crate) index_roots: BTreeMap<u8, Arc<Lease>>,
    pub(crate) deterministic_roots: BTreeMap<u8, Arc<Lease>>,
    /// KEK versions whose registry entry the KMS would not unwrap (a forged or corrupted
    /// entry), with that error: the handle reads under the versions that did unwrap, and a
    /// value naming one of these, or a write that would use one, fails with its error.
    pub(crate) unproven_keks: Vec<((u32, u32), crate::Error)>,
    /// Root versions (deterministic?, version) likewise.
    pub(crate) unproven_roots: Vec<((bool, u8), crate::Error)>,
    /// Shared by the handles [`TenantKeys::with_context`] makes from this one.
    pub(crate) derived: Arc<Mutex<DerivedKeys>>,
    /// Per-schema plans, shared with every handle of the same tenant view.
    pub(crate) plans: Arc<crate::rows::plan::PlanCache>,
    /// Raised when a stored value names a key version newer than the view knows.
    pub(crate) view_stale: Arc<std::sync::atomic::AtomicBool>,
    pub(crate) sink: Arc<dyn EventSink>,
    /// Whether any class of the tenant is fail-closed (events then need `emit_durable`).
    pub(crate) any_fail_closed: bool,
    pub(crate) min_format_version: u8,
    pub(crate) kek_max_wraps: u64,
}

impl fmt::Debug for TenantKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut versions: Vec<_> = self.keks.iter().map(|(k, _)| k).collect();
        versions.sort();
        f.debug_struct("TenantKeys")
            .field("tenant", &self.tenant)
            .field("kek_versions", &versions)
            .field(
                "index_root_versions",
                &self.index_roots.keys().collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl TenantKeys {
    /// The tenant these keys belong to.
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The request context the keys were fetched for: every seal, unseal and delete with this
    /// handle is checked against it and audited as it.
    pub fn context(&self) -> &crate::tenant::context::RequestContext {
        &self.ctx
    }

    /// The same keys acting for another request context of the same tenant (a job the
    /// request starts, a read on behalf of another actor): no KMS call, the leases are shared.
    ///
    /// # Errors
    /// [`crate::Error::TenantMismatch`] when `ctx` is another tenant's.
    pub fn with_context(
        &self,
        ctx: crate::tenant::context::RequestContext,
    ) -> crate::Result<Arc<Self>> {
        if ctx.tenant() != &self.tenant {
            return Err(crate::Error::TenantMismatch {
                expected: self.tenant.to_string(),
                found: ctx.tenant().to_string(),
            });
        }
        Ok(self.rebound(ctx))
    }

    /// This handle's keys for `ctx`, which must be of the handle's tenant.
    fn rebound(&self, ctx: crate::tenant::context::RequestContext) -> Arc<Self> {
        Arc::new(TenantKeys {
            tenant: self.tenant.clone(),
            ctx,
            config: Arc::clone(&self.config),
            keks: self.keks.clone(),
            active: self.active.clone(),
            classic: self.classic.clone(),
            known_keks: self.known_keks.clone(),
            known_roots: self.known_roots.clone(),
            index_roots: self.index_roots.clone(),
            deterministic_roots: self.deterministic_roots.clone(),
            unproven_keks: self.unproven_keks.clone(),
            unproven_roots: self.unproven_roots.clone(),
            derived: Arc::clone(&self.derived),
            plans: Arc::clone(&self.plans),
            view_stale: Arc::clone(&self.view_stale),
            sink: Arc::clone(&self.sink),
            any_fail_closed: self.any_fail_closed,
            min_format_version: self.min_format_version,
            kek_max_wraps: self.kek_max_wraps,
        })
    }

    /// The same keys acting for `actor` with `roles` (and no other role), keeping the
    /// request's id, source, purpose and metadata: the rare call made for someone else.
    pub fn as_actor<R: Into<String>>(
        &self,
        actor: crate::tenant::context::Actor,
        roles: impl IntoIterator<Item = R>,
    ) -> Arc<Self> {
        // The new context keeps the handle's own tenant: nothing to check.
        let ctx = self
            .ctx
            .for_actor(actor, roles.into_iter().map(Into::into).collect());
        self.rebound(ctx)
    }

    /// The tenant configuration the handle was built from.
    pub fn config(&self) -> &TenantConfig {
        &self.config
    }

    /// Classes with an active KEK in this handle.
    pub fn classes(&self) -> Vec<&Class> {
        let mut c: Vec<&Class> = self.active.iter().map(|(c, _)| c).collect();
        c.sort();
        c
    }

    /// The (KEK id, version) new writes of `class` use.
    pub fn active_kek(&self, class: &Class) -> Option<(u32, u32)> {
        self.active
            .iter()
            .find(|(c, _)| c == class)
            .map(|(_, k)| *k)
    }

    /// Classes of this handle in classic mode.
    pub fn classic_classes(&self) -> &[Class] {
        &self.classic
    }

    /// Fails for a class in classic mode: the synchronous path cannot serve it.
    pub(crate) fn check_not_classic(&self, class: &Class) -> crate::Result<()> {
        if self.classic.contains(class) {
            Err(crate::Error::ClassicModeNeedsAsync {
                class: class.to_string(),
            })
        } else {
            Ok(())
        }
    }

    /// The lease of a KEK version in this handle, if loaded.
    pub fn kek_lease(&self, id: u32, version: u32) -> Option<&Arc<Lease>> {
        self.kek(id, version).map(|k| &k.lease)
    }

    pub(crate) fn kek(&self, id: u32, version: u32) -> Option<&LeasedKek> {
        self.keks
            .iter()
            .find(|(k, _)| *k == (id, version))
            .map(|(_, kek)| kek)
    }

    pub(crate) fn policy(&self, class: &Class) -> crate::Result<&Policy> {
        self.config.policy(class)
    }

    #[inline]
    pub(crate) fn check_tenant(&self, tenant: &str) -> crate::Result<()> {
        if tenant == self.tenant.as_str() {
            Ok(())
        } else {
            Err(crate::Error::TenantMismatch {
                expected: self.tenant.to_string(),
                found: tenant.to_string(),
            })
        }
    }

    /// The error for a KEK a stored value names but the handle does not hold. A version
    /// newer than every version of that KEK the view knows may come from another instance's
    /// roll-over, or from a forged value: the handle cannot tell, so it is `Tampered` (one
    /// error for every failure to authenticate), and the view is marked stale so the next
    /// `keys_for` re-reads the registry.
    pub(crate) fn missing_kek(&self, kek_id: u32, version: u32) -> crate::Error {
        if let Some((_, e)) = self
            .unproven_keks
            .iter()
            .find(|(k, _)| *k == (kek_id, version))
        {
            return e.clone();
        }
        if self.known_keks.contains(&(kek_id, version)) {
            return crate::Error::KeyUnavailable {
                tenant: self.tenant.to_string(),
                kek_id,
                version,
            };
        }
        if self
            .known_keks
            .iter()
            .any(|&(id, known)| id == kek_id && known < version)
        {
            self.mark_view_stale();
        }
        crate::Error::Tampered
    }

    fn missing_root(&self, deterministic: bool, version: u8) -> crate::Error {
        if let Some((_, e)) =
            (self.unproven_roots.iter()).find(|(k, _)| *k == (deterministic, version))
        {
            return e.clone();
        }
        if self.known_roots.contains(&(deterministic, version)) {
            return crate::Error::KeyUnavailable {
                tenant: self.tenant.to_string(),
                kek_id: 0,
                version: u32::from(version),
            };
        }
        if self
            .known_roots
            .iter()
            .any(|&(det, known)| det == deterministic && known < version)
        {
            self.mark_view_stale();
        }
        crate::Error::Tampered
    }

    fn mark_view_stale(&self) {
        self.view_stale
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn current_index_version(&self) -> crate::Result<u8> {
        self.current_root_version(false, &self.index_roots)
    }

    /// The newest root version of a kind, the one new values use: an error when it is not
    /// loaded (unproven or missing), never a silent fall-back to an older one.
    fn current_root_version(
        &self,
        deterministic: bool,
        loaded: &BTreeMap<u8, Arc<Lease>>,
    ) -> crate::Result<u8> {
        let newest = loaded.keys().next_back().copied();
        let newest_unproven = self
            .unproven_roots
            .iter()
            .filter(|((det, _), _)| *det == deterministic)
            .max_by_key(|((_, v), _)| *v);
        match (newest, newest_unproven) {
            (_, Some(((_, u), e))) if newest.is_none_or(|n| *u > n) => Err(e.clone()),
            (Some(v), _) => Ok(v),
            (None, _) => Err(crate::Error::KeyUnavailable {
                tenant: self.tenant.to_string(),
                kek_id: 0,
                version: 0,
            }),
        }
    }

    pub(crate) fn index_key(
        &self,
        table: &str,
        column: &str,
        version: u8,
    ) -> crate::Result<Arc<SecretKey>> {
        let lease = self
            .index_roots
            .get(&version)
            .ok_or_else(|| self.missing_root(false, version))?;
        let mut cache = self
            .derived
            .lock()
            .map_err(|_| crate::Error::poisoned("key cache"))?;
        let id = (table.to_string(), column.to_string(), version);
        // The lease is checked at every use, cached derivation or not.
        lease.with(|m| match m {
            Material::Root(root) => {
                Ok(Arc::clone(cache.index.entry(id).or_insert_with(|| {
                    Arc::new(search::index_key(root, table, column, version))
                })))
            }
            Material::Kek(_) => Err(crate::Error::Tampered),
        })?
    }

    pub(crate) fn current_deterministic_version(&self) -> crate::Result<u8> {
        self.current_root_version(true, &self.deterministic_roots)
    }

    pub(crate) fn deterministic_key(
        &self,
        table: &str,
        column: &str,
        version: u8,
    ) -> crate::Result<Arc<Zeroizing<[u8; 64]>>> {
        let lease = self
            .deterministic_roots
            .get(&version)
            .ok_or_else(|| self.missing_root(true, version))?;
        let mut cache = self
            .derived
            .lock()
            .map_err(|_| crate::Error::poisoned("key cache"))?;
        let id = (table.to_string(), column.to_string(), version);
        lease.with(|m| match m {
            Material::Root(root) => Ok(Arc::clone(cache.deterministic.entry(id).or_insert_with(
                || Arc::new(search::deterministic_key(root, table, column, version)),
            ))),
            Material::Kek(_) => Err(crate::Error::Tampered),
        })?
    }

    // Sealing, unsealing and search queries (the bodies are in rows::seal).

    /// Seals one row. `values` follow [`RowSchema::fields`].
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] when `values` does not follow the schema's fields, or a
    /// blind-indexed value is not UTF-8 and its normaliser needs text;
    /// [`crate::Error::ValueTooLarge`] for a value over [`crate::rows::seal::MAX_VALUE_LEN`];
    /// [`crate::Error::UnknownClass`] or [`crate::Error::InvalidConfig`] when a field's class has
    /// no policy, or its policy does not allow the field's search, hidden NULL or padding;
    /// [`crate::Error::ClassicModeNeedsAsync`] for a class in classic mode;
    /// [`crate::Error::ClassNotRequested`] for a class the keys were not fetched for;
    /// [`crate::Error::KeyUnavailable`] when a searchable field needs a root the handle does not
    /// hold; [`crate::Error::LeaseEnded`] when a key's lease has ended or the KEK reached its
    /// wrap limit; [`crate::Error::Random`] when the random number generator fails;
    /// [`crate::Error::AuditFailClosed`] when a fail-closed class's event cannot be recorded.
    pub fn seal(
        &self,
        schema: &RowSchema,
        row_id: Option<&RowId>,
        values: &[Option<&[u8]>],
    ) -> Result<SealedRow> {
        crate::rows::seal::seal_classic_inner(self, &self.ctx, schema, row_id, values, (&[], None))
    }

    /// Like [`TenantKeys::seal`], into storage the caller provides (the derive passes arrays
    /// on its stack, so a row allocates nothing but its stored values). `out`'s slices must
    /// have one entry per key class, per field and per field; they are overwritten.
    ///
    /// # Errors
    /// As [`TenantKeys::seal`], and [`crate::Error::InvalidInput`] when `out`'s slices do not fit
    /// the schema. On any error every slot of `out` is cleared, so no half-sealed row goes out.
    pub fn seal_into(
        &self,
        schema: &RowSchema,
        row_id: Option<&RowId>,
        values: &[Option<&[u8]>],
        out: SealOut<'_>,
    ) -> Result<()> {
        crate::rows::seal::seal_into(self, schema, row_id, values, out)
    }

    /// Seals many rows with the same keys; failures are reported per row, by position.
    pub fn seal_many(&self, schema: &RowSchema, rows: &[RowValues<'_>]) -> Vec<Result<SealedRow>> {
        rows.iter()
            .map(|r| self.seal(schema, r.row_id, r.values))
            .collect()
    }

    /// Unseals one row; fails with [`crate::Error::AccessDenied`] if the actor may not read a class
    /// the row holds.
    ///
    /// # Errors
    /// [`crate::Error::AccessDenied`] when the actor holds no reader role of a class the row
    /// holds; [`crate::Error::TenantMismatch`] when the row's tenant column names another tenant;
    /// [`crate::Error::Tampered`] when a key column or ciphertext fails authentication or names a
    /// key version the registry does not know; [`crate::Error::KeyUnavailable`] when it names a
    /// known version the handle does not hold (destroyed, or past `max_warm_versions`);
    /// [`crate::Error::FormatTooOld`] for a key column older than the accepted format;
    /// [`crate::Error::MissingKeyColumn`] for a row with no key column at all (a legacy row);
    /// [`crate::Error::ClassicModeNeedsAsync`] for a readable classic key column;
    /// [`crate::Error::UnknownClass`] for a class without policy; [`crate::Error::InvalidInput`]
    /// when `row` does not have the schema's shape; [`crate::Error::LeaseEnded`] when a key's
    /// lease has ended; [`crate::Error::AuditFailClosed`] when a fail-closed class's event cannot
    /// be recorded.
    pub fn unseal(&self, schema: &RowSchema, row: &StoredRow<'_>) -> Result<UnsealedRow> {
        crate::rows::seal::unseal_with(self, &self.ctx, schema, row, false, &[])
    }

    /// Unseals what the actor may read and marks the other fields [`crate::rows::seal::Revealed::Withheld`].
    ///
    /// # Errors
    /// As [`TenantKeys::unseal`], except [`crate::Error::AccessDenied`]: a class the actor may not
    /// read is withheld instead.
    pub fn unseal_partial(&self, schema: &RowSchema, row: &StoredRow<'_>) -> Result<UnsealedRow> {
        crate::rows::seal::unseal_with(self, &self.ctx, schema, row, true, &[])
    }

    /// Unseals many rows with the same keys; failures are reported per row, by position.
    pub fn unseal_many(
        &self,
        schema: &RowSchema,
        rows: &[StoredRow<'_>],
    ) -> Vec<Result<UnsealedRow>> {
        rows.iter().map(|r| self.unseal(schema, r)).collect()
    }

    /// Blind index values that match `plaintext` in `column`, one per loaded index-root
    /// version, newest first: query with `IN (...)` so rows indexed before a root rotation
    /// still match. The caller must also constrain the tenant column.
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] when `column` is not a classified column with a blind index,
    /// or `plaintext` is not UTF-8 and the normaliser needs text; [`crate::Error::LeaseEnded`]
    /// when an index root's lease has ended. Keys fetched without a searchable class hold no
    /// index root: the list is then empty, not an error.
    pub fn blind_index_query(
        &self,
        schema: &RowSchema,
        column: &str,
        plaintext: &[u8],
    ) -> Result<Vec<Vec<u8>>> {
        crate::rows::seal::blind_index_query(self, schema, column, plaintext)
    }

    /// The deterministic value of `plaintext` in `column` under the current root, for
    /// equality queries. The caller must also constrain the tenant column.
    ///
    /// # Errors
    /// [`crate::Error::InvalidInput`] when `column` is not a deterministic column of `schema`;
    /// [`crate::Error::KeyUnavailable`] when the handle holds no deterministic root (the keys
    /// were fetched without a searchable class); [`crate::Error::LeaseEnded`] when the root's
    /// lease has ended.
    pub fn deterministic_query(
        &self,
        schema: &RowSchema,
        column: &str,
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        crate::rows::seal::deterministic_query(self, schema, column, plaintext)
    }

    /// Records the deletion of rows of `schema`'s table (`deleted`: how many, or why not), for
    /// ORM adapters, which delete inside a transaction and roll back when this fails: a sink
    /// failure is an error when a class of the table is fail-closed.
    ///
    /// # Errors
    /// [`crate::Error::AuditFailClosed`] when `deleted` is `Ok`, a class of the table is
    /// fail-closed and the sink cannot record the event durably.
    pub fn audit_delete(&self, schema: &RowSchema, deleted: &Result<usize>) -> Result<()> {
        crate::rows::seal::audit_delete(self, schema, deleted)
    }

    // Key scopes for row-loading code (rows::scope).

    /// Runs `f` with these keys as the thread's current keys (for synchronous code such as
    /// Diesel, `spawn_blocking` or a pool's `interact`). Scopes nest; the innermost wins.
    pub fn scope<R>(self: &Arc<Self>, f: impl FnOnce() -> R) -> R {
        crate::rows::scope::scope(self, f)
    }

    /// Runs the future that `work` builds with these keys as the task's current keys (for
    /// async code such as SeaORM): `keys.scope_async(|| service.call(req))`.
    ///
    /// `work` is a closure so that the future is built inside the scope: some futures do
    /// their work when they are made (a web framework's `service.call(req)` runs the handler
    /// up to its first await), and passing one made outside would run that part without keys.
    /// A future in place of the closure does not compile.
    ///
    /// Code on another thread (`spawn_blocking`, a pool's `interact`) does not see a task's
    /// scope: enter [`TenantKeys::scope`] there.
    pub async fn scope_async<F: Future>(self: &Arc<Self>, work: impl FnOnce() -> F) -> F::Output {
        crate::rows::scope::scope_async(self, work).await
    }

    // KEK retirement of one row (rows::rekey).

    /// Re-wraps the DEK in key column `key_class` of `row` under the class's active KEK, for
    /// KEK retirement. Field ciphertexts are untouched. Returns `None` when the key column is
    /// NULL or already under the active KEK.
    ///
    /// # Errors
    /// [`crate::Error::TenantMismatch`] when the row's tenant column names another tenant;
    /// [`crate::Error::InvalidInput`] when `key_class` is not a key class of `schema`, or its
    /// class was not requested when the keys were fetched; [`crate::Error::Tampered`] when the
    /// key column does not parse or authenticate, belongs to another class, or names a KEK version
    /// the registry does not know; [`crate::Error::KeyUnavailable`] when it names a known version
    /// the handle does not hold (destroyed, or past `max_warm_versions`);
    /// [`crate::Error::LeaseEnded`] when a KEK's lease has ended; [`crate::Error::Random`] when
    /// the random number generator fails; [`crate::Error::AuditFailClosed`] when a fail-closed
    /// class's event cannot be recorded.
    pub fn rekey_key_column(
        self: &Arc<Self>,
        schema: &RowSchema,
        key_class: usize,
        row: &StoredRow<'_>,
    ) -> Result<Option<Vec<u8>>> {
        crate::rows::rekey::rekey_key_column(self, schema, key_class, row)
    }

    /// Every key column of `row` not under its class's active KEK, re-wrapped (one entry per
    /// key class: `None` where the column is NULL or already current), with one `DATA_REKEY`
    /// event per row naming the classes re-wrapped, where [`TenantKeys::rekey_key_column`]
    /// emits one per column.
    ///
    /// # Errors
    /// As [`TenantKeys::rekey_key_column`], for any key column; then none is returned.
    pub fn rekey_key_columns(
        self: &Arc<Self>,
        schema: &RowSchema,
        row: &StoredRow<'_>,
    ) -> Result<Vec<Option<Vec<u8>>>> {
        crate::rows::rekey::rekey_key_columns(self, schema, row)
    }

    /// For an update that leaves key class `key_class`'s values as they were: that class's
    /// key column of the stored row `old`, re-wrapped into the new write whose key columns
    /// `fresh` sealing just made (their write id and KEK version), so the class keeps its
    /// DEK and its stored ciphertexts and blind indexes, and the row's key columns still come
    /// from one write (docs/FORMAT.md §4). Nothing is re-encrypted but the DEK's wrap.
    ///
    /// # Errors
    /// [`crate::Error::TenantMismatch`] when `old` names another tenant;
    /// [`crate::Error::InvalidInput`] when `key_class` is not a key class of `schema`, either
    /// row has no leased key column for it, or their column lists differ (the class's layout
    /// changed: seal it afresh instead); [`crate::Error::Tampered`] when a key column does
    /// not parse, belongs to another class, or the old one does not authenticate;
    /// [`crate::Error::KeyUnavailable`] and [`crate::Error::LeaseEnded`] as for
    /// [`TenantKeys::rekey_key_column`]; [`crate::Error::Random`] when the random number
    /// generator fails.
    pub fn carry_key_column(
        &self,
        schema: &RowSchema,
        key_class: usize,
        old: &StoredRow<'_>,
        fresh: &[Option<&[u8]>],
    ) -> Result<Vec<u8>> {
        crate::rows::rekey::carry_key_column(self, schema, key_class, old, fresh)
    }
}
