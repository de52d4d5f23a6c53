//! The allocations table of the SQLite store.

use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Row, Sqlite};
use uuid::Uuid;

use super::super::schema::{format_ts, parse_ts};
use super::super::{AllocationIdent, AllocationQuery, StoreError};
use super::rows::{insert_sql, json_field, json_text, opt_ts, parse_uuid, update_sql};
use super::{SqliteStore, sort_expr};
use crate::model::{Allocation, AllocationState};

/// The columns a save writes, in the order [`bind`] binds them.
const WRITE_COLUMNS: &[&str] = &[
    "name",
    "node_uuid",
    "state",
    "last_error",
    "resource_class",
    "traits",
    "candidate_nodes",
    "extra",
    "owner",
];

fn columns() -> String {
    format!("uuid, created_at, updated_at, {}", WRITE_COLUMNS.join(", "))
}

type Query<'q> = sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>;

fn bind<'q>(q: Query<'q>, a: &Allocation) -> Query<'q> {
    let uuids: Vec<String> = a.candidate_nodes.iter().map(Uuid::to_string).collect();
    q.bind(a.name.clone())
        .bind(a.node_uuid.map(|u| u.to_string()))
        .bind(a.state.as_str())
        .bind(a.last_error.clone())
        .bind(a.resource_class.clone())
        .bind(serde_json::Value::from(a.traits.clone()).to_string())
        .bind(serde_json::Value::from(uuids).to_string())
        .bind(json_text(&a.extra))
        .bind(a.owner.clone())
}

fn corrupt(column: &'static str, value: &str, reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        column,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn from_row(row: &SqliteRow) -> Result<Allocation, StoreError> {
    let uuid: String = row.try_get("uuid")?;
    let node: Option<String> = row.try_get("node_uuid")?;
    let state: String = row.try_get("state")?;
    let created: String = row.try_get("created_at")?;
    let traits: String = row.try_get("traits")?;
    let candidates: String = row.try_get("candidate_nodes")?;
    let candidate_nodes: Vec<String> = serde_json::from_str(&candidates)
        .map_err(|e| corrupt("candidate_nodes", &candidates, e))?;
    Ok(Allocation {
        uuid: parse_uuid("uuid", &uuid)?,
        name: row.try_get("name")?,
        node_uuid: node.map(|n| parse_uuid("node_uuid", &n)).transpose()?,
        state: AllocationState::parse(&state)
            .ok_or_else(|| corrupt("state", &state, "unknown allocation state"))?,
        last_error: row.try_get("last_error")?,
        resource_class: row.try_get("resource_class")?,
        traits: serde_json::from_str(&traits).map_err(|e| corrupt("traits", &traits, e))?,
        candidate_nodes: candidate_nodes
            .iter()
            .map(|c| parse_uuid("candidate_nodes", c))
            .collect::<Result<_, _>>()?,
        extra: json_field(row, "extra")?,
        owner: row.try_get("owner")?,
        created_at: parse_ts("created_at", &created)?,
        updated_at: opt_ts(row, "updated_at")?,
    })
}

fn conflict(e: sqlx::Error, a: &Allocation) -> StoreError {
    if let sqlx::Error::Database(db) = &e
        && db.is_unique_violation()
    {
        return if db.message().contains("allocations.name") {
            StoreError::DuplicateAllocation {
                field: "name",
                value: a.name.clone().unwrap_or_default(),
            }
        } else {
            StoreError::DuplicateAllocation {
                field: "UUID",
                value: a.uuid.to_string(),
            }
        };
    }
    StoreError::Db(e)
}

impl SqliteStore {
    pub(super) async fn insert_allocation(&self, a: &Allocation) -> Result<(), StoreError> {
        let sql = insert_sql("allocations", WRITE_COLUMNS);
        bind(sqlx::query(sqlx::AssertSqlSafe(sql.as_str())), a)
            .bind(a.uuid.to_string())
            .bind(format_ts(&a.created_at))
            .execute(&self.pool)
            .await
            .map_err(|e| conflict(e, a))?;
        Ok(())
    }

    pub(super) async fn select_allocation(
        &self,
        ident: &AllocationIdent,
    ) -> Result<Allocation, StoreError> {
        let (column, value) = match ident {
            AllocationIdent::Uuid(u) => ("uuid", u.to_string()),
            AllocationIdent::Name(n) => ("name", n.clone()),
        };
        let sql = format!("SELECT {} FROM allocations WHERE {column} = $1", columns());
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(value)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::AllocationNotFound(ident.to_string()))?;
        from_row(&row)
    }

    pub(super) async fn select_allocations(
        &self,
        q: &AllocationQuery,
    ) -> Result<Vec<Allocation>, StoreError> {
        let mut qb: QueryBuilder<Sqlite> =
            QueryBuilder::new(format!("SELECT {} FROM allocations WHERE 1 = 1", columns()));
        if let Some(n) = q.node {
            qb.push(" AND node_uuid = ").push_bind(n.to_string());
        }
        if let Some(rc) = &q.resource_class {
            qb.push(" AND resource_class = ").push_bind(rc.clone());
        }
        if let Some(s) = q.state {
            qb.push(" AND state = ").push_bind(s.as_str());
        }
        if let Some(o) = &q.owner {
            qb.push(" AND owner = ").push_bind(o.clone());
        }
        let col = sort_expr(q.sort_key.column(), q.sort_key.sort_as());
        let (cmp, dir) = if q.descending {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        if let Some(marker) = q.marker {
            qb.push(format!(
                " AND ({col}, id) {cmp} (SELECT {col}, id FROM allocations WHERE uuid = "
            ))
            .push_bind(marker.to_string())
            .push(")");
        }
        qb.push(format!(" ORDER BY {col} {dir}, id {dir}"));
        if let Some(limit) = q.limit {
            qb.push(" LIMIT ").push_bind(i64::from(limit));
        }
        let rows = qb.build().fetch_all(&self.pool).await?;
        rows.iter().map(from_row).collect()
    }

    pub(super) async fn update_allocation(&self, a: &Allocation) -> Result<Allocation, StoreError> {
        let now = crate::model::now();
        let sql = update_sql("allocations", WRITE_COLUMNS);
        let done = bind(sqlx::query(sqlx::AssertSqlSafe(sql.as_str())), a)
            .bind(format_ts(&now))
            .bind(a.uuid.to_string())
            .execute(&self.pool)
            .await
            .map_err(|e| conflict(e, a))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::AllocationNotFound(a.uuid.to_string()));
        }
        let mut saved = a.clone();
        saved.updated_at = Some(now);
        Ok(saved)
    }

    pub(super) async fn remove_allocation(&self, uuid: Uuid) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM allocations WHERE uuid = $1")
            .bind(uuid.to_string())
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::AllocationNotFound(uuid.to_string()));
        }
        Ok(())
    }
}
