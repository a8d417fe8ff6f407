//! KEK retirement of one row: the DEK in a key column re-wrapped under the class's active KEK,
//! its field ciphertexts untouched.

use std::sync::Arc;

use crate::audit::event::EventName;
use crate::error::{Error, Result};
use crate::format::key_column;
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
    let ctx = &keys.ctx;
    let result = rekey_inner(keys, ctx, schema, key_class, row);
    if !matches!(result, Ok(None)) {
        let class = schema
            .key_classes()
            .get(key_class)
            .map(|c| c.to_string())
            .into_iter()
            .collect();
        let touched = crate::rows::seal::Touched::Some(Vec::new(), class);
        crate::rows::seal::audit(
            keys,
            ctx,
            schema,
            row.row_id,
            EventName::DataRekey,
            &result,
            touched,
        )?;
    }
    result
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
    let old = keys
        .kek(kc.kek_id, kc.kek_version)
        .ok_or_else(|| keys.missing_kek(kc.kek_id, kc.kek_version))?;
    let new = keys
        .kek(active_id, active_version)
        .ok_or_else(|| keys.missing_kek(active_id, active_version))?;
    let tenant = keys.tenant.as_str();
    let prefix = schema.dek_aad_prefix(key_class);
    let class_set = schema.present_class_set(row.key_columns);
    let aad_for = |version: u32| {
        crate::rows::aad::dek_aad(
            Vec::new(),
            prefix,
            tenant,
            (kc.kek_id, version),
            row.row_id,
            kc.list_bytes,
            &class_set,
        )
    };
    let mut dek = zeroize::Zeroizing::new(kc.encrypted_dek);
    old.with(|k| {
        k.open(
            &kc.nonce,
            aad_for(kc.kek_version).as_bytes(),
            &mut dek[..],
            &kc.tag,
        )
    })??;
    let nonce: [u8; 12] = crate::crypto::rng::array()?;
    let tag = new.with(|k| k.seal(&nonce, aad_for(active_version).as_bytes(), &mut dek[..]))??;
    new.lease.count_wrap();
    let mut encrypted = [0u8; 32];
    encrypted.copy_from_slice(&dek[..]);
    Ok(Some(key_column::build(
        active_id,
        active_version,
        &nonce,
        &encrypted,
        &tag,
        kc.list_bytes,
    )))
}
