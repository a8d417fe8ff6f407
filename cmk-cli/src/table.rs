//! A sealed table described by its manifest: the schema cmk unseals it with, and the SQL
//! that pages through its rows in row-id order on any of the three databases.

use std::path::Path;

use cmk_core::Class;
use cmk_core::crypto::normalize::Normalizer;
use cmk_core::format::aad::RowId;
use cmk_core::manifest::{Manifest, TenantColumn};
use cmk_core::schema::{FieldSearch, FieldSpec, RowSchema};
use cmk_core::seal::StoredRow;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, QueryResult, Statement, Value};
use serde_json::json;

use crate::exit::{CliError, CliResult, Exit};

/// A table's manifest, its schema and its queries.
pub(crate) struct Table {
    pub(crate) manifest: Manifest,
    pub(crate) schema: RowSchema,
    backend: DbBackend,
    id_column: String,
    /// Every column read, in order: id, tenant (when a column), key columns, fields, indexes.
    columns: Vec<String>,
    /// Per field, whether it has an index column (read after the fields).
    indexed: Vec<bool>,
}

/// A row id as stored: what pages the table and what the ciphertexts bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IdValue {
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
    /// PostgreSQL's `uuid` (elsewhere a UUID is a 16-byte binary, [`IdValue::Bytes`]).
    Uuid([u8; 16]),
}

impl IdValue {
    fn row_id(&self) -> RowId {
        match self {
            IdValue::Int(i) => RowId::Int(*i),
            IdValue::Text(s) => RowId::Text(s.clone()),
            IdValue::Bytes(b) => match <[u8; 16]>::try_from(b.as_slice()) {
                Ok(uuid) => RowId::Uuid(uuid),
                Err(_) => RowId::Text(String::from_utf8_lossy(b).into_owned()),
            },
            IdValue::Uuid(u) => RowId::Uuid(*u),
        }
    }

    fn sql(&self) -> Value {
        match self {
            IdValue::Int(i) => (*i).into(),
            IdValue::Text(s) => s.clone().into(),
            IdValue::Bytes(b) => b.clone().into(),
            IdValue::Uuid(u) => sea_orm::prelude::Uuid::from_bytes(*u).into(),
        }
    }

    /// As JSON: a number, a string, or `{"hex": ...}` (checkpoints and reports).
    pub(crate) fn to_json(&self) -> serde_json::Value {
        match self {
            IdValue::Int(i) => json!(i),
            IdValue::Text(s) => json!(s),
            IdValue::Bytes(b) => {
                json!({ "hex": b.iter().map(|x| format!("{x:02x}")).collect::<String>() })
            }
            IdValue::Uuid(u) => {
                json!({ "uuid": sea_orm::prelude::Uuid::from_bytes(*u).to_string() })
            }
        }
    }

    pub(crate) fn from_json(v: &serde_json::Value) -> Option<IdValue> {
        if let Some(i) = v.as_i64() {
            return Some(IdValue::Int(i));
        }
        if let Some(s) = v.as_str() {
            return Some(IdValue::Text(s.to_string()));
        }
        if let Some(uuid) = v.get("uuid") {
            let parsed = sea_orm::prelude::Uuid::parse_str(uuid.as_str()?).ok()?;
            return Some(IdValue::Uuid(parsed.into_bytes()));
        }
        let hex = v.get("hex")?.as_str()?;
        let bytes: Option<Vec<u8>> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect();
        bytes.map(IdValue::Bytes)
    }

    /// The PostgreSQL type of the id's parameter.
    fn pg_type(&self) -> &'static str {
        match self {
            IdValue::Int(_) => "bigint",
            IdValue::Text(_) => "text",
            IdValue::Bytes(_) => "bytea",
            IdValue::Uuid(_) => "uuid",
        }
    }

    pub(crate) fn label(&self) -> String {
        match &self.to_json() {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

/// A row and its re-wrapped key columns (by key class), to write if the row is unchanged.
pub(crate) type Rewrapped<'a> = (&'a Row, Vec<(usize, Vec<u8>)>);

/// One stored row.
pub(crate) struct Row {
    pub(crate) id: IdValue,
    pub(crate) tenant: String,
    pub(crate) key_columns: Vec<Option<Vec<u8>>>,
    fields: Vec<Option<Vec<u8>>>,
    indexes: Vec<Option<Vec<u8>>>,
}

/// A [`StoredRow`] view of a [`Row`], owning the slices it points into.
pub(crate) struct RowView<'a> {
    row_id: Option<RowId>,
    key_columns: Vec<Option<&'a [u8]>>,
    fields: Vec<Option<&'a [u8]>>,
    indexes: Vec<Option<&'a [u8]>>,
    tenant: &'a str,
}

