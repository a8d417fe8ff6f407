//! A compare-and-set condition: the row's key columns still hold what was read.

use diesel::backend::Backend;
use diesel::expression::{AppearsOnTable, Expression, ValidGrouping, is_aggregate};
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{Bool, HasSqlType};

use crate::column::{KeyColumn, KeyColumnSql};

/// `(k1 = ? AND k2 IS NULL AND ...)` over a sealed row's key columns, as read. Every write of
/// a class stores a fresh DEK in its key column, so the condition fails once any other
/// writer has written the row since it was read.
#[derive(Debug, Clone)]
pub struct KeyColumnsUnchanged {
    columns: Vec<(&'static str, Option<KeyColumn>)>,
}

impl KeyColumnsUnchanged {
    /// The condition for a row whose key columns were read as `columns`
    /// (`Encrypted::key_columns` of the sealed row).
    pub fn new(columns: Vec<(&'static str, Option<&[u8]>)>) -> Self {
        KeyColumnsUnchanged {
            columns: columns
                .into_iter()
                .map(|(name, value)| (name, value.map(|v| KeyColumn::__from_cmk(v.to_vec()))))
                .collect(),
        }
    }

    /// The condition for a job's guarded write (`cmk_core::jobs::GuardedWrite::guard`).
    pub fn from_guard(guard: cmk_core::jobs::KeyGuard) -> Self {
        KeyColumnsUnchanged {
            columns: guard
                .into_iter()
                .map(|(name, value)| (name, value.map(KeyColumn::__from_cmk)))
                .collect(),
        }
    }
}

impl Expression for KeyColumnsUnchanged {
    type SqlType = Bool;
}

// The column names come from the derive, which also declares them in the sealed type that
// `Selectable` checks against the table; so the condition may stand in any query of it.
impl<QS> AppearsOnTable<QS> for KeyColumnsUnchanged {}

impl ValidGrouping<()> for KeyColumnsUnchanged {
    type IsAggregate = is_aggregate::Never;
}

// The SQL text depends on which key columns are NULL: no static query id, so Diesel caches
// prepared statements by their text.
impl QueryId for KeyColumnsUnchanged {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<DB> QueryFragment<DB> for KeyColumnsUnchanged
where
    DB: Backend + HasSqlType<KeyColumnSql>,
    KeyColumn: ToSql<KeyColumnSql, DB>,
{
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, DB>) -> diesel::QueryResult<()> {
        out.push_sql("(");
        if self.columns.is_empty() {
            out.push_sql("1 = 1");
        }
        for (i, (name, value)) in self.columns.iter().enumerate() {
            if i > 0 {
                out.push_sql(" AND ");
            }
            out.push_identifier(name)?;
            match value {
                Some(v) => {
                    out.push_sql(" = ");
                    out.push_bind_param::<KeyColumnSql, _>(v)?;
                }
                None => out.push_sql(" IS NULL"),
            }
        }
        out.push_sql(")");
        Ok(())
    }
}
