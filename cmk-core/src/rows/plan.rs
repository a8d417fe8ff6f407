//! Plans: what sealing and unsealing rows of one schema for one tenant computes the same way
//! for every row, computed once and reused: each field's sealing settings under the tenant's
//! policies, each key class's policy, and the associated data of a row without an
//! application-assigned id (the common case with database-assigned keys).
//!
//! A [`PlanCache`] belongs to one tenant view (one tenant configuration and one set of key
//! versions) and is shared by every key handle built from that view, so a request that
//! seals or unseals a single row pays for a plan only the first time its schema is seen.
//! A cached value is used only where it equals what the row would build: a row with an id,
//! other flags, another KEK version or another column list builds its associated data as
//! before ([`crate::rows::seal`] checks which).

use std::sync::{Arc, RwLock, RwLockReadGuard};

use crate::error::Result;
use crate::format::aad::{Aad, RowId};
use crate::format::field;
use crate::format::key_column::WriteId;
use crate::rows::aad::{dek_aad_tail, field_aad_tail};
use crate::rows::handle::TenantKeys;
use crate::rows::schema::RowSchema;
use crate::tenant::policy::Policy;

/// Schemas built at run time (not from the derive's statics) must not grow a cache without
/// bound: past this many plans the cache starts over.
const MAX_PLANS: usize = 64;

/// How a field is sealed once the class policy is applied.
#[derive(Clone, Copy, Default)]
pub(crate) struct Effective {
    pub(crate) hide_null: bool,
    pub(crate) pad_to: u16,
}

impl Effective {
    /// The flags byte of the field's ciphertexts.
    pub(crate) fn flags(self) -> u8 {
        (if self.pad_to > 0 {
            field::FLAG_PADDED
        } else {
            0
        }) | if self.hide_null {
            field::FLAG_PRESENCE
        } else {
            0
        }
    }
}

/// The plans of one tenant view, by schema.
#[derive(Default)]
pub(crate) struct PlanCache {
    plans: RwLock<Vec<Arc<Plan>>>,
}

impl std::fmt::Debug for PlanCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.plans.read().map_or(0, |p| p.len());
        write!(f, "PlanCache({n} plans)")
    }
}

impl PlanCache {
    /// The plan for `schema` under `keys`' configuration, built on first use. A cached plan
    /// is lent under the cache's read lock (held for one row or batch; writers only add).
    pub(crate) fn get(&self, keys: &TenantKeys, schema: &RowSchema) -> PlanRef<'_> {
        let find = |plans: &[Arc<Plan>]| plans.iter().position(|p| p.schema_id == schema.id());
        if let Ok(plans) = self.plans.read()
            && let Some(at) = find(&plans)
        {
            return PlanRef::Cached(plans, at);
        }
        let plan = Arc::new(Plan::build(keys, schema));
        // A poisoned lock only costs the cache: the plan is still returned.
        if let Ok(mut plans) = self.plans.write() {
            if let Some(at) = find(&plans) {
                return PlanRef::Built(Arc::clone(&plans[at]));
            }
            if plans.len() >= MAX_PLANS {
                plans.clear();
            }
            plans.push(Arc::clone(&plan));
        }
        PlanRef::Built(plan)
    }
}

/// A plan lent by a [`PlanCache`].
pub(crate) enum PlanRef<'a> {
    /// In the cache, at this index.
    Cached(RwLockReadGuard<'a, Vec<Arc<Plan>>>, usize),
    /// Just built (and cached for later rows, unless the lock was poisoned).
    Built(Arc<Plan>),
}

impl std::ops::Deref for PlanRef<'_> {
    type Target = Plan;
    #[inline]
    fn deref(&self) -> &Plan {
        match self {
            PlanRef::Cached(plans, at) => &plans[*at],
            PlanRef::Built(plan) => plan,
        }
    }
}

/// A KEK id and version.
type KekVersion = (u32, u32);

