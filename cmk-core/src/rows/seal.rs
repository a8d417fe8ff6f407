//! Sealing and unsealing rows with a key handle: synchronous CPU work, no I/O.
//!
//! Per row and class a fresh random DEK encrypts every field of the class (AES-256-GCM, one
//! ciphertext per field), and the class's active KEK wraps the DEK into the class's key
//! column. Associated data binds tenant, table, column, class, format version and the row id
//! when ids are application-assigned (docs/FORMAT.md). Any failure to authenticate is
//! [`Error::Tampered`]; the caller never receives wrong plaintext.

use std::sync::Arc;

use zeroize::Zeroizing;

use crate::audit::event::{EventName, Outcome, SecurityEvent};
use crate::crypto::aead::{GcmKey, NONCE_LEN, TAG_LEN};
use crate::crypto::secret::{SecretBytes, SecretKey};
use crate::crypto::{rng, search};
use crate::error::{Error, Result};
use crate::format::aad::RowId;
use crate::format::key_column::{self, WriteId};
use crate::format::{FORMAT_V1, field};
use crate::keys::lease::RowTime;
use crate::rows::aad::{field_aad, field_aad_prefix, give_back_aad_buffer, take_aad_buffer};
use crate::rows::handle::TenantKeys;
use crate::rows::plan::{Effective, Plan};
use crate::rows::schema::{FieldSearch, FieldSpec, RowSchema};
use crate::tenant::context::RequestContext;
use crate::tenant::policy::{AuditMode, Class, SearchMode};

/// Largest plaintext of one field (16 MiB less overhead: a MySQL MEDIUMBLOB).
pub const MAX_VALUE_LEN: usize = (1 << 24) - 4096;

/// What the database stores for one row's classified part.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SealedRow {
    /// One entry per [`RowSchema::key_classes`]; `None` for legacy-only classes.
    pub key_columns: Vec<Option<Vec<u8>>>,
    /// One entry per [`RowSchema::fields`]; `None` is SQL NULL.
    pub fields: Vec<Option<Vec<u8>>>,
    /// One entry per field: the blind index value for blind-indexed, non-NULL fields. Empty
    /// when the schema has no blind-indexed field (no allocation per row for nothing).
    pub indexes: Vec<Option<Vec<u8>>>,
}

/// Storage for one sealed row that the caller provides ([`TenantKeys::seal_into`]): one
/// entry per key class, per field, and per field for blind index values (may be empty when
/// the schema has no blind-indexed field).
#[derive(Debug)]
// Exhaustive by design: the caller's output slots, built by the caller.
#[allow(clippy::exhaustive_structs)]
pub struct SealOut<'a> {
    /// As [`SealedRow::key_columns`].
    pub key_columns: &'a mut [Option<Vec<u8>>],
    /// As [`SealedRow::fields`].
    pub fields: &'a mut [Option<Vec<u8>>],
    /// As [`SealedRow::indexes`].
    pub indexes: &'a mut [Option<Vec<u8>>],
}

impl SealOut<'_> {
    fn clear(&mut self) {
        for slot in self
            .key_columns
            .iter_mut()
            .chain(self.fields.iter_mut())
            .chain(self.indexes.iter_mut())
        {
            *slot = None;
        }
    }

    fn reborrow(&mut self) -> SealOut<'_> {
        SealOut {
            key_columns: &mut *self.key_columns,
            fields: &mut *self.fields,
            indexes: &mut *self.indexes,
        }
    }
}

/// A row as loaded from the database.
#[derive(Debug, Clone, Copy)]
// Exhaustive by design: a view of a row's stored columns, built by the caller (and by generated code).
#[allow(clippy::exhaustive_structs)]
pub struct StoredRow<'a> {
    /// The row's tenant column.
    pub tenant: &'a str,
    /// The row id, when ids are application-assigned (must be what sealing used).
    pub row_id: Option<&'a RowId>,
    /// One entry per [`RowSchema::key_classes`].
    pub key_columns: &'a [Option<&'a [u8]>],
    /// One entry per [`RowSchema::fields`].
    pub fields: &'a [Option<&'a [u8]>],
    /// The stored blind indexes, one entry per [`RowSchema::fields`] (`None` where a field
    /// has no index or it is NULL); may be empty for a table without blind indexes.
    /// Unsealing checks each against the value it reveals ([`Error::IndexMismatch`]).
    pub indexes: &'a [Option<&'a [u8]>],
}

/// Plaintext values to seal for one row. Its `Debug` shows only the shape, never values.
#[derive(Clone, Copy)]
// Exhaustive by design: the values of one row to seal, built by the caller.
#[allow(clippy::exhaustive_structs)]
pub struct RowValues<'a> {
    /// The row id, when ids are application-assigned.
    pub row_id: Option<&'a RowId>,
    /// One entry per [`RowSchema::fields`]; `None` is NULL.
    pub values: &'a [Option<&'a [u8]>],
}

impl std::fmt::Debug for RowValues<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowValues")
            .field("row_id", &self.row_id)
            .field(
                "values",
                &format_args!("{} values, redacted", self.values.len()),
            )
            .finish()
    }
}

/// One unsealed field.
#[derive(Debug, Clone, PartialEq, Eq)]
// Exhaustive by design: the three states of a stored value (docs/FORMAT.md); generated code matches on all three.
#[allow(clippy::exhaustive_enums)]
pub enum Revealed {
    /// The plaintext.
    Value(SecretBytes),
    /// NULL.
    Null,
    /// Not decrypted: the actor holds no reader role of the field's class.
    Withheld,
}

