//! Reading one tenant's table of the configuration file into a [`TenantConfig`], every error
//! naming the tenant, the field and the line.
//!
//! Fields are read by hand rather than through serde so that an error never repeats a value
//! of the file (serde's "invalid type: string \"...\"" would), and so that an unknown field is
//! refused at its own line: a misspelt `reders` must not silently leave a class readable by
//! everyone.

use std::collections::BTreeSet;
use std::ops::Range;

use toml_edit::{Item, TableLike, Value};

use crate::Error;
use crate::kms::KeyRef;
use crate::tenant::config::TenantConfig;
use crate::tenant::context::TenantId;
use crate::tenant::policy::{AuditMode, Class, LeasePolicy, Policy, SearchMode};

/// The fields of a tenant's table.
const TENANT_FIELDS: &[&str] = &["revision", "key", "audit_sink", "lease", "mac", "classes"];
/// The fields of a class's table.
const CLASS_FIELDS: &[&str] = &[
    "key",
    "search",
    "readers",
    "audit",
    "pad_to",
    "hide_nulls",
    "lease",
];
/// The fields of a lease table.
const LEASE_FIELDS: &[&str] = &["renewal_secs", "hard_expiry_secs", "max_uses"];

/// A tenant's table as read: the configuration and the MAC the file holds for it.
#[derive(Debug)]
pub(crate) struct ReadTenant {
    pub(crate) config: TenantConfig,
    /// `None` when the table has no `mac` (never signed).
    pub(crate) mac: Option<[u8; 32]>,
    /// Lines of the table's header and of `revision`, for errors found later.
    pub(crate) header_line: usize,
    pub(crate) revision_line: usize,
}

/// Where errors point: the file's name and text, and the tenant being read.
pub(crate) struct Locator<'a> {
    pub(crate) path: &'a str,
    pub(crate) raw: &'a str,
    pub(crate) tenant: &'a str,
}

impl Locator<'_> {
    /// The 1-based line of a byte offset (0 when the span is unknown).
    pub(crate) fn line(&self, span: Option<Range<usize>>) -> usize {
        span.map(|s| {
            let end = s.start.min(self.raw.len());
            self.raw.as_bytes()[..end]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1
        })
        .unwrap_or(0)
    }

    /// An error at `line` about `field`.
    pub(crate) fn at(&self, line: usize, field: &str, problem: Error) -> Error {
        Error::ConfigFile {
            path: self.path.to_string(),
            line,
            tenant: self.tenant.to_string(),
            field: field.to_string(),
            problem: Box::new(problem),
        }
    }

    fn invalid(&self, line: usize, field: &str, why: impl Into<String>) -> Error {
        self.at(line, field, Error::InvalidConfig(why.into()))
    }
}

/// One table (a `[header]` table or an inline `{ }` one) being read.
struct Fields<'t> {
    table: &'t dyn TableLike,
    /// The dotted path of the table within the tenant's (empty for the tenant's own).
    prefix: String,
    line: usize,
}

impl<'t> Fields<'t> {
    fn new(
        loc: &Locator<'_>,
        item: &'t Item,
        prefix: &str,
        allowed: &[&str],
    ) -> crate::Result<Self> {
        let field = if prefix.is_empty() { "(table)" } else { prefix };
        let table = item
            .as_table_like()
            .ok_or_else(|| loc.invalid(loc.line(item.span()), field, "must be a table"))?;
        let line = loc.line(item.span());
        let fields = Fields {
            table,
            prefix: prefix.to_string(),
            line,
        };
        for (name, _) in table.iter() {
            if !allowed.contains(&name) {
                return Err(loc.invalid(
                    fields.line_of(loc, name),
                    &fields.path(name),
                    format!("unknown field; expected one of: {}", allowed.join(", ")),
                ));
            }
        }
        Ok(fields)
    }

    fn path(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    fn line_of(&self, loc: &Locator<'_>, name: &str) -> usize {
        let key_span = self.table.key(name).and_then(|k| k.span());
        match loc.line(key_span) {
            0 => self.line,
            line => line,
        }
    }

    fn get(&self, name: &str) -> Option<&'t Item> {
        self.table.get(name)
    }