impl RowView<'_> {
    pub(crate) fn stored(&self) -> StoredRow<'_> {
        StoredRow {
            tenant: self.tenant,
            row_id: self.row_id.as_ref(),
            key_columns: &self.key_columns,
            fields: &self.fields,
            indexes: &self.indexes,
        }
    }
}

fn malformed(path: &Path, what: impl std::fmt::Display) -> CliError {
    CliError::file(path, what)
}

/// A column or table name the tool puts in SQL: letters, digits and `_` only, so that a
/// manifest never injects SQL.
fn identifier(path: &Path, name: &str) -> CliResult<String> {
    if name.is_empty()
        || name.len() > 128
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(malformed(
            path,
            format!("`{name}` is not a plain SQL identifier"),
        ));
    }
    Ok(name.to_string())
}

fn normalizer(path: &Path, name: Option<&str>) -> CliResult<Normalizer> {
    [Normalizer::Exact, Normalizer::Trimmed, Normalizer::Casefold]
        .into_iter()
        .find(|n| Some(n.as_str()) == name)
        .ok_or_else(|| malformed(path, format!("unknown normalizer {name:?}")))
}

/// The schema a manifest describes, checked against its key columns.
fn schema_of(path: &Path, m: &Manifest) -> CliResult<RowSchema> {
    let class = |name: &str| {
        Class::new(name.to_string()).map_err(|e| malformed(path, format!("class `{name}`: {e}")))
    };
    let mut specs = Vec::with_capacity(m.fields.len());
    for f in &m.fields {
        let mut spec = FieldSpec::new(identifier(path, &f.column)?, class(&f.class)?);
        spec = match f.search.as_str() {
            "none" => spec,
            "blind_index" => spec.blind_index(normalizer(path, f.normalizer.as_deref())?),
            "deterministic" => spec.deterministic(),
            other => return Err(malformed(path, format!("unknown search `{other}`"))),
        };
        if f.hide_null {
            spec = spec.hide_null();
        }
        if f.pad_to > 0 {
            spec = spec.pad_to(f.pad_to);
        }
        specs.push(spec);
    }
    let mut schema = RowSchema::new(m.table.clone(), specs).map_err(|e| malformed(path, e))?;
    if !schema.key_classes().is_empty() && m.key_columns.is_empty() {
        return Err(CliError::new(
            Exit::NoKeyColumns,
            format!(
                "table `{}` has classified columns but its manifest {} names no key columns",
                m.table,
                path.display()
            ),
        ));
    }
    // Classes kept only to read rows sealed before a reclassification come last.
    for k in &m.key_columns {
        let c = class(&k.class)?;
        if !schema.key_classes().contains(&c) {
            schema = schema.with_legacy_class(c);
        }
    }
    let listed: Vec<&str> = m.key_columns.iter().map(|k| k.class.as_str()).collect();
    let derived: Vec<&str> = schema.key_classes().iter().map(Class::as_str).collect();
    if listed != derived {
        return Err(malformed(
            path,
            format!("key columns for classes {listed:?}, but the fields need {derived:?}"),
        ));
    }
    if let Some(k) = m
        .key_columns
        .iter()
        .find(|k| k.kek_id != cmk_core::policy::kek_id(&k.class))
    {
        return Err(malformed(
            path,
            format!("class `{}` has the wrong kek_id", k.class),
        ));
    }
    Ok(schema)
}