impl Revealed {
    /// The plaintext, if revealed and not NULL.
    pub fn value(&self) -> Option<&[u8]> {
        match self {
            Revealed::Value(v) => Some(v.expose_secret()),
            _ => None,
        }
    }
}

/// An unsealed row: one entry per [`RowSchema::fields`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UnsealedRow {
    /// Values in field order.
    pub values: Vec<Revealed>,
}

/// A DEK of a classic-mode class that the async path obtained from the KMS.
pub(crate) struct ClassicDek {
    /// Index of the key class in the schema.
    pub(crate) k: usize,
    pub(crate) dek: SecretKey,
    /// When sealing: the classic key column holding the KMS-wrapped DEK.
    pub(crate) key_column: Option<Vec<u8>>,
}

/// The column-list entries of key class `k` for these values: each member column and whether
/// it is stored as NULL.
fn list_entries<'s>(
    schema: &'s RowSchema,
    k: usize,
    values: &'s [Option<&[u8]>],
    effective: &'s [Effective],
) -> impl Iterator<Item = (&'s str, bool)> + 's {
    schema.members(k).iter().map(move |&i| {
        (
            schema.fields()[i].column.as_str(),
            values[i].is_none() && !effective[i].hide_null,
        )
    })
}

/// The column list key class `k` records for these values.
pub(crate) fn column_list(
    keys: &TenantKeys,
    schema: &RowSchema,
    k: usize,
    values: &[Option<&[u8]>],
) -> Result<Vec<u8>> {
    let effective = schema
        .fields()
        .iter()
        .map(|f| effective(keys, f))
        .collect::<Result<Vec<_>>>()?;
    key_column::encode_list(list_entries(schema, k, values, &effective))
}

pub(crate) fn effective(keys: &TenantKeys, f: &FieldSpec) -> Result<Effective> {
    let policy = keys.policy(&f.class)?;
    let needed = match f.search {
        FieldSearch::None => SearchMode::None,
        FieldSearch::BlindIndex(_) => SearchMode::BlindIndex,
        FieldSearch::Deterministic => SearchMode::Deterministic,
    };
    if needed > policy.search {
        return Err(Error::InvalidConfig(format!(
            "column `{}`: class `{}` does not allow {:?} search for tenant `{}`",
            f.column, f.class, needed, keys.tenant
        )));
    }
    let hide_null = f.hide_null || policy.hide_nulls;
    if hide_null && f.search != FieldSearch::None {
        return Err(Error::InvalidConfig(format!(
            "column `{}`: class `{}` hides NULL, which a searchable field would reveal",
            f.column, f.class
        )));
    }
    let pad_to = f.pad_to.max(policy.pad_to);
    if pad_to > 0 && f.search == FieldSearch::Deterministic {
        return Err(Error::InvalidConfig(format!(
            "column `{}`: deterministic values cannot be padded",
            f.column
        )));
    }
    Ok(Effective { hide_null, pad_to })
}

fn check_context(keys: &TenantKeys, ctx: &RequestContext) -> Result<()> {
    // The handle's tenant is usually the very id of the request it was fetched for.
    if std::ptr::eq(ctx.tenant().as_str(), keys.tenant.as_str()) {
        return Ok(());
    }
    keys.check_tenant(ctx.tenant().as_str())
}

/// The body of [`TenantKeys::seal_into`].
pub(crate) fn seal_into(
    keys: &TenantKeys,
    schema: &RowSchema,
    row_id: Option<&RowId>,
    values: &[Option<&[u8]>],
    mut out: SealOut<'_>,
) -> Result<()> {
    let ctx = &keys.ctx;
    // What the slots held before is dropped: a NULL must not keep an earlier value.
    out.clear();
    let result = seal_audited(
        keys,
        ctx,
        schema,
        row_id,
        values,
        (&[], None),
        out.reborrow(),
    );
    if result.is_err() {
        // Nothing of a failed seal goes out: not a half-sealed row, and not a whole one
        // whose fail-closed event could not be recorded.
        out.clear();
    }
    result
}

/// Seals with classic-mode DEKs the async path obtained (their key columns carry the write
/// id given beside them; without one sealing draws it), and audits.
pub(crate) fn seal_classic_inner(
    keys: &TenantKeys,
    ctx: &RequestContext,
    schema: &RowSchema,
    row_id: Option<&RowId>,
    values: &[Option<&[u8]>],
    classic: (&[ClassicDek], Option<&WriteId>),
) -> Result<SealedRow> {
    let n = schema.fields().len();
    let mut row = SealedRow {
        key_columns: vec![None; schema.key_classes().len()],
        fields: vec![None; n],
        indexes: if schema.has_blind_index() {
            vec![None; n]
        } else {
            Vec::new()
        },
    };
    let out = SealOut {
        key_columns: &mut row.key_columns,
        fields: &mut row.fields,
        indexes: &mut row.indexes,
    };
    seal_audited(keys, ctx, schema, row_id, values, classic, out)?;
    Ok(row)
}

/// Seals and emits the row's event (a failed seal's too); a fail-closed class whose
/// event cannot be recorded fails the seal.
fn seal_audited(
    keys: &TenantKeys,
    ctx: &RequestContext,
    schema: &RowSchema,
    row_id: Option<&RowId>,
    values: &[Option<&[u8]>],
    classic: (&[ClassicDek], Option<&WriteId>),
    out: SealOut<'_>,
) -> Result<()> {
    let result = seal_inner(keys, ctx, schema, row_id, values, classic, out);
    audit(
        keys,
        ctx,
        schema,
        row_id,
        crate::audit::event::sealing_event(),
        &result,
        Touched::All,
    )?;
    result
}

fn seal_inner(
    keys: &TenantKeys,
    ctx: &RequestContext,
    schema: &RowSchema,
    row_id: Option<&RowId>,
    values: &[Option<&[u8]>],
    (classic, write_id): (&[ClassicDek], Option<&WriteId>),
    out: SealOut<'_>,
) -> Result<()> {
    check_context(keys, ctx)?;
    let fields = schema.fields();
    schema.check_values(values.len())?;
    let SealOut {
        key_columns,
        fields: sealed_fields,
        indexes,
    } = out;
    check_room(
        schema,
        key_columns.len(),
        sealed_fields.len(),
        indexes.len(),
    )?;
    let lent = keys.plans.get(keys, schema);
    let plan: &Plan = &lent;
    let effective: &[Effective] = match &plan.effective {
        Ok(e) => e,
        Err(e) => return Err(e.clone()),
    };
    if let Some(i) = values
        .iter()
        .position(|v| v.is_some_and(|v| v.len() > MAX_VALUE_LEN))
    {
        return Err(Error::ValueTooLarge {
            column: fields[i].column.clone(),
            limit: MAX_VALUE_LEN,
        });
    }
    // One id for every key column of this write: key columns of different writes never
    // read together, so no class of the row can be rolled back alone.
    let write_id: WriteId = match write_id {
        Some(id) => *id,
        None => rng::array()?,
    };
    // Taken from the thread's reusable buffer only if a row needs to build associated data.
    let mut scratch = Vec::new();
    let mut time = RowTime::default();
    for (k, class) in schema.key_classes().iter().enumerate() {
        let members = schema.members(k);
        if members.is_empty() {
            continue;
        }
        // Classic mode: the DEK and its KMS-wrapped key column were made by the async path.
        let pre = classic.iter().find(|c| c.k == k);
        if pre.is_none() {
            keys.check_not_classic(class)?;
        }
        let fresh;
        let dek = match pre {
            Some(c) => &c.dek,
            None => {
                fresh = SecretKey::random()?;
                &fresh
            }
        };
        let gcm = GcmKey::new(dek);
        for &i in members {
            if values[i].is_some() || effective[i].hide_null {
                let sealed =
                    seal_field(plan, &gcm, i, values[i], effective[i], row_id, &mut scratch)?;
                sealed_fields[i] = Some(sealed);
            }
        }
        key_columns[k] = match pre {
            Some(c) => c.key_column.clone(),
            None => Some(wrap_dek(
                keys,
                schema,
                plan,
                (k, class),
                dek,
                (values, effective),
                (row_id, &write_id),
                (&mut scratch, &mut time),
            )?),
        };
    }
    seal_search_fields(keys, schema, values, sealed_fields, indexes)?;
    give_back_aad_buffer(scratch);
    Ok(())
}

/// The caller's output slots fit the schema: one per key class, per field and (with a blind
/// index) per field.
fn check_room(schema: &RowSchema, keys: usize, fields: usize, indexes: usize) -> Result<()> {
    let n = schema.fields().len();
    if keys != schema.key_classes().len()
        || fields != n
        || (schema.has_blind_index() && indexes != n)
    {
        return Err(Error::InvalidInput(format!(
            "sealing table `{}` needs room for {} key columns and {} fields",
            schema.table(),
            schema.key_classes().len(),
            n
        )));
    }
    Ok(())
}

/// One envelope field under its class's DEK: `version ‖ flags ‖ nonce ‖ body ‖ tag`.
fn seal_field(
    plan: &Plan,
    gcm: &GcmKey,
    i: usize,
    value: Option<&[u8]>,
    eff: Effective,
    row_id: Option<&RowId>,
    scratch: &mut Vec<u8>,
) -> Result<Vec<u8>> {
    let flags = eff.flags();
    let nonce: [u8; NONCE_LEN] = rng::array()?;
    let mut out = Vec::with_capacity(
        field::OVERHEAD + 1 + value.map_or(0, <[u8]>::len) + usize::from(eff.pad_to),
    );
    out.push(FORMAT_V1);
    out.push(flags);
    out.extend_from_slice(&nonce);
    field::inner_plaintext(&mut out, value, flags, eff.pad_to);
    let aad = plan.field_aad(i, flags, row_id, scratch);
    let tag = gcm.seal(&nonce, aad, &mut out[field::HEADER_LEN..])?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// The key column of key class `k`: the DEK wrapped by the class's active KEK, with the
/// write id and the list of the columns it seals.
#[allow(clippy::too_many_arguments)]
fn wrap_dek(
    keys: &TenantKeys,
    schema: &RowSchema,
    plan: &Plan,
    (k, class): (usize, &Class),
    dek: &SecretKey,
    (values, effective): (&[Option<&[u8]>], &[Effective]),
    (row_id, write_id): (Option<&RowId>, &WriteId),
    (scratch, time): (&mut Vec<u8>, &mut RowTime),
) -> Result<Vec<u8>> {
    let (kek_id, kek_version) = keys
        .active_kek(class)
        .ok_or_else(|| Error::ClassNotRequested {
            class: class.to_string(),
        })?;
    let kek = keys
        .kek(kek_id, kek_version)
        .ok_or_else(|| keys.missing_kek(kek_id, kek_version))?;
    // Lay the key column out: prefix, nonce, encrypted DEK, tag, write id, list. The list
    // goes in first and the DEK is encrypted in a wiped buffer, so no plaintext DEK is ever
    // in the key column's allocation (not even on an error path or a reallocation).
    let nonce: [u8; NONCE_LEN] = rng::array()?;
    let mut kc = Vec::with_capacity(key_column::BOUND_LIST_OFFSET + 64);
    kc.extend_from_slice(&key_column::bound_prefix(kek_id, kek_version));
    kc.extend_from_slice(&nonce);
    kc.extend_from_slice(&[0u8; 32 + TAG_LEN]);
    kc.extend_from_slice(write_id);
    // With no member stored as NULL the list is the schema's full list.
    let full = schema
        .members(k)
        .iter()
        .all(|&i| values[i].is_some() || effective[i].hide_null);
    if full {
        kc.extend_from_slice(schema.full_list(k));
    } else {
        key_column::encode_list_into(&mut kc, list_entries(schema, k, values, effective))?;
    }
    let aad = plan.dek_aad(
        k,
        (kek_id, kek_version),
        row_id,
        full,
        (
            &kc[key_column::BOUND_LIST_OFFSET..],
            schema.sealed_class_set(),
        ),
        Some(write_id),
        scratch,
    );
    let mut encrypted = Zeroizing::new(*dek.expose_secret());
    let tag = kek.with_at(time, |k| k.seal(&nonce, aad, &mut encrypted[..]))??;
    kc[21..53].copy_from_slice(&encrypted[..]);
    if kek.lease.count_wrap() > keys.kek_max_wraps.saturating_mul(4) {
        // Far past the roll-over point (keys_for rolls at kek_max_wraps): refuse rather
        // than approach the AES-GCM random-nonce bound with a handle never refreshed.
        return Err(Error::LeaseEnded {
            tenant: keys.tenant.to_string(),
            provider: kek.lease.provider.clone(),
            reason: "the KEK reached its wrap limit; fetch keys again to roll over".into(),
        });
    }
    kc[53..69].copy_from_slice(&tag);
    Ok(kc)
}

/// The blind indexes and deterministic values of the row's searchable fields.
fn seal_search_fields(
    keys: &TenantKeys,
    schema: &RowSchema,
    values: &[Option<&[u8]>],
    sealed_fields: &mut [Option<Vec<u8>>],
    indexes: &mut [Option<Vec<u8>>],
) -> Result<()> {
    let (tenant, table) = (keys.tenant.as_str(), schema.table());
    for (i, f) in schema.fields().iter().enumerate() {
        let Some(value) = values[i] else { continue };
        match f.search {
            FieldSearch::None => {}
            FieldSearch::BlindIndex(normalizer) => {
                let normalised = normalizer.apply(value)?;
                let version = keys.current_index_version()?;
                let key = keys.index_key(table, &f.column, version)?;
                indexes[i] = Some(search::blind_index(&key, version, &normalised).to_vec());
                if let std::borrow::Cow::Owned(mut o) = normalised {
                    zeroize::Zeroize::zeroize(&mut o);
                }
            }
            FieldSearch::Deterministic => {
                let version = keys.current_deterministic_version()?;
                let key = keys.deterministic_key(table, &f.column, version)?;
                sealed_fields[i] = Some(search::deterministic_encrypt(
                    &key, version, tenant, table, &f.column, value,
                )?);
            }
        }
    }
    Ok(())
}

/// Unseals strictly or (`partial`) as far as the actor may read, with classic-mode DEKs the
/// async path obtained, and audits.
pub(crate) fn unseal_with(
    keys: &TenantKeys,
    ctx: &RequestContext,
    schema: &RowSchema,
    row: &StoredRow<'_>,
    partial: bool,
    classic: &[ClassicDek],
) -> Result<UnsealedRow> {
    let mut withheld: Vec<&Class> = Vec::new();
    let result = unseal_inner(keys, ctx, schema, row, partial, &mut withheld, classic);
    let decrypt_event = |result: &Result<UnsealedRow>, touched: Touched| {
        let name = EventName::DataDecrypt;
        audit(keys, ctx, schema, row.row_id, name, result, touched)
    };
    if withheld.is_empty() && !matches!(result, Err(Error::AccessDenied { .. })) {
        decrypt_event(&result, Touched::All)?;
        return result;
    }
    // Some classes were refused: one DATA_DENY_ACCESS event for them, then (partial reads)
    // a DATA_DECRYPT event for what was revealed.
    let denied: Result<()> = match &result {
        Err(e @ Error::AccessDenied { .. }) => Err(e.clone()),
        _ => Err(Error::AccessDenied {
            class: join(&withheld),
        }),
    };
    let fields = schema.fields();
    let mask: Vec<bool> = (0..fields.len())
        .map(|i| {
            result
                .as_ref()
                .is_ok_and(|r| matches!(r.values.get(i), Some(Revealed::Withheld)))
        })
        .collect();
    let names = |want: bool| -> Vec<String> {
        (0..fields.len())
            .filter(|&i| mask[i] == want)
            .map(|i| fields[i].column.clone())
            .collect()
    };
    let denied_classes: Vec<String> = match &result {
        Err(Error::AccessDenied { class }) => vec![class.clone()],
        _ => withheld.iter().map(|c| c.to_string()).collect(),
    };
    audit(
        keys,
        ctx,
        schema,
        row.row_id,
        EventName::DataDenyAccess,
        &denied,
        Touched::Some(names(true), denied_classes),
    )?;
    // A failure other than the refusal (a tampered row) is a failed read of what was
    // readable: its own event, as a strict read's would be.
    if let Err(e) = &result
        && !matches!(e, Error::AccessDenied { .. })
    {
        decrypt_event(&result, Touched::All)?;
        return result;
    }
    let result = Ok(result?);
    let read_classes = schema
        .classes()
        .into_iter()
        .filter(|c| !withheld.contains(c))
        .map(|c| c.to_string())
        .collect();
    decrypt_event(&result, Touched::Some(names(false), read_classes))?;
    result
}

/// Where the DEK of a key column comes from.
enum Source<'b> {
    /// Wrapped by a leased KEK, opened in step 3.
    Kek(key_column::ParsedKeyColumn<'b>),
    /// Classic mode: the async path had the KMS unwrap it.
    Classic(&'b SecretKey),
    /// Not readable by this actor: never opened.
    Withheld,
}

/// A key column of a row, parsed and checked (step 1 of unsealing).
struct Listed<'b> {
    class: &'b Class,
    list_bytes: &'b [u8],
    source: Source<'b>,
    readable: bool,
    /// The list is the class's full list (every member, none NULL).
    full: bool,
    /// The write id the key column carries (`None` in one written before write ids).
    write_id: Option<WriteId>,
}

/// Which key column (by class index) opens a field, and whether it is the field's own class.
type SealedBy = Option<(u16, bool)>;

fn unseal_inner<'s>(
    keys: &TenantKeys,
    ctx: &RequestContext,
    schema: &'s RowSchema,
    row: &StoredRow<'_>,
    partial: bool,
    withheld: &mut Vec<&'s Class>,
    classic: &[ClassicDek],
) -> Result<UnsealedRow> {
    check_context(keys, ctx)?;
    keys.check_tenant(row.tenant)?;
    let fields = schema.fields();
    if row.key_columns.len() != schema.key_classes().len() || row.fields.len() != fields.len() {
        return Err(Error::InvalidInput(format!(
            "table `{}` expects {} key columns and {} fields",
            schema.table(),
            schema.key_classes().len(),
            fields.len()
        )));
    }
    let lent = keys.plans.get(keys, schema);
    let plan: &Plan = &lent;
    // One slot per key class (by index), `None` where the row has no key column: on the
    // stack for up to 8 key classes, as this runs for every row.
    let n_classes = schema.key_classes().len();
    let mut slots_on_stack: [Option<Listed<'_>>; 8] = [const { None }; 8];
    let mut slots_on_heap: Vec<Option<Listed<'_>>>;
    let listed: &mut [Option<Listed<'_>>] = if n_classes <= slots_on_stack.len() {
        &mut slots_on_stack[..n_classes]
    } else {
        slots_on_heap = (0..n_classes).map(|_| None).collect();
        &mut slots_on_heap
    };
    let present = list_key_columns(
        keys, ctx, schema, plan, row, partial, withheld, classic, listed,
    )?;
    let listed: &[Option<Listed<'_>>] = listed;
    // A row cmk sealed has a key column for every class with envelope fields; a row with
    // none is a legacy (plaintext) row, which strict mode refuses, even if all is NULL.
    if present == 0
        && let Some(f) = fields.iter().find(|f| f.is_envelope())
    {
        return Err(Error::MissingKeyColumn {
            column: f.column.clone(),
        });
    }
    // The common row: every class with fields has its key column, listing all its members
    // and none NULL, and no legacy class has one. Then each field is found, not NULL,
    // under its own class, with no search.
    let standard = (0..n_classes).all(|k| match &listed[k] {
        Some(l) => l.full,
        None => schema.members(k).is_empty(),
    });
    // Which key column opens each field: on the stack for up to 32 fields. Key classes are
    // few: u16 keeps this array small.
    let mut on_stack = [None::<(u16, bool)>; 32];
    let mut on_heap;
    let sealed_by: &mut [SealedBy] = if fields.len() <= on_stack.len() {
        &mut on_stack[..fields.len()]
    } else {
        on_heap = vec![None; fields.len()];
        &mut on_heap
    };
    let found = Found {
        listed,
        present,
        standard,
    };
    let mut values = assign_fields(keys, ctx, schema, row, partial, withheld, &found, sealed_by)?;
    open_fields(keys, schema, plan, row, &found, sealed_by, &mut values)?;
    super::index_check::check_indexes(keys, schema, row, &values)?;
    Ok(UnsealedRow { values })
}

/// What step 1 of unsealing found in a row's key columns.
struct Found<'l, 'b> {
    listed: &'l [Option<Listed<'b>>],
    /// How many key columns the row has.
    present: usize,
    /// Every class with fields has its full key column and no other class has one.
    standard: bool,
}

/// Step 1 of unsealing: parses and checks every key column of the row (class, key, reader
/// role) into its slot of `listed`; nothing is decrypted. Returns how many are present.
#[allow(clippy::too_many_arguments)]
fn list_key_columns<'s, 'b>(
    keys: &TenantKeys,
    ctx: &RequestContext,
    schema: &'s RowSchema,
    plan: &Plan,
    row: &StoredRow<'b>,
    partial: bool,
    withheld: &mut Vec<&'s Class>,
    classic: &'b [ClassicDek],
    listed: &mut [Option<Listed<'b>>],
) -> Result<usize>
where
    's: 'b,
{
    let mut present = 0usize;
    for (k, class) in schema.key_classes().iter().enumerate() {
        let Some(bytes) = row.key_columns[k] else {
            continue;
        };
        present += 1;
        let readable = plan.may_read(k, ctx.roles())?;
        // Checked before the reader role: a forged key column is `Tampered` for everyone.
        let entry = if key_column::is_classic(bytes) {
            list_classic(schema, k, class, bytes, readable, classic)?
        } else {
            list_leased(keys, schema, k, class, bytes, readable)?
        };
        // Every key column of a row comes from one write: the same write id in each (or
        // none, in a row written before write ids). Each id is authenticated when its DEK
        // is unwrapped, so a class restored from an older write of the row never reads.
        if let Some(first) = listed.iter().flatten().next()
            && first.write_id != entry.write_id
        {
            return Err(Error::Tampered);
        }
        if !readable {
            if !partial {
                return Err(Error::AccessDenied {
                    class: class.to_string(),
                });
            }
            withheld.push(class);
        }
        listed[k] = Some(entry);
    }
    Ok(present)
}

/// A classic key column (the KMS wrapped its DEK), checked against the schema.
fn list_classic<'b>(
    schema: &RowSchema,
    k: usize,
    class: &'b Class,
    bytes: &'b [u8],
    readable: bool,
    classic: &'b [ClassicDek],
) -> Result<Listed<'b>> {
    let ckc = key_column::parse_classic(bytes)?;
    if ckc.kek_id != schema.kek_id(k) {
        return Err(Error::Tampered);
    }
    let source = match classic.iter().find(|c| c.k == k) {
        Some(pre) => Source::Classic(&pre.dek),
        None if !readable => Source::Withheld,
        None => {
            return Err(Error::ClassicModeNeedsAsync {
                class: class.to_string(),
            });
        }
    };
    Ok(Listed {
        class,
        list_bytes: ckc.list_bytes,
        source,
        readable,
        full: false,
        write_id: ckc.write_id,
    })
}

/// A key column under a leased KEK, checked against the schema and the handle's KEKs.
fn list_leased<'b>(
    keys: &TenantKeys,
    schema: &RowSchema,
    k: usize,
    class: &'b Class,
    bytes: &'b [u8],
    readable: bool,
) -> Result<Listed<'b>> {
    let kc = key_column::parse(bytes)?;
    if kc.version < keys.min_format_version {
        return Err(Error::FormatTooOld {
            found: kc.version,
            minimum: keys.min_format_version,
        });
    }
    if kc.kek_id != schema.kek_id(k) {
        return Err(Error::Tampered);
    }
    let kek = keys
        .kek(kc.kek_id, kc.kek_version)
        .ok_or_else(|| keys.missing_kek(kc.kek_id, kc.kek_version))?;
    if kek.class != *class {
        return Err(Error::Tampered);
    }
    let full = !schema.members(k).is_empty() && kc.list_bytes == schema.full_list(k);
    Ok(Listed {
        class,
        list_bytes: kc.list_bytes,
        write_id: kc.write_id,
        source: Source::Kek(kc),
        readable,
        full,
    })
}

