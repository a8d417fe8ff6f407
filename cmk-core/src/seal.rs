//! Sealing and unsealing rows with a key handle: synchronous CPU work, no I/O.
//!
//! Per row and class a fresh random DEK encrypts every field of the class (AES-256-GCM, one
//! ciphertext per field), and the class's active KEK wraps the DEK into the class's key
//! column. Associated data binds tenant, table, column, class, format version and the row id
//! when ids are application-assigned (docs/FORMAT.md). Any failure to authenticate is
//! [`Error::Tampered`]; the caller never receives wrong plaintext.

use zeroize::Zeroizing;

use crate::context::RequestContext;
use crate::crypto::aead::{GcmKey, NONCE_LEN, TAG_LEN};
use crate::crypto::{rng, search};
use crate::error::{Error, Result};
use crate::event::{EventName, Outcome, SecurityEvent};
use crate::format::aad::{Aad, RowId};
use crate::format::key_column::{self, ListedColumn};
use crate::format::{FORMAT_V1, field};
use crate::keys::TenantKeys;
use crate::policy::{AuditMode, Class, SearchMode};
use crate::schema::{FieldSearch, FieldSpec, RowSchema};
use crate::secret::{SecretBytes, SecretKey};

/// Largest plaintext of one field (16 MiB less overhead: a MySQL MEDIUMBLOB).
pub const MAX_VALUE_LEN: usize = (1 << 24) - 4096;

/// What the database stores for one row's classified part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedRow {
    /// One entry per [`RowSchema::key_classes`]; `None` for legacy-only classes.
    pub key_columns: Vec<Option<Vec<u8>>>,
    /// One entry per [`RowSchema::fields`]; `None` is SQL NULL.
    pub fields: Vec<Option<Vec<u8>>>,
    /// One entry per field: the blind index value for blind-indexed, non-NULL fields.
    pub indexes: Vec<Option<Vec<u8>>>,
}

/// A row as loaded from the database.
#[derive(Debug, Clone, Copy)]
pub struct StoredRow<'a> {
    /// The row's tenant column.
    pub tenant: &'a str,
    /// The row id, when ids are application-assigned (must be what sealing used).
    pub row_id: Option<&'a RowId>,
    /// One entry per [`RowSchema::key_classes`].
    pub key_columns: &'a [Option<&'a [u8]>],
    /// One entry per [`RowSchema::fields`].
    pub fields: &'a [Option<&'a [u8]>],
}

/// Plaintext values to seal for one row.
#[derive(Debug, Clone, Copy)]
pub struct RowValues<'a> {
    /// The row id, when ids are application-assigned.
    pub row_id: Option<&'a RowId>,
    /// One entry per [`RowSchema::fields`]; `None` is NULL.
    pub values: &'a [Option<&'a [u8]>],
}

/// One unsealed field.
#[derive(Debug, Clone, PartialEq, Eq)]
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
pub struct UnsealedRow {
    /// Values in field order.
    pub values: Vec<Revealed>,
}

fn field_aad(
    tenant: &str,
    table: &str,
    column: &str,
    class: &str,
    flags: u8,
    row_id: Option<&RowId>,
) -> Aad {
    Aad::new("cmk/field")
        .u8(FORMAT_V1)
        .u8(flags)
        .text(tenant)
        .text(table)
        .text(column)
        .text(class)
        .row_id(row_id)
}

#[allow(clippy::too_many_arguments)]
fn dek_aad(
    tenant: &str,
    table: &str,
    class: &str,
    kek_id: u32,
    kek_version: u32,
    row_id: Option<&RowId>,
    list: &[u8],
) -> Aad {
    Aad::new("cmk/dek")
        .u8(FORMAT_V1)
        .text(tenant)
        .text(table)
        .text(class)
        .u32(kek_id)
        .u32(kek_version)
        .row_id(row_id)
        .bytes(list)
}

/// How a field is sealed once the class policy is applied.
struct Effective {
    hide_null: bool,
    pad_to: u16,
}

