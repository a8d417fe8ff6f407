//! KEK retirement of one row: the DEK in a key column re-wrapped under the class's active KEK,
//! its field ciphertexts untouched.

use std::sync::Arc;

use crate::audit::event::EventName;
use crate::error::{Error, Result};
use crate::format::aad::RowId;
use crate::format::key_column::{self, WriteId};
use crate::rows::handle::TenantKeys;
use crate::rows::schema::RowSchema;
use crate::rows::seal::StoredRow;
use crate::tenant::context::RequestContext;
use crate::tenant::policy::kek_id;

/// The body of [`TenantKeys::rekey_key_column`].
pub(crate) fn rekey_key_column(
    keys: &Arc<TenantKeys>,
    schema: &RowSchema,
    key_class: usize,
    row: &StoredRow<'_>,
) -> Result<Option<Vec<u8>>> {
    let result = rekey_inner(keys, &keys.ctx, schema, key_class, row);
    if !matches!(result, Ok(None)) {
        let class = schema.key_classes().get(key_class).map(|c| c.to_string());
        audit_rekey(keys, schema, row, class.into_iter().collect(), &result)?;
    }
    result
}

/// Every key column of `row` not under its class's active KEK, re-wrapped (`None` where a
/// column is NULL or current), with one `DATA_REKEY` event naming the classes re-wrapped.
pub(crate) fn rekey_key_columns(
    keys: &Arc<TenantKeys>,
    schema: &RowSchema,
    row: &StoredRow<'_>,
) -> Result<Vec<Option<Vec<u8>>>> {
    let result: Result<Vec<Option<Vec<u8>>>> = (0..schema.key_classes().len())
        .map(|k| rekey_inner(keys, &keys.ctx, schema, k, row))
        .collect();
    let classes = schema.key_classes().iter();
    let rewrapped: Vec<String> = match &result {
        Ok(columns) => columns
            .iter()
            .zip(classes)
            .filter(|(c, _)| c.is_some())
            .map(|(_, class)| class.to_string())
            .collect(),
        Err(_) => classes.map(|c| c.to_string()).collect(),
    };
    if !rewrapped.is_empty() {
        audit_rekey(keys, schema, row, rewrapped, &result)?;
    }
    result
}

/// The `DATA_REKEY` event of a row whose `classes` were re-wrapped (or failed).
fn audit_rekey<T>(
    keys: &Arc<TenantKeys>,
    schema: &RowSchema,
    row: &StoredRow<'_>,
    classes: Vec<String>,
    result: &Result<T>,
) -> Result<()> {
    let touched = crate::rows::seal::Touched::Some(Vec::new(), classes);
    crate::rows::seal::audit(
        keys,
        &keys.ctx,
        schema,
        row.row_id,
        EventName::DataRekey,
        result,
        touched,
    )
}

fn rekey_inner(
    keys: &Arc<TenantKeys>,
    ctx: &RequestContext,
    schema: &RowSchema,
    key_class: usize,
    row: &StoredRow<'_>,
) -> Result<Option<Vec<u8>>> {
    keys.check_tenant(ctx.tenant().as_str())?;
    keys.check_tenant(row.tenant)?;
    let class = schema.key_classes().get(key_class).ok_or_else(|| {
        Error::InvalidInput(format!(
            "table `{}` has no key class {key_class}",
            schema.table()
        ))
    })?;
    let Some(bytes) = row.key_columns.get(key_class).copied().flatten() else {
        return Ok(None);
    };
    let kc = key_column::parse(bytes)?;
    if kc.kek_id != kek_id(class.as_str()) {
        return Err(Error::Tampered);
    }
    let (active_id, active_version) = keys.active_kek(class).ok_or_else(|| {
        Error::InvalidInput(format!(
            "class `{class}` was not requested when the keys were fetched"
        ))
    })?;
    if (kc.kek_id, kc.kek_version) == (active_id, active_version) {
        return Ok(None);
    }
    let class_set = schema.present_class_set(row.key_columns);
    let from = Wrap {
        kek: (kc.kek_id, kc.kek_version),
        class_set: &class_set,
        write_id: kc.write_id.as_ref(),
    };
    let to = Wrap {
        kek: (active_id, active_version),
        ..from
    };
    rewrap(keys, schema, key_class, row.row_id, &kc, from, to).map(Some)
}