/// The key column that lists field `f`: the one of the field's current class first, else
/// the one that recorded it before a reclassification (no trial decryption). Found as (key
/// class, NULL recorded, under the field's own class).
fn listing_of(listed: &[Option<Listed<'_>>], f: &FieldSpec) -> Option<(usize, bool, bool)> {
    let n = listed.len();
    let own = (0..n).filter(|&k| listed[k].as_ref().is_some_and(|l| *l.class == f.class));
    let other = (0..n).filter(|&k| listed[k].as_ref().is_some_and(|l| *l.class != f.class));
    own.map(|k| (k, true))
        .chain(other.map(|k| (k, false)))
        .find_map(|(k, is_own)| {
            let l = listed[k].as_ref()?;
            key_column::listing(l.list_bytes, &f.column).map(|null| (k, null, is_own))
        })
}

/// Step 2 of unsealing: assigns each field to the key column that lists it (`sealed_by`),
/// and settles NULLs, withheld and deterministic fields.
#[allow(clippy::too_many_arguments)]
fn assign_fields<'s>(
    keys: &TenantKeys,
    ctx: &RequestContext,
    schema: &'s RowSchema,
    row: &StoredRow<'_>,
    partial: bool,
    withheld: &mut Vec<&'s Class>,
    found: &Found<'_, '_>,
    sealed_by: &mut [SealedBy],
) -> Result<Vec<Revealed>> {
    let fields = schema.fields();
    let mut values: Vec<Revealed> = Vec::with_capacity(fields.len());
    for (i, f) in fields.iter().enumerate() {
        let stored = row.fields[i];
        if !f.is_envelope() {
            values.push(open_deterministic(
                keys,
                ctx,
                f,
                stored,
                schema.table(),
                partial,
                withheld,
            )?);
            continue;
        }
        let listing = if found.standard {
            schema.field_key_class(i).map(|k| (k, false, true))
        } else {
            listing_of(found.listed, f)
        };
        // A field found under another class (sealed before a reclassification) needs the
        // readers of both: moving it to a stricter class restricts old rows at once.
        if let Some((_, _, false)) = listing
            && !keys.policy(&f.class)?.may_read(ctx.roles())
        {
            if !partial {
                return Err(Error::AccessDenied {
                    class: f.class.to_string(),
                });
            }
            if !withheld.contains(&&f.class) {
                withheld.push(&f.class);
            }
            values.push(Revealed::Withheld);
            continue;
        }
        let readable = |k: usize| found.listed[k].as_ref().is_some_and(|l| l.readable);
        let value = match (listing, stored) {
            (None, None) => Revealed::Null,
            (None, Some(_)) if found.present == 0 => {
                return Err(Error::MissingKeyColumn {
                    column: f.column.clone(),
                });
            }
            (None, Some(_)) => return Err(Error::Tampered),
            (Some((k, _, _)), _) if !readable(k) => Revealed::Withheld,
            (Some((_, true, _)), None) => Revealed::Null,
            (Some((k, false, own)), Some(_)) => {
                sealed_by[i] = u16::try_from(k).ok().map(|k| (k, own));
                Revealed::Null // opened in step 3
            }
            // NULL where a value was sealed, or a value where NULL was: tampering.
            (Some(_), _) => return Err(Error::Tampered),
        };
        values.push(value);
    }
    Ok(values)
}