/// What one (tenant view, schema) pair always computes the same way.
pub(crate) struct Plan {
    schema_id: u64,
    /// Per field: how it is sealed under the tenant's policies, or why it cannot be.
    pub(crate) effective: Result<Vec<Effective>>,
    /// Per key class: its policy, or why the tenant has none.
    key_policies: Vec<Result<Policy>>,
    /// Per key class: its policy names no readers (every actor of the tenant may read).
    open_to_all: Vec<bool>,
    /// Per field: `field prefix ‖ text tenant`, to which a row appends flags and row id.
    field_heads: Vec<Vec<u8>>,
    /// Per field: its whole associated data with no row id and its sealing flags.
    field_aads: Vec<Option<(u8, Vec<u8>)>>,
    /// Per key class: `DEK prefix ‖ text tenant`.
    dek_heads: Vec<Vec<u8>>,
    /// Per key class: the whole DEK-wrap associated data with no row id, the class's full
    /// column list and the sealed class set, for the active KEK it names.
    dek_aads: Vec<Option<(KekVersion, Vec<u8>)>>,
}

impl Plan {
    fn build(keys: &TenantKeys, schema: &RowSchema) -> Plan {
        Plan::of(
            keys.tenant.as_str(),
            schema,
            schema
                .fields()
                .iter()
                .map(|f| crate::rows::seal::effective(keys, f))
                .collect(),
            schema
                .key_classes()
                .iter()
                .map(|c| keys.policy(c).cloned())
                .collect(),
            |class| keys.active_kek(class),
        )
    }

    /// The plan from its inputs: the tenant, the fields' effective settings, the key
    /// classes' policies and each class's active KEK.
    fn of(
        tenant: &str,
        schema: &RowSchema,
        effective: Result<Vec<Effective>>,
        key_policies: Vec<Result<Policy>>,
        active_kek: impl Fn(&crate::tenant::policy::Class) -> Option<(u32, u32)>,
    ) -> Plan {
        let head = |prefix: &[u8]| Aad::from_prefix(Vec::new(), prefix).text(tenant);
        let field_heads: Vec<Vec<u8>> = (0..schema.fields().len())
            .map(|i| head(schema.field_aad_prefix(i)).into_buffer())
            .collect();
        let field_aads = match &effective {
            Ok(effective) => effective
                .iter()
                .zip(&field_heads)
                .map(|(e, h)| {
                    let flags = e.flags();
                    let aad = field_aad_tail(Aad::from_prefix(Vec::new(), h), flags, None);
                    Some((flags, aad.into_buffer()))
                })
                .collect(),
            Err(_) => vec![None; field_heads.len()],
        };
        let dek_heads: Vec<Vec<u8>> = (0..schema.key_classes().len())
            .map(|k| head(schema.dek_aad_prefix(k)).into_buffer())
            .collect();
        let dek_aads = schema
            .key_classes()
            .iter()
            .enumerate()
            .map(|(k, class)| {
                if schema.members(k).is_empty() {
                    return None;
                }
                let kek = active_kek(class)?;
                let aad = dek_aad_tail(
                    Aad::from_prefix(Vec::new(), &dek_heads[k]),
                    kek,
                    None,
                    schema.full_list(k),
                    schema.sealed_class_set(),
                    None,
                );
                Some((kek, aad.into_buffer()))
            })
            .collect();
        let open_to_all = key_policies
            .iter()
            .map(|p| p.as_ref().is_ok_and(|p| p.readers.is_empty()))
            .collect();
        Plan {
            schema_id: schema.id(),
            effective,
            key_policies,
            open_to_all,
            field_heads,
            field_aads,
            dek_heads,
            dek_aads,
        }
    }

    /// Whether an actor with `roles` may read key class `k` (the tenant's error if the class
    /// has no policy).
    #[inline]
    pub(crate) fn may_read(&self, k: usize, roles: &[String]) -> Result<bool> {
        if self.open_to_all.get(k) == Some(&true) {
            return Ok(true);
        }
        match self.key_policies.get(k) {
            Some(Ok(p)) => Ok(p.may_read(roles)),
            Some(Err(e)) => Err(e.clone()),
            None => Err(crate::Error::Tampered),
        }
    }