impl Table {
    /// Reads and checks the manifest at `path`.
    pub(crate) fn load(path: &Path, backend: DbBackend) -> CliResult<Table> {
        let text = std::fs::read_to_string(path).map_err(|e| malformed(path, e))?;
        let manifest = Manifest::from_json(&text).map_err(|e| malformed(path, e))?;
        let schema = schema_of(path, &manifest)?;
        identifier(path, &manifest.table)?;
        let id_column = match &manifest.row_id {
            Some(r) => identifier(path, &r.column)?,
            None => {
                return Err(malformed(
                    path,
                    "the table has no row id column: rows cannot be paged or reported",
                ));
            }
        };
        let mut columns = vec![id_column.clone()];
        if let TenantColumn::Column(c) = &manifest.tenant {
            columns.push(identifier(path, c)?);
        }
        for k in &manifest.key_columns {
            columns.push(identifier(path, &k.column)?);
        }
        for f in &manifest.fields {
            columns.push(identifier(path, &f.column)?);
        }
        let mut indexed = Vec::with_capacity(manifest.fields.len());
        for f in &manifest.fields {
            indexed.push(f.index_column.is_some());
            if let Some(c) = &f.index_column {
                columns.push(identifier(path, c)?);
            }
        }
        Ok(Table {
            manifest,
            schema,
            backend,
            id_column,
            columns,
            indexed,
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.manifest.table
    }

    /// Every class whose keys unsealing a row may need.
    pub(crate) fn classes(&self) -> Vec<String> {
        let mut classes: Vec<String> = self
            .schema
            .classes()
            .into_iter()
            .map(|c| c.as_str().to_string())
            .collect();
        classes.dedup();
        classes
    }

    fn quote(&self, name: &str) -> String {
        match self.backend {
            DbBackend::Postgres => format!("\"{name}\""),
            // Not `"name"` on SQLite: a double-quoted name of no column is read as a string
            // literal there, so a missing key column would be read as text, not refused.
            _ => format!("`{name}`"),
        }
    }

    fn placeholder(&self, n: usize) -> String {
        match self.backend {
            DbBackend::Postgres => format!("${n}"),
            _ => "?".into(),
        }
    }

    fn tenant_column(&self) -> Option<&str> {
        match &self.manifest.tenant {
            TenantColumn::Column(c) => Some(c),
            _ => None,
        }
    }

    /// `WHERE` for rows after `after` of `tenant`, with its values.
    fn filter(&self, after: Option<&IdValue>, tenant: Option<&str>) -> (String, Vec<Value>) {
        let mut clauses = Vec::new();
        let mut values: Vec<Value> = Vec::new();
        if let Some(after) = after {
            values.push(after.sql());
            clauses.push(format!(
                "{} > {}",
                self.quote(&self.id_column),
                self.placeholder(values.len())
            ));
        }
        match (tenant, self.tenant_column()) {
            (Some(t), Some(c)) => {
                values.push(t.to_string().into());
                clauses.push(format!(
                    "{} = {}",
                    self.quote(c),
                    self.placeholder(values.len())
                ));
            }
            // A single-tenant table of another tenant: nothing matches.
            (Some(t), None) if !matches!(&self.manifest.tenant, TenantColumn::Fixed(f) if f == t) =>
            {
                clauses.push("1 = 0".into());
            }
            _ => {}
        }
        if clauses.is_empty() {
            (String::new(), values)
        } else {
            (format!(" WHERE {}", clauses.join(" AND ")), values)
        }
    }

    /// Fails with a clear error when the table or its columns are missing.
    pub(crate) async fn probe(&self, db: &DatabaseConnection) -> CliResult {
        let table = self.quote(self.name());
        let all: Vec<String> = self.columns.iter().map(|c| self.quote(c)).collect();
        let select = format!("SELECT {} FROM {table} WHERE 1 = 0", all.join(", "));
        if db.execute_unprepared(&select).await.is_ok() {
            return Ok(());
        }
        let exists = format!("SELECT 1 FROM {table} WHERE 1 = 0");
        if let Err(e) = db.execute_unprepared(&exists).await {
            return Err(CliError::new(
                Exit::Database,
                format!("table `{}` cannot be read: {e}", self.name()),
            ));
        }
        let keys: Vec<String> = self
            .manifest
            .key_columns
            .iter()
            .map(|k| self.quote(&k.column))
            .collect();
        let keys_select = format!("SELECT {} FROM {table} WHERE 1 = 0", keys.join(", "));
        if db.execute_unprepared(&keys_select).await.is_err() {
            return Err(CliError::new(
                Exit::NoKeyColumns,
                format!(
                    "table `{}` lacks the key columns its manifest names ({}): is it sealed by cmk?",
                    self.name(),
                    keys.join(", ")
                ),
            ));
        }
        Err(CliError::new(
            Exit::MalformedFile,
            format!("table `{}` lacks columns its manifest names", self.name()),
        ))
    }

    /// How many rows are after `after`.
    pub(crate) async fn count(
        &self,
        db: &DatabaseConnection,
        after: Option<&IdValue>,
        tenant: Option<&str>,
    ) -> CliResult<u64> {
        self.count_where(db, self.filter(after, tenant)).await
    }

    /// How many rows match a `WHERE` and its values.
    async fn count_where(
        &self,
        db: &DatabaseConnection,
        (filter, values): (String, Vec<Value>),
    ) -> CliResult<u64> {
        let sql = format!("SELECT COUNT(*) FROM {}{filter}", self.quote(self.name()));
        let row = db
            .query_one_raw(Statement::from_sql_and_values(self.backend, sql, values))
            .await?;
        let n = row.map(|r| r.try_get_by_index::<i64>(0)).transpose()?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }

    /// Up to `limit` rows after `after`, in row-id order.
    pub(crate) async fn chunk(
        &self,
        db: &DatabaseConnection,
        after: Option<&IdValue>,
        tenant: Option<&str>,
        limit: u64,
    ) -> CliResult<Vec<Row>> {
        let (filter, values) = self.filter(after, tenant);
        let all: Vec<String> = self.columns.iter().map(|c| self.quote(c)).collect();
        let sql = format!(
            "SELECT {} FROM {}{filter} ORDER BY {} LIMIT {limit}",
            all.join(", "),
            self.quote(self.name()),
            self.quote(&self.id_column)
        );
        let rows = db
            .query_all_raw(Statement::from_sql_and_values(self.backend, sql, values))
            .await?;
        rows.iter().map(|r| self.decode(r)).collect()
    }

    fn decode(&self, r: &QueryResult) -> CliResult<Row> {
        let id = decode_id(r)?;
        let mut at = 1;
        let tenant = match &self.manifest.tenant {
            TenantColumn::Fixed(t) => t.clone(),
            TenantColumn::Column(_) => {
                at += 1;
                text_or_bytes(r, 1)?
            }
            _ => return Err(CliError::new(Exit::MalformedFile, "unknown tenant kind")),
        };
        let mut bytes = |n: usize| -> CliResult<Vec<Option<Vec<u8>>>> {
            let out = (at..at + n)
                .map(|i| r.try_get_by_index::<Option<Vec<u8>>>(i))
                .collect::<Result<_, _>>()?;
            at += n;
            Ok(out)
        };
        let key_columns = bytes(self.manifest.key_columns.len())?;
        let fields = bytes(self.manifest.fields.len())?;
        let stored_indexes = bytes(self.indexed.iter().filter(|i| **i).count())?;
        let mut stored_indexes = stored_indexes.into_iter();
        let indexes = self
            .indexed
            .iter()
            .map(|has| {
                if *has {
                    stored_indexes.next().flatten()
                } else {
                    None
                }
            })
            .collect();
        Ok(Row {
            id,
            tenant,
            key_columns,
            fields,
            indexes,
        })
    }

    /// The row id sealing binds, when the manifest says ids are bound.
    pub(crate) fn bound_row_id(&self, id: &IdValue) -> Option<RowId> {
        let bound = self.manifest.row_id.as_ref().is_some_and(|r| r.bound);
        bound.then(|| id.row_id())
    }

    /// A view of `row` to unseal or rekey.
    pub(crate) fn view<'a>(&self, row: &'a Row) -> RowView<'a> {
        let bound = self.manifest.row_id.as_ref().is_some_and(|r| r.bound);
        let slices = |v: &'a [Option<Vec<u8>>]| v.iter().map(|c| c.as_deref()).collect();
        RowView {
            row_id: bound.then(|| row.id.row_id()),
            key_columns: slices(&row.key_columns),
            fields: slices(&row.fields),
            indexes: if self
                .schema
                .fields()
                .iter()
                .any(|f| matches!(f.search, FieldSearch::BlindIndex(_)))
            {
                slices(&row.indexes)
            } else {
                Vec::new()
            },
            tenant: &row.tenant,
        }
    }

