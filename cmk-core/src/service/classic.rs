//! Classic mode (policy `lease = none`): every DEK is wrapped by the tenant's KMS itself, one
//! KMS call per row access, so that every access appears in the tenant's own KMS log. Exempt
//! from the batch and size promises: a classic key column holds the KMS's wrapped blob (65
//! bytes for the local KMS, about 180 for AWS) and each row costs a KMS round trip.
//!
//! Classes that are leased are sealed as usual in the same call.

use crate::crypto::secret::SecretKey;
use crate::error::{Error, Result};
use crate::format::aad::RowId;
use crate::format::key_column;
use crate::keys::registry::kek_id;
use crate::kms::KmsContext;
use crate::rows::aad::dek_aad;
use crate::rows::schema::RowSchema;
use crate::rows::seal::{ClassicDek, SealedRow, StoredRow, UnsealedRow};
use crate::service::Cmk;
use crate::tenant::context::RequestContext;

/// A classic DEK wrap's KMS context: its associated data, and readable pairs that name the
/// tenant, table and class in the tenant's own KMS log.
fn dek_context(
    aad: crate::format::aad::Aad,
    tenant: &str,
    schema: &RowSchema,
    class: &crate::tenant::policy::Class,
) -> KmsContext {
    KmsContext::new(aad)
        .with("cmk:purpose", "dek")
        .with("cmk:tenant", tenant)
        .with("cmk:table", schema.table())
        .with("cmk:class", class.as_str())
}

fn schema_classes(schema: &RowSchema) -> Vec<String> {
    schema.classes().iter().map(|c| c.to_string()).collect()
}

/// The body of [`Cmk::seal_classic`].
pub(crate) async fn seal_classic(
    cmk: &Cmk,
    ctx: &RequestContext,
    schema: &RowSchema,
    row_id: Option<&RowId>,
    values: &[Option<&[u8]>],
) -> Result<SealedRow> {
    let keys = cmk.keys_for(ctx, &schema_classes(schema)).await?;
    schema.check_values(values.len())?;
    let tenant = ctx.tenant();
    // The write id of every key column of this row (docs/FORMAT.md §4).
    let write_id: key_column::WriteId = crate::crypto::rng::array()?;
    let mut classic = Vec::new();
    for (k, class) in schema.key_classes().iter().enumerate() {
        if !keys.classic_classes().contains(class) || schema.members(k).is_empty() {
            continue;
        }
        let policy = keys.config().policy(class)?;
        let list = crate::rows::seal::column_list(&keys, schema, k, values)?;
        let id = kek_id(class.as_str());
        let aad = dek_aad(
            Vec::new(),
            schema.dek_aad_prefix(k),
            tenant.as_str(),
            (id, 0),
            row_id,
            &list,
            schema.sealed_class_set(),
            Some(&write_id),
        );
        let context = dek_context(aad, tenant.as_str(), schema, class);
        let dek = SecretKey::random()?;
        let blob = cmk
            .kms
            .wrap(&policy.kms_key, dek.expose_secret(), &context)
            .await
            .map_err(|e| cmk.kms_error(ctx, &policy.kms_key, e))?;
        let key_column = key_column::build_classic(id, &blob, Some(&write_id), &list)?;
        classic.push(ClassicDek {
            k,
            dek,
            key_column: Some(key_column),
        });
    }
    crate::rows::seal::seal_classic_inner(
        &keys,
        ctx,
        schema,
        row_id,
        values,
        (&classic, Some(&write_id)),
    )
}

/// The body of [`Cmk::unseal_classic`].
pub(crate) async fn unseal_classic(
    cmk: &Cmk,
    ctx: &RequestContext,
    schema: &RowSchema,
    row: &StoredRow<'_>,
) -> Result<UnsealedRow> {
    let keys = cmk.keys_for(ctx, &schema_classes(schema)).await?;
    if row.tenant != ctx.tenant().as_str() {
        return Err(Error::TenantMismatch {
            expected: ctx.tenant().to_string(),
            found: row.tenant.to_string(),
        });
    }
    let mut classic = Vec::new();
    for (k, class) in schema.key_classes().iter().enumerate() {
        let Some(bytes) = row.key_columns.get(k).copied().flatten() else {
            continue;
        };
        if !key_column::is_classic(bytes) {
            continue;
        }
        let policy = keys.config().policy(class)?;
        if !policy.may_read(ctx.roles()) {
            continue; // refused or withheld by the synchronous step, without a KMS call
        }
        let ckc = key_column::parse_classic(bytes)?;
        let aad = dek_aad(
            Vec::new(),
            schema.dek_aad_prefix(k),
            ctx.tenant().as_str(),
            (ckc.kek_id, 0),
            row.row_id,
            ckc.list_bytes,
            &schema.present_class_set(row.key_columns),
            ckc.write_id.as_ref(),
        );
        let context = dek_context(aad, ctx.tenant().as_str(), schema, class);
        let dek = cmk
            .kms
            .unwrap(&policy.kms_key, ckc.blob, &context)
            .await
            .map_err(|e| cmk.kms_error(ctx, &policy.kms_key, e))?;
        let dek = SecretKey::from_slice(dek.expose_secret()).ok_or(Error::Tampered)?;
        classic.push(ClassicDek {
            k,
            dek,
            key_column: None,
        });
    }
    crate::rows::seal::unseal_with(&keys, ctx, schema, row, false, &classic)
}