/// Step 3 of unsealing: per readable key column, unwraps its DEK (always, so a tampered key
/// column fails even when all its fields are NULL) and opens the fields it seals.
fn open_fields(
    keys: &TenantKeys,
    schema: &RowSchema,
    plan: &Plan,
    row: &StoredRow<'_>,
    found: &Found<'_, '_>,
    sealed_by: &[SealedBy],
    values: &mut [Revealed],
) -> Result<()> {
    // A standard row has exactly the key columns a seal writes: the sealed class set.
    let class_set = if found.standard {
        std::borrow::Cow::Borrowed(schema.sealed_class_set())
    } else {
        schema.present_class_set(row.key_columns)
    };
    let sealed_class_set = matches!(class_set, std::borrow::Cow::Borrowed(_));
    let mut time = RowTime::default();
    // Taken from the thread's reusable buffer only if a row needs to build associated data.
    let mut scratch = Vec::new();
    for (k, l) in found
        .listed
        .iter()
        .enumerate()
        .filter_map(|(k, l)| Some((k, l.as_ref()?)))
        .filter(|(_, l)| l.readable)
    {
        let gcm = match &l.source {
            Source::Withheld => continue,
            Source::Classic(dek) => GcmKey::new(dek),
            Source::Kek(kc) => {
                let kek = keys
                    .kek(kc.kek_id, kc.kek_version)
                    .ok_or_else(|| keys.missing_kek(kc.kek_id, kc.kek_version))?;
                let aad = plan.dek_aad(
                    k,
                    (kc.kek_id, kc.kek_version),
                    row.row_id,
                    l.full && sealed_class_set,
                    (kc.list_bytes, &class_set),
                    l.write_id.as_ref(),
                    &mut scratch,
                );
                // Decrypted in place in the key that is used: one copy to wipe.
                let mut dek = SecretKey::from_bytes(kc.encrypted_dek);
                kek.with_at(&mut time, |key| {
                    key.open(&kc.nonce, aad, dek.expose_secret_mut(), &kc.tag)
                })??;
                GcmKey::new(&dek)
            }
        };
        for (i, by) in sealed_by.iter().enumerate() {
            match by {
                Some((by, own)) if usize::from(*by) == k => {
                    let opened = open_field(
                        keys,
                        schema,
                        plan,
                        row,
                        l.class,
                        i,
                        *own,
                        &gcm,
                        &mut scratch,
                    )?;
                    values[i] = opened;
                }
                _ => continue,
            }
        }
    }
    give_back_aad_buffer(scratch);
    Ok(())
}