    /// Field `i`'s associated data for `flags` and `row_id` (of the field's own class):
    /// cached when the row has no id and the flags are the field's sealing flags, else built
    /// in `scratch`.
    #[inline]
    pub(crate) fn field_aad<'a>(
        &'a self,
        i: usize,
        flags: u8,
        row_id: Option<&RowId>,
        scratch: &'a mut Vec<u8>,
    ) -> &'a [u8] {
        if row_id.is_none()
            && let Some(Some((cached_flags, aad))) = self.field_aads.get(i)
            && *cached_flags == flags
        {
            return aad;
        }
        let head = self.field_heads.get(i).map_or(&[][..], Vec::as_slice);
        let head = Aad::from_prefix(take_scratch(scratch), head);
        *scratch = field_aad_tail(head, flags, row_id).into_buffer();
        scratch
    }

    /// Key class `k`'s DEK-wrap associated data. `standard` says that `list` is the class's
    /// full column list and `class_set` the sealed class set: then, for a row without id and
    /// the KEK the cached value names, the cached value is used (returned as is for an
    /// unbound key column, copied with the write id appended for a bound one); otherwise it
    /// is built in `scratch`.
    #[allow(clippy::too_many_arguments)] // the parts of the associated data, named
    pub(crate) fn dek_aad<'a>(
        &'a self,
        k: usize,
        kek: (u32, u32),
        row_id: Option<&RowId>,
        standard: bool,
        (list, class_set): (&[u8], &[u8]),
        write_id: Option<&WriteId>,
        scratch: &'a mut Vec<u8>,
    ) -> &'a [u8] {
        if standard
            && row_id.is_none()
            && let Some(Some((cached_kek, aad))) = self.dek_aads.get(k)
            && *cached_kek == kek
        {
            let Some(id) = write_id else { return aad };
            *scratch = Aad::from_prefix(take_scratch(scratch), aad)
                .bytes(id)
                .into_buffer();
            return scratch;
        }
        let head = self.dek_heads.get(k).map_or(&[][..], Vec::as_slice);
        let head = Aad::from_prefix(take_scratch(scratch), head);
        *scratch = dek_aad_tail(head, kek, row_id, list, class_set, write_id).into_buffer();
        scratch
    }
}