/// What a DEK wrap binds beside the schema, the tenant, the row id and the column list.
#[derive(Clone, Copy)]
struct Wrap<'a> {
    kek: (u32, u32),
    /// The classes of the row that have a key column.
    class_set: &'a [u8],
    write_id: Option<&'a WriteId>,
}

/// The key column `kc` (of key class `k`) opened under `from` and wrapped again under `to`
/// with a fresh nonce; its column list is kept and no field is touched.
fn rewrap(
    keys: &TenantKeys,
    schema: &RowSchema,
    k: usize,
    row_id: Option<&RowId>,
    kc: &key_column::ParsedKeyColumn<'_>,
    from: Wrap<'_>,
    to: Wrap<'_>,
) -> Result<Vec<u8>> {
    let old = keys
        .kek(from.kek.0, from.kek.1)
        .ok_or_else(|| keys.missing_kek(from.kek.0, from.kek.1))?;
    let new = keys
        .kek(to.kek.0, to.kek.1)
        .ok_or_else(|| keys.missing_kek(to.kek.0, to.kek.1))?;
    let aad_for = |w: &Wrap<'_>| {
        crate::rows::aad::dek_aad(
            Vec::new(),
            schema.dek_aad_prefix(k),
            keys.tenant.as_str(),
            w.kek,
            row_id,
            kc.list_bytes,
            w.class_set,
            w.write_id,
        )
    };
    let mut dek = zeroize::Zeroizing::new(kc.encrypted_dek);
    old.with(|key| key.open(&kc.nonce, aad_for(&from).as_bytes(), &mut dek[..], &kc.tag))??;
    let nonce: [u8; 12] = crate::crypto::rng::array()?;
    let tag = new.with(|key| key.seal(&nonce, aad_for(&to).as_bytes(), &mut dek[..]))??;
    new.lease.count_wrap();
    let mut encrypted = [0u8; 32];
    encrypted.copy_from_slice(&dek[..]);
    Ok(key_column::build(
        to.kek.0,
        to.kek.1,
        &nonce,
        &encrypted,
        &tag,
        to.write_id,
        kc.list_bytes,
    ))
}

/// The body of [`TenantKeys::carry_key_column`]: key class `k`'s key column of `old`
/// re-wrapped into the write whose fresh key columns are `fresh` (same write id, same KEK
/// version), so a class an update did not change keeps its DEK and ciphertexts.
pub(crate) fn carry_key_column(
    keys: &TenantKeys,
    schema: &RowSchema,
    k: usize,
    old: &StoredRow<'_>,
    fresh: &[Option<&[u8]>],
) -> Result<Vec<u8>> {
    keys.check_tenant(old.tenant)?;
    let class = schema.key_classes().get(k).ok_or_else(|| {
        Error::InvalidInput(format!("table `{}` has no key class {k}", schema.table()))
    })?;
    let cannot = || {
        Error::InvalidInput(format!(
            "class `{class}` of table `{}` cannot keep its stored key column",
            schema.table()
        ))
    };
    let (Some(old_bytes), Some(new_bytes)) = (
        old.key_columns.get(k).copied().flatten(),
        fresh.get(k).copied().flatten(),
    ) else {
        return Err(cannot());
    };
    let (kc, target) = (key_column::parse(old_bytes)?, key_column::parse(new_bytes)?);
    if kc.kek_id != kek_id(class.as_str()) || target.kek_id != kc.kek_id {
        return Err(Error::Tampered);
    }
    if kc.list_bytes != target.list_bytes || fresh.len() != old.key_columns.len() {
        return Err(cannot());
    }
    let (old_set, new_set) = (
        schema.present_class_set(old.key_columns),
        schema.present_class_set(fresh),
    );
    let from = Wrap {
        kek: (kc.kek_id, kc.kek_version),
        class_set: &old_set,
        write_id: kc.write_id.as_ref(),
    };
    let to = Wrap {
        kek: (target.kek_id, target.kek_version),
        class_set: &new_set,
        write_id: target.write_id.as_ref(),
    };
    rewrap(keys, schema, k, old.row_id, &kc, from, to)
}