    fn value(&self, loc: &Locator<'_>, name: &str, kind: &str) -> crate::Result<Option<&'t Value>> {
        match self.get(name) {
            None => Ok(None),
            Some(item) => item.as_value().map(Some).ok_or_else(|| {
                loc.invalid(
                    self.line_of(loc, name),
                    &self.path(name),
                    format!("must be {kind}"),
                )
            }),
        }
    }

    /// The value at `name` as `get` reads it, or an error saying it must be `what`.
    fn typed<T>(
        &self,
        loc: &Locator<'_>,
        name: &str,
        what: &str,
        get: impl Fn(&'t Value) -> Option<T>,
    ) -> crate::Result<Option<T>> {
        match self.value(loc, name, what)? {
            None => Ok(None),
            Some(v) => get(v).map(Some).ok_or_else(|| {
                loc.invalid(
                    self.line_of(loc, name),
                    &self.path(name),
                    format!("must be {what}"),
                )
            }),
        }
    }

    fn string(&self, loc: &Locator<'_>, name: &str) -> crate::Result<Option<&'t str>> {
        self.typed(loc, name, "a string", Value::as_str)
    }

    fn integer(&self, loc: &Locator<'_>, name: &str, max: u64) -> crate::Result<Option<u64>> {
        let bad = || {
            loc.invalid(
                self.line_of(loc, name),
                &self.path(name),
                format!("must be an integer from 0 to {max}"),
            )
        };
        match self.value(loc, name, "an integer")? {
            None => Ok(None),
            Some(v) => {
                let n = v.as_integer().ok_or_else(bad)?;
                u64::try_from(n)
                    .ok()
                    .filter(|n| *n <= max)
                    .map(Some)
                    .ok_or_else(bad)
            }
        }
    }

    fn boolean(&self, loc: &Locator<'_>, name: &str) -> crate::Result<Option<bool>> {
        self.typed(loc, name, "true or false", Value::as_bool)
    }

    fn key_ref(&self, loc: &Locator<'_>, name: &str) -> crate::Result<Option<KeyRef>> {
        match self.string(loc, name)? {
            None => Ok(None),
            // The reference is not repeated: the line says where it is.
            Some(s) => KeyRef::new(s).map(Some).map_err(|_| {
                loc.invalid(
                    self.line_of(loc, name),
                    &self.path(name),
                    "must be a key reference `provider:key-id` (for example `local:acme`)",
                )
            }),
        }
    }

    /// One of `choices` (a string), mapped by `pick`.
    fn choice<T>(
        &self,
        loc: &Locator<'_>,
        name: &str,
        choices: &[(&str, T)],
    ) -> crate::Result<Option<T>>
    where
        T: Copy,
    {
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        let bad = || {
            loc.invalid(
                self.line_of(loc, name),
                &self.path(name),
                format!("must be one of: {}", names.join(", ")),
            )
        };
        match self.value(loc, name, "a string")? {
            None => Ok(None),
            Some(v) => {
                let s = v.as_str().ok_or_else(bad)?;
                choices
                    .iter()
                    .find(|(n, _)| *n == s)
                    .map(|(_, t)| Some(*t))
                    .ok_or_else(bad)
            }
        }
    }
}

/// Reads the lease at `fields.name`: an inline table of seconds, or `"none"` (classic mode).
fn lease(loc: &Locator<'_>, fields: &Fields<'_>, name: &str) -> crate::Result<Option<LeasePolicy>> {
    let Some(item) = fields.get(name) else {
        return Ok(None);
    };
    let path = fields.path(name);
    if let Some(s) = item.as_str() {
        return if s == "none" {
            Ok(Some(LeasePolicy::None))
        } else {
            Err(loc.invalid(
                fields.line_of(loc, name),
                &path,
                "must be \"none\" (classic mode) or a table { renewal_secs, hard_expiry_secs, max_uses }",
            ))
        };
    }
    let lease = Fields::new(loc, item, &path, LEASE_FIELDS)?;
    let month = 30 * 24 * 3600;
    // A field left out takes the default lease's (renewed every 20 min, 1 h hard expiry).
    let policy = LeasePolicy::Leased {
        renewal_secs: lease.integer(loc, "renewal_secs", month)?.unwrap_or(1200),
        hard_expiry_secs: lease
            .integer(loc, "hard_expiry_secs", month)?
            .unwrap_or(3600),
        max_uses: lease.integer(loc, "max_uses", i64::MAX as u64)?,
    };
    // The checks of `Policy::validate`, here so that the error names the lease's line.
    if let LeasePolicy::Leased {
        renewal_secs,
        hard_expiry_secs,
        max_uses,
    } = policy
    {
        if renewal_secs == 0 || renewal_secs >= hard_expiry_secs {
            return Err(loc.invalid(
                fields.line_of(loc, name),
                &path,
                format!(
                    "the renewal ({renewal_secs} s) must be positive and shorter than the hard \
                     expiry ({hard_expiry_secs} s)"
                ),
            ));
        }
        if max_uses == Some(0) {
            return Err(loc.invalid(
                fields.line_of(loc, name),
                &path,
                "a use cap of 0 would refuse every use; leave max_uses out instead",
            ));
        }
    }
    Ok(Some(policy))
}

/// Reads the tenant's table `item` of the file.
pub(crate) fn tenant(loc: &Locator<'_>, item: &Item) -> crate::Result<ReadTenant> {
    let header_line = loc.line(item.span());
    let id = TenantId::new(loc.tenant).map_err(|e| loc.at(header_line, "(table)", e))?;
    let fields = Fields::new(loc, item, "", TENANT_FIELDS)?;
    let revision_line = fields.line_of(loc, "revision");
    let revision = fields
        .integer(loc, "revision", i64::MAX as u64)?
        .filter(|r| *r > 0)
        .ok_or_else(|| {
            loc.invalid(
                revision_line,
                "revision",
                "required: a revision of 1 or above",
            )
        })?;
    let root_key = fields.key_ref(loc, "key")?.ok_or_else(|| {
        loc.invalid(
            header_line,
            "key",
            "required: the tenant's master key, `provider:key-id`",
        )
    })?;
    let audit_sink = fields.string(loc, "audit_sink")?.map(str::to_string);
    let default_lease = lease(loc, &fields, "lease")?.unwrap_or_default();
    let mac_line = fields.line_of(loc, "mac");
    let mac = match fields.string(loc, "mac")? {
        None => None,
        Some(hex) => Some(
            crate::hex::decode(hex)
                .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
                .ok_or_else(|| loc.invalid(mac_line, "mac", "must be 64 hexadecimal digits"))?,
        ),
    };
    let classes = fields
        .get("classes")
        .ok_or_else(|| loc.invalid(header_line, "classes", "required: a table per class"))?;
    let classes_table = classes.as_table_like().ok_or_else(|| {
        loc.invalid(
            loc.line(classes.span()),
            "classes",
            "must be a table of classes",
        )
    })?;
    let mut config = TenantConfig::new(id, root_key.clone());
    config.policies.clear();
    config.revision = revision;
    config.audit_sink = audit_sink;
    for (name, class_item) in classes_table.iter() {
        let path = format!("classes.{name}");
        let class_line = loc.line(class_item.span());
        let class = Class::new(name).map_err(|e| loc.at(class_line, &path, e))?;
        let f = Fields::new(loc, class_item, &path, CLASS_FIELDS)?;
        let mut policy = Policy::new(f.key_ref(loc, "key")?.unwrap_or_else(|| root_key.clone()));
        policy.lease = lease(loc, &f, "lease")?.unwrap_or(default_lease);
        policy.search = f
            .choice(
                loc,
                "search",
                &[
                    ("none", SearchMode::None),
                    ("blind_index", SearchMode::BlindIndex),
                    ("deterministic", SearchMode::Deterministic),
                ],
            )?
            .unwrap_or(SearchMode::None);
        policy.audit = f
            .choice(
                loc,
                "audit",
                &[
                    ("best_effort", AuditMode::BestEffort),
                    ("fail_closed", AuditMode::FailClosed),
                ],
            )?
            .unwrap_or_default();
        policy.pad_to = f
            .integer(loc, "pad_to", 4096)?
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(0);
        policy.hide_nulls = f.boolean(loc, "hide_nulls")?.unwrap_or(false);
        policy.readers = readers(loc, &f)?;
        policy
            .validate(&class)
            .map_err(|e| loc.at(class_line, &path, e))?;
        config.policies.insert(class, policy);
    }
    config
        .validate()
        .map_err(|e| loc.at(header_line, "classes", e))?;
    Ok(ReadTenant {
        config,
        mac,
        header_line,
        revision_line,
    })
}

/// A class's `readers`: an array of role names, none empty.
fn readers(loc: &Locator<'_>, f: &Fields<'_>) -> crate::Result<BTreeSet<String>> {
    let bad = || {
        loc.invalid(
            f.line_of(loc, "readers"),
            &f.path("readers"),
            "must be an array of role names, none empty",
        )
    };
    let Some(value) = f.value(loc, "readers", "an array of role names")? else {
        return Ok(BTreeSet::new());
    };
    let array = value.as_array().ok_or_else(bad)?;
    array
        .iter()
        .map(|v| {
            v.as_str()
                .filter(|s| !s.trim().is_empty())
                .map(str::to_string)
                .ok_or_else(bad)
        })
        .collect()
}