    /// Writes re-wrapped key columns (`(key class, bytes)` per row) into each row whose key
    /// columns are still the ones read (compare and set: a row written meanwhile is left as
    /// it is). Rows that change the same key columns share one UPDATE of up to
    /// [`ROWS_PER_UPDATE`] rows. Returns the rows written.
    pub(crate) async fn write_key_columns(
        &self,
        db: &impl ConnectionTrait,
        rows: &[Rewrapped<'_>],
    ) -> CliResult<u64> {
        let mut groups: std::collections::BTreeMap<Vec<usize>, Vec<usize>> = Default::default();
        for (i, (_, new)) in rows.iter().enumerate() {
            groups
                .entry(new.iter().map(|(k, _)| *k).collect())
                .or_default()
                .push(i);
        }
        let mut written = 0;
        for (columns, members) in groups {
            for batch in members.chunks(ROWS_PER_UPDATE) {
                let batch: Vec<_> = batch.iter().map(|&i| &rows[i]).collect();
                written += self.update_batch(db, &columns, &batch).await?;
            }
        }
        Ok(written)
    }

    /// One compare-and-set UPDATE of `rows` (same changed key columns). SQLite and
    /// PostgreSQL join the table to a VALUES list of (id, new, old...) (an index join);
    /// MySQL, whose VALUES rows differ between MySQL and MariaDB, takes CASE and OR.
    async fn update_batch(
        &self,
        db: &impl ConnectionTrait,
        columns: &[usize],
        rows: &[&Rewrapped<'_>],
    ) -> CliResult<u64> {
        if self.backend == DbBackend::MySql {
            return self.update_batch_case(db, columns, rows).await;
        }
        let pg = self.backend == DbBackend::Postgres;
        let mut values: Vec<Value> = Vec::with_capacity(rows.len() * (1 + 2 * columns.len()));
        let mut tuples = Vec::with_capacity(rows.len());
        for (i, (row, new)) in rows.iter().enumerate() {
            // PostgreSQL types a VALUES column from its first row: cast that row's values.
            let cast = |what: &str| {
                if pg && i == 0 {
                    format!("::{what}")
                } else {
                    String::new()
                }
            };
            values.push(row.id.sql());
            let mut marks = vec![format!(
                "{}{}",
                self.placeholder(values.len()),
                cast(row.id.pg_type())
            )];
            for (c, &k) in columns.iter().enumerate() {
                values.push(new[c].1.clone().into());
                marks.push(format!(
                    "{}{}",
                    self.placeholder(values.len()),
                    cast("bytea")
                ));
                // Re-wrapped columns were never NULL (a NULL key column has nothing to wrap).
                values.push(row.key_columns[k].clone().unwrap_or_default().into());
                marks.push(format!(
                    "{}{}",
                    self.placeholder(values.len()),
                    cast("bytea")
                ));
            }
            tuples.push(format!("({})", marks.join(", ")));
        }
        // VALUES columns: id, then new and old per key column. SQLite names them column1..;
        // PostgreSQL takes the names from the alias list.
        let name = |n: usize| format!("v{n}");
        let col = |n: usize| {
            if pg {
                format!("v.{}", name(n))
            } else {
                format!("v.column{n}")
            }
        };
        let alias = if pg {
            let names: Vec<String> = (1..=1 + 2 * columns.len()).map(name).collect();
            format!("v({})", names.join(", "))
        } else {
            "v".to_string()
        };
        let mut sets = Vec::with_capacity(columns.len());
        let mut conditions = vec![format!(
            "{}.{} = {}",
            self.quote(self.name()),
            self.quote(&self.id_column),
            col(1)
        )];
        for (c, &k) in columns.iter().enumerate() {
            let column = self.quote(&self.manifest.key_columns[k].column);
            sets.push(format!("{column} = {}", col(2 + 2 * c)));
            conditions.push(format!(
                "{}.{column} = {}",
                self.quote(self.name()),
                col(3 + 2 * c)
            ));
        }
        let sql = format!(
            "UPDATE {} SET {} FROM (VALUES {}) AS {alias} WHERE {}",
            self.quote(self.name()),
            sets.join(", "),
            tuples.join(", "),
            conditions.join(" AND ")
        );
        let done = db
            .execute_raw(Statement::from_sql_and_values(self.backend, sql, values))
            .await?;
        Ok(done.rows_affected())
    }

    /// `UPDATE t SET k = CASE id WHEN .. THEN .. END, .. WHERE (id = .. AND k = old ..) OR ..`
    async fn update_batch_case(
        &self,
        db: &impl ConnectionTrait,
        columns: &[usize],
        rows: &[&Rewrapped<'_>],
    ) -> CliResult<u64> {
        let mut values: Vec<Value> = Vec::new();
        let mark = |v: Value, values: &mut Vec<Value>| {
            values.push(v);
            self.placeholder(values.len())
        };
        let id = self.quote(&self.id_column);
        let mut sets = Vec::with_capacity(columns.len());
        for (c, &k) in columns.iter().enumerate() {
            let mut cases = String::new();
            for (row, new) in rows {
                let when = mark(row.id.sql(), &mut values);
                let then = mark(new[c].1.clone().into(), &mut values);
                cases.push_str(&format!(" WHEN {when} THEN {then}"));
            }
            let column = self.quote(&self.manifest.key_columns[k].column);
            sets.push(format!("{column} = CASE {id}{cases} END"));
        }
        let mut matches = Vec::with_capacity(rows.len());
        for (row, _) in rows {
            let mut all = vec![format!("{id} = {}", mark(row.id.sql(), &mut values))];
            for &k in columns {
                // Re-wrapped columns were never NULL (a NULL key column has nothing to wrap).
                let old = row.key_columns[k].clone().unwrap_or_default();
                let column = self.quote(&self.manifest.key_columns[k].column);
                all.push(format!("{column} = {}", mark(old.into(), &mut values)));
            }
            matches.push(format!("({})", all.join(" AND ")));
        }
        let sql = format!(
            "UPDATE {} SET {} WHERE {}",
            self.quote(self.name()),
            sets.join(", "),
            matches.join(" OR ")
        );
        let done = db
            .execute_raw(Statement::from_sql_and_values(self.backend, sql, values))
            .await?;
        Ok(done.rows_affected())
    }
}

/// A row still in plaintext: its id, tenant and the plaintext of each classified column
/// (wiped when dropped).
pub(crate) struct LegacyRow {
    pub(crate) id: IdValue,
    pub(crate) tenant: String,
    pub(crate) values: Vec<Option<Vec<u8>>>,
}

impl Drop for LegacyRow {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for value in self.values.iter_mut().flatten() {
            value.zeroize();
        }
    }
}

impl Table {
    /// The plaintext column of each classified column, in field order, from `from`
    /// (`(column, plaintext column)`), or which are missing.
    pub(crate) fn plaintext_columns(&self, from: &[(String, String)]) -> CliResult<Vec<String>> {
        let path = Path::new("--from");
        let mut plain = Vec::with_capacity(self.manifest.fields.len());
        let mut missing = Vec::new();
        for f in &self.manifest.fields {
            match from.iter().find(|(c, _)| *c == f.column) {
                Some((_, p)) => plain
                    .push(identifier(path, p).map_err(|e| CliError::new(Exit::Usage, e.message))?),
                None => missing.push(f.column.clone()),
            }
        }
        if let Some((c, _)) = from
            .iter()
            .find(|(c, _)| !self.manifest.fields.iter().any(|f| f.column == *c))
        {
            return Err(CliError::new(
                Exit::Usage,
                format!("`{c}` is no classified column of `{}`", self.name()),
            ));
        }
        if !missing.is_empty() {
            return Err(CliError::new(
                Exit::Usage,
                format!(
                    "no --from for {}: say where each classified column's plaintext is",
                    missing.join(", ")
                ),
            ));
        }
        Ok(plain)
    }

    /// `WHERE` for rows still in plaintext (every key column NULL) after `after` of `tenant`.
    fn legacy_filter(&self, after: Option<&IdValue>, tenant: Option<&str>) -> (String, Vec<Value>) {
        let (filter, values) = self.filter(after, tenant);
        let unsealed: Vec<String> = self
            .manifest
            .key_columns
            .iter()
            .map(|k| format!("{} IS NULL", self.quote(&k.column)))
            .collect();
        let joined = unsealed.join(" AND ");
        if filter.is_empty() {
            (format!(" WHERE {joined}"), values)
        } else {
            (format!("{filter} AND {joined}"), values)
        }
    }

    /// How many rows of `tenant` still hold plaintext.
    pub(crate) async fn legacy_count(
        &self,
        db: &DatabaseConnection,
        tenant: Option<&str>,
    ) -> CliResult<u64> {
        self.count_where(db, self.legacy_filter(None, tenant)).await
    }

    /// Up to `limit` rows after `after` whose key columns are all NULL, with `plain`'s values.
    pub(crate) async fn legacy_chunk(
        &self,
        db: &DatabaseConnection,
        after: Option<&IdValue>,
        tenant: Option<&str>,
        limit: u64,
        plain: &[String],
    ) -> CliResult<Vec<LegacyRow>> {
        let (filter, values) = self.legacy_filter(after, tenant);
        let mut columns = vec![self.quote(&self.id_column)];
        if let TenantColumn::Column(c) = &self.manifest.tenant {
            columns.push(self.quote(c));
        }
        columns.extend(plain.iter().map(|c| self.quote(c)));
        let sql = format!(
            "SELECT {} FROM {}{filter} ORDER BY {} LIMIT {limit}",
            columns.join(", "),
            self.quote(self.name()),
            self.quote(&self.id_column)
        );
        let rows = db
            .query_all_raw(Statement::from_sql_and_values(self.backend, sql, values))
            .await?;
        rows.iter()
            .map(|r| {
                let id = decode_id(r)?;
                let (tenant, first) = match &self.manifest.tenant {
                    TenantColumn::Fixed(t) => (t.clone(), 1),
                    _ => (text_or_bytes(r, 1)?, 2),
                };
                let values = (first..first + plain.len())
                    .map(|i| plaintext(r, i))
                    .collect::<CliResult<_>>()?;
                Ok(LegacyRow { id, tenant, values })
            })
            .collect()
    }

    /// Writes a sealed row over the legacy row `id` while its key columns are still NULL;
    /// false when someone sealed it meanwhile.
    pub(crate) async fn write_sealed(
        &self,
        db: &impl ConnectionTrait,
        id: &IdValue,
        sealed: &cmk_core::seal::SealedRow,
    ) -> CliResult<bool> {
        let mut values: Vec<Value> = Vec::new();
        let mut sets = Vec::new();
        let mut set = |column: &str, v: &Option<Vec<u8>>, values: &mut Vec<Value>| {
            values.push(v.clone().into());
            sets.push(format!(
                "{} = {}",
                self.quote(column),
                self.placeholder(values.len())
            ));
        };
        for (f, v) in self.manifest.fields.iter().zip(&sealed.fields) {
            set(&f.column, v, &mut values);
        }
        for (f, v) in self.manifest.fields.iter().zip(&sealed.indexes) {
            if let Some(index) = &f.index_column {
                set(index, v, &mut values);
            }
        }
        for (k, v) in self.manifest.key_columns.iter().zip(&sealed.key_columns) {
            set(&k.column, v, &mut values);
        }
        values.push(id.sql());
        let mut conditions = vec![format!(
            "{} = {}",
            self.quote(&self.id_column),
            self.placeholder(values.len())
        )];
        conditions.extend(
            self.manifest
                .key_columns
                .iter()
                .map(|k| format!("{} IS NULL", self.quote(&k.column))),
        );
        let sql = format!(
            "UPDATE {} SET {} WHERE {}",
            self.quote(self.name()),
            sets.join(", "),
            conditions.join(" AND ")
        );
        let done = db
            .execute_raw(Statement::from_sql_and_values(self.backend, sql, values))
            .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// A text column as a string, or a binary one as UTF-8.
fn text_or_bytes(r: &QueryResult, i: usize) -> CliResult<String> {
    match r.try_get_by_index::<String>(i) {
        Ok(t) => Ok(t),
        Err(_) => Ok(String::from_utf8_lossy(&r.try_get_by_index::<Vec<u8>>(i)?).into_owned()),
    }
}

/// A plaintext column's bytes, whatever its type (text, bytes), or NULL.
fn plaintext(r: &QueryResult, i: usize) -> CliResult<Option<Vec<u8>>> {
    if let Ok(b) = r.try_get_by_index::<Option<Vec<u8>>>(i) {
        return Ok(b);
    }
    Ok(r.try_get_by_index::<Option<String>>(i)?
        .map(String::into_bytes))
}

/// Rows per compare-and-set UPDATE of re-wrapped key columns: with three key columns, 1,000
/// bound values, well under every database's limit.
const ROWS_PER_UPDATE: usize = 100;

/// The id column's value, whatever its SQL type.
fn decode_id(r: &QueryResult) -> CliResult<IdValue> {
    if let Ok(i) = r.try_get_by_index::<i64>(0) {
        return Ok(IdValue::Int(i));
    }
    if let Ok(i) = r.try_get_by_index::<i32>(0) {
        return Ok(IdValue::Int(i.into()));
    }
    if let Ok(s) = r.try_get_by_index::<String>(0) {
        return Ok(IdValue::Text(s));
    }
    if let Ok(b) = r.try_get_by_index::<Vec<u8>>(0) {
        return Ok(IdValue::Bytes(b));
    }
    // PostgreSQL's uuid type (a 16-byte binary elsewhere was read above).
    let uuid = r.try_get_by_index::<sea_orm::prelude::Uuid>(0)?;
    Ok(IdValue::Uuid(uuid.into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::{ConnectOptions, Database};

    async fn fixture() -> (tempfile::TempDir, Table, DatabaseConnection) {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("t.manifest.json");
        let kek = cmk_core::policy::kek_id("private");
        std::fs::write(
            &manifest,
            format!(
                r#"{{"schema": "cmk.manifest/1", "format": 1, "table": "t",
                "tenant": {{"column": "tenant_id"}}, "row_id": {{"column": "id", "bound": true}},
                "fields": [{{"column": "a", "class": "private", "encoding": "utf8", "nullable": false,
                  "search": "none", "normalizer": null, "index_column": null, "hide_null": false, "pad_to": 0}}],
                "key_columns": [{{"class": "private", "column": "private_keys", "kek_id": {kek}}}]}}"#
            ),
        )
        .unwrap();
        let table = Table::load(&manifest, DbBackend::Sqlite).unwrap();
        let mut options = ConnectOptions::new("sqlite::memory:");
        options.max_connections(1).sqlx_logging(false);
        let db = Database::connect(options).await.unwrap();
        db.execute_unprepared(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, tenant_id TEXT, a BLOB, private_keys BLOB);
             INSERT INTO t VALUES (1, 'acme', x'00', x'01'), (2, 'acme', x'00', x'02'),
               (3, 'acme', x'00', x'03'), (4, 'acme', x'00', x'04'), (5, 'acme', x'00', x'05');",
        )
        .await
        .unwrap();
        (dir, table, db)
    }

    async fn key_columns(db: &DatabaseConnection) -> Vec<Vec<u8>> {
        db.query_all_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT private_keys FROM t ORDER BY id",
        ))
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get_by_index::<Vec<u8>>(0).unwrap())
        .collect()
    }