/// Opens field `i` of the row with its key column's DEK.
#[allow(clippy::too_many_arguments)]
fn open_field(
    keys: &TenantKeys,
    schema: &RowSchema,
    plan: &Plan,
    row: &StoredRow<'_>,
    class: &Class,
    i: usize,
    own: bool,
    gcm: &GcmKey,
    scratch: &mut Vec<u8>,
) -> Result<Revealed> {
    let Some(bytes) = row.fields[i] else {
        return Err(Error::Tampered);
    };
    let fc = field::parse(bytes)?;
    // A field found under another class's key column (reclassified) needs its own prefix.
    let aad = if own {
        plan.field_aad(i, fc.flags, row.row_id, scratch)
    } else {
        let other = field_aad_prefix(schema.table(), &schema.fields()[i].column, class.as_str());
        let buf = if scratch.capacity() == 0 {
            take_aad_buffer()
        } else {
            std::mem::take(scratch)
        };
        *scratch = field_aad(buf, &other, keys.tenant.as_str(), fc.flags, row.row_id).into_buffer();
        &scratch[..]
    };
    // Decrypted in the buffer that is returned: one zeroizing owner throughout.
    let mut buf = SecretBytes::new(fc.body.to_vec());
    gcm.open(&fc.nonce, aad, buf.expose_secret_mut(), &fc.tag)?;
    Ok(
        match field::strip_inner(buf.expose_secret_mut(), fc.flags)? {
            None => Revealed::Null,
            Some(()) => Revealed::Value(buf),
        },
    )
}