/// The caller's scratch buffer, or the thread's reusable one if the caller has none yet.
fn take_scratch(scratch: &mut Vec<u8>) -> Vec<u8> {
    if scratch.capacity() == 0 {
        crate::rows::aad::take_aad_buffer()
    } else {
        std::mem::take(scratch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::aad::{dek_aad, field_aad};
    use crate::rows::schema::FieldSpec;
    use crate::tenant::policy::Class;

    fn class(s: &str) -> Class {
        Class::new(s).unwrap()
    }

    /// Two classes, one field with non-zero flags, and a legacy class without fields.
    fn schema() -> RowSchema {
        RowSchema::new(
            "patients",
            vec![
                FieldSpec::new("email", class("private")),
                FieldSpec::new("ssn", class("restricted")).hide_null(),
                FieldSpec::new("note", class("private")).pad_to(16),
            ],
        )
        .unwrap()
        .with_legacy_class(class("secret"))
    }

    fn plan(schema: &RowSchema) -> Plan {
        let effective = schema
            .fields()
            .iter()
            .map(|f| Effective {
                hide_null: f.hide_null,
                pad_to: f.pad_to,
            })
            .collect();
        let policies = schema
            .key_classes()
            .iter()
            .map(|c| Err(crate::Error::InvalidConfig(c.to_string())))
            .collect();
        Plan::of("acme", schema, Ok(effective), policies, |c| {
            Some((crate::keys::registry::kek_id(c.as_str()), 3))
        })
    }

    /// Every cached value is byte for byte what the specified encoding builds, and every
    /// case the cache does not cover is built the specified way.
    #[test]
    fn cached_associated_data_is_the_specified_encoding() {
        let schema = schema();
        let plan = plan(&schema);
        let mut scratch = Vec::new();
        let id = RowId::Int(7);
        for (i, f) in schema.fields().iter().enumerate() {
            let flags = Effective {
                hide_null: f.hide_null,
                pad_to: f.pad_to,
            }
            .flags();
            for (flags, row_id) in [(flags, None), (flags, Some(&id)), (flags ^ 1, None)] {
                let want = field_aad(
                    Vec::new(),
                    schema.field_aad_prefix(i),
                    "acme",
                    flags,
                    row_id,
                );
                let got = plan.field_aad(i, flags, row_id, &mut scratch);
                assert_eq!(got, want.as_bytes(), "field {i}, flags {flags}, {row_id:?}");
            }
        }
        assert_ne!(
            plan.field_aads[1].as_ref().unwrap().0,
            0,
            "flags are cached"
        );
        let other_list = crate::format::key_column::encode_list([("email", true)]).unwrap();
        for (k, c) in schema.key_classes().iter().enumerate() {
            let active = (crate::keys::registry::kek_id(c.as_str()), 3);
            let full = schema.full_list(k);
            let sealed = schema.sealed_class_set();
            let w = Some(&[9u8; 16]);
            // (standard, KEK, row id, column list, class set, write id)
            type Case<'a> = (
                bool,
                KekVersion,
                Option<&'a RowId>,
                &'a [u8],
                &'a [u8],
                Option<&'a WriteId>,
            );
            let cases: [Case<'_>; 8] = [
                (true, active, None, full, sealed, None),
                (true, active, None, full, sealed, w),
                (true, active, Some(&id), full, sealed, None),
                (true, active, Some(&id), full, sealed, w),
                (true, (active.0, 2), None, full, sealed, w),
                (false, active, None, &other_list, sealed, None),
                (false, active, None, full, b"\x07private", None),
                (false, active, None, full, b"\x07private", w),
            ];
            for (standard, kek, row_id, list, set, write_id) in cases {
                let want = dek_aad(
                    Vec::new(),
                    schema.dek_aad_prefix(k),
                    "acme",
                    kek,
                    row_id,
                    list,
                    set,
                    write_id,
                );
                let got = plan.dek_aad(
                    k,
                    kek,
                    row_id,
                    standard,
                    (list, set),
                    write_id,
                    &mut scratch,
                );
                assert_eq!(
                    got,
                    want.as_bytes(),
                    "class {c}, {kek:?}, {row_id:?}, {write_id:?}"
                );
            }
        }
        assert!(plan.dek_aads[0].is_some() && plan.dek_aads[2].is_none());
        assert!(matches!(
            plan.may_read(0, &[]),
            Err(crate::Error::InvalidConfig(c)) if c == "private"
        ));
    }

    #[test]
    fn a_changed_schema_gets_its_own_plan_and_clones_share_one() {
        let a = schema();
        let b = a.clone().with_legacy_class(class("internal"));
        assert_eq!(a.id(), a.clone().id());
        assert_ne!(a.id(), b.id());
        assert_ne!(a.id(), schema().id());
    }

    #[test]
    fn full_lists_name_every_member_without_null() {
        let s = schema();
        let list = |k: usize| {
            crate::format::key_column::encode_list(
                s.members(k)
                    .iter()
                    .map(|&i| (s.fields()[i].column.as_str(), false)),
            )
            .unwrap()
        };
        assert_eq!(s.full_list(0), list(0));
        assert_eq!(s.full_list(0), b"\x05email\x04note");
        assert_eq!(s.full_list(1), list(1));
        assert!(s.full_list(2).is_empty());
        assert_eq!(
            (0..3).map(|i| s.field_key_class(i)).collect::<Vec<_>>(),
            [Some(0), Some(1), Some(0)]
        );
    }
}
