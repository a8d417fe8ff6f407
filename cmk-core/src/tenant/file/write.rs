//! Writing a tenant's configuration as its table of the file: defaults left out, a lease
//! shared by the tenant's classes written once, so that the table stays short enough to
//! review by eye. [`super::read::tenant`] reads back exactly the configuration written (the
//! store checks that before every save).

use toml_edit::{Array, InlineTable, Item, Table, value};

use crate::tenant::config::TenantConfig;
use crate::tenant::policy::{AuditMode, LeasePolicy, SearchMode};

/// The table `[tenants.<id>]` for `config`, signed with `mac`.
pub(crate) fn tenant_table(config: &TenantConfig, mac: &[u8; 32]) -> Table {
    let default_lease = tenant_lease(config);
    let mut t = Table::new();
    t.insert(
        "revision",
        value(i64::try_from(config.revision).unwrap_or(i64::MAX)),
    );
    t.insert("key", value(config.root_key.as_str()));
    if let Some(sink) = &config.audit_sink {
        t.insert("audit_sink", value(sink.as_str()));
    }
    if default_lease != LeasePolicy::default() {
        t.insert("lease", lease_item(&default_lease));
    }
    t.insert("mac", value(crate::hex::encode(mac)));
    let mut classes = Table::new();
    // `[tenants.acme.classes.secret]` headers only: no empty `[tenants.acme.classes]`.
    classes.set_implicit(true);
    for (class, policy) in &config.policies {
        let mut c = Table::new();
        if policy.kms_key != config.root_key {
            c.insert("key", value(policy.kms_key.as_str()));
        }
        match policy.search {
            SearchMode::None => {}
            SearchMode::BlindIndex => {
                c.insert("search", value("blind_index"));
            }
            SearchMode::Deterministic => {
                c.insert("search", value("deterministic"));
            }
        }
        if !policy.readers.is_empty() {
            let readers: Array = policy.readers.iter().map(String::as_str).collect();
            c.insert("readers", value(readers));
        }
        if policy.audit == AuditMode::FailClosed {
            c.insert("audit", value("fail_closed"));
        }
        if policy.pad_to != 0 {
            c.insert("pad_to", value(i64::from(policy.pad_to)));
        }
        if policy.hide_nulls {
            c.insert("hide_nulls", value(true));
        }
        if policy.lease != default_lease {
            c.insert("lease", lease_item(&policy.lease));
        }
        classes.insert(class.as_str(), Item::Table(c));
    }
    t.insert("classes", Item::Table(classes));
    t
}

/// The lease most of the tenant's classes share (the default lease on a tie with it).
fn tenant_lease(config: &TenantConfig) -> LeasePolicy {
    let mut counts: Vec<(LeasePolicy, usize)> = Vec::new();
    for policy in config.policies.values() {
        match counts.iter_mut().find(|(l, _)| *l == policy.lease) {
            Some((_, n)) => *n += 1,
            None => counts.push((policy.lease, 1)),
        }
    }
    let default = LeasePolicy::default();
    let of_default = counts
        .iter()
        .find(|(l, _)| *l == default)
        .map_or(0, |(_, n)| *n);
    counts
        .into_iter()
        .filter(|(_, n)| *n > of_default)
        .max_by_key(|(_, n)| *n)
        .map_or(default, |(l, _)| l)
}

fn lease_item(lease: &LeasePolicy) -> Item {
    match lease {
        LeasePolicy::Leased {
            renewal_secs,
            hard_expiry_secs,
            max_uses,
        } => {
            let mut t = InlineTable::new();
            let secs = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            t.insert("renewal_secs", secs(*renewal_secs).into());
            t.insert("hard_expiry_secs", secs(*hard_expiry_secs).into());
            if let Some(uses) = max_uses {
                t.insert("max_uses", secs(*uses).into());
            }
            value(t)
        }
        _ => value("none"),
    }
}