fn open_deterministic<'s>(
    keys: &TenantKeys,
    ctx: &RequestContext,
    f: &'s FieldSpec,
    stored: Option<&[u8]>,
    table: &str,
    partial: bool,
    withheld: &mut Vec<&'s Class>,
) -> Result<Revealed> {
    let Some(bytes) = stored else {
        return Ok(Revealed::Null);
    };
    if !keys.policy(&f.class)?.may_read(ctx.roles()) {
        if !partial {
            return Err(Error::AccessDenied {
                class: f.class.to_string(),
            });
        }
        if !withheld.contains(&&f.class) {
            withheld.push(&f.class);
        }
        return Ok(Revealed::Withheld);
    }
    let version = search::deterministic_version(bytes)?;
    let key = keys.deterministic_key(table, &f.column, version)?;
    let plain = search::deterministic_decrypt(&key, keys.tenant.as_str(), table, &f.column, bytes)?;
    Ok(Revealed::Value(SecretBytes::new(plain.to_vec())))
}

/// The body of [`TenantKeys::blind_index_query`].
pub(crate) fn blind_index_query(
    keys: &TenantKeys,
    schema: &RowSchema,
    column: &str,
    plaintext: &[u8],
) -> Result<Vec<Vec<u8>>> {
    let f = schema
        .position(column)
        .map(|i| &schema.fields()[i])
        .ok_or_else(|| {
            Error::InvalidInput(format!(
                "table `{}` has no classified column `{column}`",
                schema.table()
            ))
        })?;
    let FieldSearch::BlindIndex(normalizer) = f.search else {
        return Err(Error::InvalidInput(format!(
            "column `{column}` has no blind index"
        )));
    };
    let normalised = normalizer.apply(plaintext)?;
    keys.index_roots
        .keys()
        .rev()
        .map(|&v| {
            Ok(
                search::blind_index(&*keys.index_key(schema.table(), column, v)?, v, &normalised)
                    .to_vec(),
            )
        })
        .collect()
}