impl TenantKeys {
    fn effective(&self, f: &FieldSpec) -> Result<Effective> {
        let policy = self.policy(&f.class)?;
        let needed = match f.search {
            FieldSearch::None => SearchMode::None,
            FieldSearch::BlindIndex(_) => SearchMode::BlindIndex,
            FieldSearch::Deterministic => SearchMode::Deterministic,
        };
        if needed > policy.search {
            return Err(Error::InvalidConfig(format!(
                "column `{}`: class `{}` does not allow {:?} search for tenant `{}`",
                f.column, f.class, needed, self.tenant
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

    fn check_context(&self, ctx: &RequestContext) -> Result<()> {
        self.check_tenant(ctx.tenant().as_str())
    }

    /// Seals one row. `values` follow [`RowSchema::fields`].
    pub fn seal(
        &self,
        ctx: &RequestContext,
        schema: &RowSchema,
        row_id: Option<&RowId>,
        values: &[Option<&[u8]>],
    ) -> Result<SealedRow> {
        let result = self.seal_inner(ctx, schema, row_id, values);
        let classes: Vec<&Class> = schema.classes();
        let columns = schema.fields().iter().map(|f| f.column.clone()).collect();
        self.audit(
            ctx,
            schema,
            row_id,
            EventName::DataEncrypt,
            &result,
            columns,
            &classes,
        )?;
        result
    }

    /// Seals many rows with the same keys; failures are reported per row, by position.
    pub fn seal_many(
        &self,
        ctx: &RequestContext,
        schema: &RowSchema,
        rows: &[RowValues<'_>],
    ) -> Vec<Result<SealedRow>> {
        rows.iter()
            .map(|r| self.seal(ctx, schema, r.row_id, r.values))
            .collect()
    }

    fn seal_inner(
        &self,
        ctx: &RequestContext,
        schema: &RowSchema,
        row_id: Option<&RowId>,
        values: &[Option<&[u8]>],
    ) -> Result<SealedRow> {
        self.check_context(ctx)?;
        let fields = schema.fields();
        if values.len() != fields.len() {
            return Err(Error::InvalidInput(format!(
                "table `{}` has {} classified fields but {} values were given",
                schema.table(),
                fields.len(),
                values.len()
            )));
        }
        let effective = fields
            .iter()
            .map(|f| self.effective(f))
            .collect::<Result<Vec<_>>>()?;
        if let Some(i) = values
            .iter()
            .position(|v| v.is_some_and(|v| v.len() > MAX_VALUE_LEN))
        {
            return Err(Error::InvalidInput(format!(
                "column `{}`: value exceeds {MAX_VALUE_LEN} bytes",
                fields[i].column
            )));
        }
        let tenant = self.tenant.as_str();
        let table = schema.table();
        let mut sealed_fields: Vec<Option<Vec<u8>>> = vec![None; fields.len()];
        let mut key_columns = Vec::with_capacity(schema.key_classes().len());

        for (k, class) in schema.key_classes().iter().enumerate() {
            let members = schema.members(k);
            if members.is_empty() {
                key_columns.push(None);
                continue;
            }
            let (kek_id, kek_version) = self.active_kek(class).ok_or_else(|| {
                Error::InvalidInput(format!(
                    "class `{class}` was not requested when the keys were fetched; add it to keys_for"
                ))
            })?;
            let kek = self
                .keks
                .get(&(kek_id, kek_version))
                .ok_or(Error::KeyUnavailable {
                    tenant: tenant.to_string(),
                    kek_id,
                    version: kek_version,
                })?;
            let dek = SecretKey::random()?;
            let gcm = GcmKey::new(&dek);
            let list = key_column::encode_list(members.iter().map(|&i| {
                let f = &fields[i];
                (
                    f.column.as_str(),
                    values[i].is_none() && !effective[i].hide_null,
                )
            }))?;
            for &i in members {
                let f = &fields[i];
                let eff = &effective[i];
                if values[i].is_none() && !eff.hide_null {
                    continue;
                }
                let flags = if eff.pad_to > 0 {
                    field::FLAG_PADDED
                } else {
                    0
                } | if eff.hide_null {
                    field::FLAG_PRESENCE
                } else {
                    0
                };
                let nonce: [u8; NONCE_LEN] = rng::array()?;
                let mut out =
                    Vec::with_capacity(field::OVERHEAD + values[i].map_or(1, <[u8]>::len) + 1);
                out.push(FORMAT_V1);
                out.push(flags);
                out.extend_from_slice(&nonce);
                field::inner_plaintext(&mut out, values[i], flags, eff.pad_to);
                let aad = field_aad(tenant, table, &f.column, class.as_str(), flags, row_id);
                let tag = gcm.seal(&nonce, aad.as_bytes(), &mut out[field::HEADER_LEN..]);
                out.extend_from_slice(&tag);
                sealed_fields[i] = Some(out);
            }
            let nonce: [u8; NONCE_LEN] = rng::array()?;
            let mut encrypted = Zeroizing::new(*dek.expose_secret());
            let aad = dek_aad(
                tenant,
                table,
                class.as_str(),
                kek_id,
                kek_version,
                row_id,
                &list,
            );
            let tag = kek.key.seal(&nonce, aad.as_bytes(), &mut encrypted[..]);
            key_columns.push(Some(key_column::build(
                kek_id,
                kek_version,
                &nonce,
                &encrypted,
                &tag,
                &list,
            )));
        }

        let mut indexes: Vec<Option<Vec<u8>>> = vec![None; fields.len()];
        for (i, f) in fields.iter().enumerate() {
            let Some(value) = values[i] else { continue };
            match f.search {
                FieldSearch::None => {}
                FieldSearch::BlindIndex(normalizer) => {
                    let normalised = normalizer.apply(value)?;
                    let version = self.current_index_version()?;
                    let key = self.index_key(table, &f.column, version)?;
                    indexes[i] = Some(search::blind_index(&key, version, &normalised).to_vec());
                    if let std::borrow::Cow::Owned(mut o) = normalised {
                        zeroize::Zeroize::zeroize(&mut o);
                    }
                }
                FieldSearch::Deterministic => {
                    let version = self.current_deterministic_version()?;
                    let key = self.deterministic_key(table, &f.column, version)?;
                    sealed_fields[i] = Some(search::deterministic_encrypt(
                        &key, version, tenant, table, &f.column, value,
                    )?);
                }
            }
        }
        Ok(SealedRow {
            key_columns,
            fields: sealed_fields,
            indexes,
        })
    }

    /// Unseals one row; fails with [`Error::AccessDenied`] if the actor may not read a class
    /// the row holds.
    pub fn unseal(
        &self,
        ctx: &RequestContext,
        schema: &RowSchema,
        row: &StoredRow<'_>,
    ) -> Result<UnsealedRow> {
        self.unseal_with(ctx, schema, row, false)
    }

    /// Unseals what the actor may read and marks the other fields [`Revealed::Withheld`].
    pub fn unseal_partial(
        &self,
        ctx: &RequestContext,
        schema: &RowSchema,
        row: &StoredRow<'_>,
    ) -> Result<UnsealedRow> {
        self.unseal_with(ctx, schema, row, true)
    }

    /// Unseals many rows with the same keys; failures are reported per row, by position.
    pub fn unseal_many(
        &self,
        ctx: &RequestContext,
        schema: &RowSchema,
        rows: &[StoredRow<'_>],
    ) -> Vec<Result<UnsealedRow>> {
        rows.iter().map(|r| self.unseal(ctx, schema, r)).collect()
    }

    fn unseal_with(
        &self,
        ctx: &RequestContext,
        schema: &RowSchema,
        row: &StoredRow<'_>,
        partial: bool,
    ) -> Result<UnsealedRow> {
        let mut withheld: Vec<&Class> = Vec::new();
        let result = self.unseal_inner(ctx, schema, row, partial, &mut withheld);
        if !withheld.is_empty() || matches!(result, Err(Error::AccessDenied { .. })) {
            let denied: Result<()> = match &result {
                Err(e @ Error::AccessDenied { .. }) => Err(e.clone()),
                _ => Err(Error::AccessDenied {
                    class: withheld
                        .iter()
                        .map(|c| c.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                }),
            };
            let columns = schema
                .fields()
                .iter()
                .zip(
                    &result
                        .as_ref()
                        .map(|r| r.values.clone())
                        .unwrap_or_default(),
                )
                .filter(|(_, v)| matches!(v, Revealed::Withheld))
                .map(|(f, _)| f.column.clone())
                .collect();
            self.audit(
                ctx,
                schema,
                row.row_id,
                EventName::DataDenyAccess,
                &denied,
                columns,
                &withheld,
            )?;
            if result.is_err() {
                return result;
            }
        }
        let read: Vec<&Class> = schema
            .classes()
            .into_iter()
            .filter(|c| !withheld.contains(c))
            .collect();
        let columns = schema
            .fields()
            .iter()
            .filter(|f| !withheld.contains(&&f.class))
            .map(|f| f.column.clone())
            .collect();
        self.audit(
            ctx,
            schema,
            row.row_id,
            EventName::DataDecrypt,
            &result,
            columns,
            &read,
        )?;
        result
    }

    fn unseal_inner<'s>(
        &self,
        ctx: &RequestContext,
        schema: &'s RowSchema,
        row: &StoredRow<'_>,
        partial: bool,
        withheld: &mut Vec<&'s Class>,
    ) -> Result<UnsealedRow> {
        self.check_context(ctx)?;
        self.check_tenant(row.tenant)?;
        let fields = schema.fields();
        if row.key_columns.len() != schema.key_classes().len() || row.fields.len() != fields.len() {
            return Err(Error::InvalidInput(format!(
                "table `{}` expects {} key columns and {} fields",
                schema.table(),
                schema.key_classes().len(),
                fields.len()
            )));
        }
        let tenant = self.tenant.as_str();
        let table = schema.table();

        // Open every key column first: class check, reader check, DEK unwrap.
        struct Opened<'b> {
            class: &'b Class,
            columns: Vec<ListedColumn<'b>>,
            dek: Option<GcmKey>, // None: withheld
        }
        let mut opened: Vec<Opened<'_>> = Vec::new();
        for (k, class) in schema.key_classes().iter().enumerate() {
            let Some(bytes) = row.key_columns[k] else {
                continue;
            };
            let kc = key_column::parse(bytes)?;
            if kc.version < self.min_format_version {
                return Err(Error::FormatTooOld {
                    found: kc.version,
                    minimum: self.min_format_version,
                });
            }
            if kc.kek_id != crate::registry::kek_id(class.as_str()) {
                return Err(Error::Tampered);
            }
            let kek = self
                .keks
                .get(&(kc.kek_id, kc.kek_version))
                .ok_or_else(|| self.missing_kek(kc.kek_id, kc.kek_version))?;
            if kek.class != *class {
                return Err(Error::Tampered);
            }
            if !self.policy(class)?.may_read(ctx.roles()) {
                if !partial {
                    return Err(Error::AccessDenied {
                        class: class.to_string(),
                    });
                }
                withheld.push(class);
                opened.push(Opened {
                    class,
                    columns: kc.columns,
                    dek: None,
                });
                continue;
            }
            let aad = dek_aad(
                tenant,
                table,
                class.as_str(),
                kc.kek_id,
                kc.kek_version,
                row.row_id,
                kc.list_bytes,
            );
            let mut dek = Zeroizing::new(kc.encrypted_dek);
            kek.key
                .open(&kc.nonce, aad.as_bytes(), &mut dek[..], &kc.tag)?;
            let dek = GcmKey::new(&SecretKey::from_bytes(*dek));
            opened.push(Opened {
                class,
                columns: kc.columns,
                dek: Some(dek),
            });
        }

        let mut values = Vec::with_capacity(fields.len());
        for (i, f) in fields.iter().enumerate() {
            let stored = row.fields[i];
            if !f.is_envelope() {
                values.push(self.open_deterministic(ctx, f, stored, table, partial, withheld)?);
                continue;
            }
            // The key column of the field's current class wins; otherwise the one that
            // recorded it before a reclassification. No trial decryption.
            let listing = |o: &Opened<'_>| {
                o.columns
                    .iter()
                    .find(|c| c.name == f.column)
                    .map(|c| c.null)
            };
            let found = opened
                .iter()
                .filter(|o| *o.class == f.class)
                .chain(opened.iter().filter(|o| *o.class != f.class))
                .find_map(|o| listing(o).map(|null| (o, null)));
            let Some((o, listed_null)) = found else {
                match (stored, opened.is_empty()) {
                    (None, _) => values.push(Revealed::Null),
                    (Some(_), true) => {
                        return Err(Error::MissingKeyColumn {
                            column: f.column.clone(),
                        });
                    }
                    (Some(_), false) => return Err(Error::Tampered),
                }
                continue;
            };
            let Some(dek) = &o.dek else {
                values.push(Revealed::Withheld);
                continue;
            };
            match (stored, listed_null) {
                (None, true) => values.push(Revealed::Null),
                (Some(bytes), false) => {
                    let fc = field::parse(bytes)?;
                    let aad = field_aad(
                        tenant,
                        table,
                        &f.column,
                        o.class.as_str(),
                        fc.flags,
                        row.row_id,
                    );
                    let mut buf = fc.body.to_vec();
                    dek.open(&fc.nonce, aad.as_bytes(), &mut buf, &fc.tag)?;
                    let mut buf = Zeroizing::new(buf);
                    match field::strip_inner(&mut buf, fc.flags)? {
                        None => values.push(Revealed::Null),
                        Some(()) => values
                            .push(Revealed::Value(SecretBytes::new(std::mem::take(&mut *buf)))),
                    }
                }
                // NULL where a value was sealed, or a value where NULL was: tampering.
                _ => return Err(Error::Tampered),
            }
        }
        Ok(UnsealedRow { values })
    }

    fn open_deterministic<'s>(
        &self,
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
        if !self.policy(&f.class)?.may_read(ctx.roles()) {
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
        let key = self.deterministic_key(table, &f.column, version)?;
        let plain =
            search::deterministic_decrypt(&key, self.tenant.as_str(), table, &f.column, bytes)?;
        Ok(Revealed::Value(SecretBytes::new(plain.to_vec())))
    }

    /// Blind index values that match `plaintext` in `column`, one per loaded index-root
    /// version, newest first: query with `IN (...)` so rows indexed before a root rotation
    /// still match. The caller must also constrain the tenant column.
    pub fn blind_index_query(
        &self,
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
        self.index_roots
            .keys()
            .rev()
            .map(|&v| {
                Ok(search::blind_index(
                    &*self.index_key(schema.table(), column, v)?,
                    v,
                    &normalised,
                )
                .to_vec())
            })
            .collect()
    }

    /// The deterministic value of `plaintext` in `column` under the current root, for
    /// equality queries. The caller must also constrain the tenant column.
    pub fn deterministic_query(
        &self,
        schema: &RowSchema,
        column: &str,
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        let f = schema
            .position(column)
            .map(|i| &schema.fields()[i])
            .filter(|f| f.search == FieldSearch::Deterministic)
            .ok_or_else(|| {
                Error::InvalidInput(format!("column `{column}` is not deterministic"))
            })?;
        let version = self.current_deterministic_version()?;
        let key = self.deterministic_key(schema.table(), &f.column, version)?;
        search::deterministic_encrypt(
            &key,
            version,
            self.tenant.as_str(),
            schema.table(),
            &f.column,
            plaintext,
        )
    }

    /// Emits the event of an operation; when the sink fails and a class involved is
    /// fail-closed, the operation fails too.
    #[allow(clippy::too_many_arguments)]
    fn audit<T>(
        &self,
        ctx: &RequestContext,
        schema: &RowSchema,
        row_id: Option<&RowId>,
        name: EventName,
        result: &Result<T>,
        columns: Vec<String>,
        classes: &[&Class],
    ) -> Result<()> {
        let outcome = match result {
            Ok(_) => Outcome::Success,
            Err(e) => Outcome::Failure {
                error: e.kind().to_string(),
            },
        };
        let event = SecurityEvent::new(ctx, name, outcome)
            .with_table(schema.table())
            .with_record(row_id.map(record_label))
            .with_fields(columns, classes.iter().map(|c| c.to_string()).collect());
        match self.sink.emit(event) {
            Ok(()) => Ok(()),
            Err(e) => {
                let fail_closed = classes.iter().any(|c| {
                    self.policy(c)
                        .is_ok_and(|p| p.audit == AuditMode::FailClosed)
                });
                if fail_closed && result.is_ok() {
                    Err(Error::AuditFailClosed(e.to_string()))
                } else {
                    Ok(())
                }
            }
        }
    }
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
    key_column::LIST_OFFSET + columns.into_iter().map(|c| 1 + c.len()).sum::<usize>()
}

/// Bytes an envelope field ciphertext takes for a plaintext of `len` bytes, without padding
/// or hidden NULL.
pub const fn field_len(len: usize) -> usize {
    field::OVERHEAD + len
}

const _: () = assert!(field::OVERHEAD == 2 + NONCE_LEN + TAG_LEN);