    #[tokio::test]
    async fn a_batch_update_writes_only_rows_unchanged_since_they_were_read() {
        let (_dir, table, db) = fixture().await;
        let rows = table.chunk(&db, None, None, 100).await.unwrap();
        assert_eq!(rows.len(), 5);
        // Row 3 is written by someone else after the read.
        db.execute_unprepared("UPDATE t SET private_keys = x'33' WHERE id = 3")
            .await
            .unwrap();
        let new: Vec<Rewrapped<'_>> = rows
            .iter()
            .map(|r| {
                (
                    r,
                    vec![(0, vec![0xa0 + r.key_columns[0].as_ref().unwrap()[0]])],
                )
            })
            .collect();
        assert_eq!(table.write_key_columns(&db, &new).await.unwrap(), 4);
        assert_eq!(
            key_columns(&db).await,
            vec![vec![0xa1], vec![0xa2], vec![0x33], vec![0xa4], vec![0xa5]]
        );
        // Rows past the batch size are written in several statements, all of them.
        let rows = table
            .chunk(&db, Some(&IdValue::Int(3)), None, 100)
            .await
            .unwrap();
        let new: Vec<_> = std::iter::repeat_n(&rows[0], ROWS_PER_UPDATE + 1)
            .map(|r| (r, vec![(0, vec![0xee])]))
            .collect();
        assert_eq!(
            table.write_key_columns(&db, &new).await.unwrap(),
            1,
            "row 4 once"
        );
    }
}