/// The body of [`TenantKeys::deterministic_query`].
pub(crate) fn deterministic_query(
    keys: &TenantKeys,
    schema: &RowSchema,
    column: &str,
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let f = schema
        .position(column)
        .map(|i| &schema.fields()[i])
        .filter(|f| f.search == FieldSearch::Deterministic)
        .ok_or_else(|| Error::InvalidInput(format!("column `{column}` is not deterministic")))?;
    // A query reads: it takes the newest root the handle holds, so a newer root that did not
    // unwrap (forged) stops new values, not lookups of values sealed under the genuine one.
    let newest_loaded = keys.deterministic_roots.keys().next_back().copied();
    let version = newest_loaded.map_or_else(|| keys.current_deterministic_version(), Ok)?;
    let key = keys.deterministic_key(schema.table(), &f.column, version)?;
    search::deterministic_encrypt(
        &key,
        version,
        keys.tenant.as_str(),
        schema.table(),
        &f.column,
        plaintext,
    )
}

/// The body of [`TenantKeys::audit_delete`].
pub(crate) fn audit_delete(
    keys: &TenantKeys,
    schema: &RowSchema,
    deleted: &Result<usize>,
) -> Result<()> {
    audit(
        keys,
        &keys.ctx,
        schema,
        None,
        EventName::DataDelete,
        deleted,
        Touched::All,
    )
}

/// Emits the event of an operation; when the sink fails and a class involved is
/// fail-closed, the operation fails too.
pub(crate) fn audit<T>(
    keys: &TenantKeys,
    ctx: &RequestContext,
    schema: &RowSchema,
    row_id: Option<&RowId>,
    name: EventName,
    result: &Result<T>,
    touched: Touched,
) -> Result<()> {
    let outcome = match result {
        Ok(_) => Outcome::Success,
        Err(e) => Outcome::Failure {
            error: e.kind().to_string(),
        },
    };
    let shared = schema.shared();
    let (columns, classes): (Arc<[String]>, Arc<[String]>) = match touched {
        Touched::All => (Arc::clone(&shared.columns), Arc::clone(&shared.classes)),
        Touched::Some(columns, classes) => (columns.into(), classes.into()),
    };
    // Most tenants have no fail-closed class: then no per-class lookup.
    let fail_closed = result.is_ok()
        && keys.any_fail_closed
        && classes.iter().any(|c| {
            Class::new(c.as_str()).is_ok_and(|c| {
                keys.policy(&c)
                    .is_ok_and(|p| p.audit == AuditMode::FailClosed)
            })
        });
    let event = SecurityEvent::about(
        ctx,
        name,
        outcome,
        Some(Arc::clone(&shared.table)),
        row_id.map(record_label),
        columns,
        classes,
    );
    // The plaintext (or the write) goes out only after a fail-closed event is durable.
    if fail_closed {
        return keys
            .sink
            .emit_durable(event)
            .map_err(|e| Error::AuditFailClosed(e.to_string()));
    }
    // Not fail-closed: a sink that cannot take the event counts the loss itself. Stored
    // bytes that fail authentication go to the operator's sink as well as the tenant's.
    if matches!(result, Err(e) if e.is_tampered()) {
        let _ = keys.sink.emit_alert(event);
    } else {
        let _ = keys.sink.emit(event);
    }
    Ok(())
}

/// Which columns and classes an event names.
pub(crate) enum Touched {
    /// Every classified column and class of the schema.
    All,
    /// These.
    Some(Vec<String>, Vec<String>),
}

fn join(classes: &[&Class]) -> String {
    classes
        .iter()
        .map(|c| c.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// How a row id appears in events.
pub fn record_label(id: &RowId) -> String {
    match id {
        RowId::Int(v) => v.to_string(),
        RowId::Text(s) => s.clone(),
        RowId::Uuid(u) => {
            let h = crate::hex::encode(u);
            format!(
                "{}-{}-{}-{}-{}",
                &h[0..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..32]
            )
        }
    }
}

/// Bytes a key column takes for `columns` (for sizing database columns).
pub fn key_column_len<'a>(columns: impl IntoIterator<Item = &'a str>) -> usize {
    key_column::BOUND_LIST_OFFSET + columns.into_iter().map(|c| 1 + c.len()).sum::<usize>()
}

/// Bytes an envelope field ciphertext takes for a plaintext of `len` bytes, without padding
/// or hidden NULL.
pub const fn field_len(len: usize) -> usize {
    field::OVERHEAD + len
}

const _: () = assert!(field::OVERHEAD == 2 + NONCE_LEN + TAG_LEN);
