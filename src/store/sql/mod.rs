//! The SQL both stores share.
//!
//! ironboot keeps one SQL implementation of [`super::Store`] and compiles it once per sqlx
//! driver: `sqlite.rs` (the embedded default) and `postgres.rs` (several conductors on one
//! database) each define the driver's types (`Db`, `DbRow`, `DbPool`) and `include!` the
//! driver-typed code of `rows.inc.rs` and `store.inc.rs`. sqlx's generic bounds for "any
//! database" would have to be repeated on every function; two compilations of the same text
//! keep the SQL in one place instead. What does not depend on the driver lives here: column
//! lists, statement builders, value parsing, constraint names.
//!
//! The SQL sticks to what SQLite and PostgreSQL both accept (`$n` parameters, TEXT timestamps
//! in fixed-width RFC 3339 UTC that sort as text, JSON as TEXT, `ON CONFLICT`, row-value
//! comparisons for keyset paging); the one schema difference, the auto-incrementing `id`, is
//! translated by the PostgreSQL store when it applies a migration.

use uuid::Uuid;

use super::{SortAs, StoreError};
use crate::model::{Fields, PowerState, ProvisionState};

/// The columns a node save writes, in the order `bind_node` binds them.
pub const NODE_WRITE_COLUMNS: &[&str] = &[
    "name",
    "driver",
    "boot_interface",
    "deploy_interface",
    "power_interface",
    "management_interface",
    "bios_interface",
    "console_interface",
    "firmware_interface",
    "inspect_interface",
    "network_interface",
    "raid_interface",
    "rescue_interface",
    "storage_interface",
    "vendor_interface",
    "driver_info",
    "properties",
    "instance_info",
    "driver_internal_info",
    "extra",
    "resource_class",
    "provision_state",
    "target_provision_state",
    "power_state",
    "target_power_state",
    "last_error",
    "conductor_affinity",
    "maintenance",
    "maintenance_reason",
    "provision_updated_at",
    "traits",
    "instance_uuid",
    "allocation_uuid",
    "automated_clean",
    "conductor_group",
    "description",
    "owner",
    "lessee",
    "protected",
    "protected_reason",
    "retired",
    "retired_reason",
    "network_data",
    "raid_config",
    "target_raid_config",
    "boot_mode",
    "secure_boot",
    "shard",
    "parent_node",
    "instance_name",
    "disable_power_off",
    "inspection_started_at",
    "inspection_finished_at",
];

/// The columns a port save writes, in the order `bind_port` binds them.
pub const PORT_WRITE_COLUMNS: &[&str] = &[
    "node_uuid",
    "address",
    "pxe_enabled",
    "extra",
    "local_link_connection",
    "physical_network",
    "is_smartnic",
    "internal_info",
    "name",
    "description",
    "vendor",
    "category",
    "available_for_dynamic_portgroup",
];

/// The columns an allocation save writes, in the order `bind_allocation` binds them.
pub const ALLOCATION_WRITE_COLUMNS: &[&str] = &[
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

/// Every column a node read selects.
pub fn node_columns() -> String {
    format!(
        "uuid, reservation, created_at, updated_at, {}",
        NODE_WRITE_COLUMNS.join(", ")
    )
}

pub fn port_columns() -> String {
    format!(
        "uuid, created_at, updated_at, {}",
        PORT_WRITE_COLUMNS.join(", ")
    )
}

pub fn allocation_columns() -> String {
    format!(
        "uuid, created_at, updated_at, {}",
        ALLOCATION_WRITE_COLUMNS.join(", ")
    )
}

/// `INSERT INTO <table> (<columns>, uuid, created_at, updated_at) VALUES ($1, ..., NULL)`.
pub fn insert_sql(table: &str, columns: &[&str]) -> String {
    let n = columns.len();
    let params: Vec<String> = (1..=n + 2).map(|i| format!("${i}")).collect();
    format!(
        "INSERT INTO {table} ({}, uuid, created_at, updated_at) VALUES ({}, NULL)",
        columns.join(", "),
        params.join(", ")
    )
}

/// `UPDATE <table> SET <columns> = $i, updated_at = $n+1 WHERE uuid = $n+2`.
pub fn update_sql(table: &str, columns: &[&str]) -> String {
    let n = columns.len();
    let sets: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{c} = ${}", i + 1))
        .collect();
    format!(
        "UPDATE {table} SET {}, updated_at = ${} WHERE uuid = ${}",
        sets.join(", "),
        n + 1,
        n + 2
    )
}

/// The expression a list sorts by (nullable columns sort as their empty value, so keyset
/// paging over them is well defined).
pub fn sort_expr(c: &str, sort_as: SortAs) -> String {
    match sort_as {
        SortAs::NotNull => c.to_string(),
        SortAs::NullableText => format!("COALESCE({c}, '')"),
        SortAs::NullableBool => format!("COALESCE({c}, FALSE)"),
    }
}

/// `%text%` for `LIKE ... ESCAPE '\'`, with `%`, `_` and `\` matching literally.
pub fn contains_pattern(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

pub fn json_text(fields: &Fields) -> String {
    serde_json::Value::Object(fields.clone()).to_string()
}

pub fn opt_uuid_text(u: &Option<Uuid>) -> Option<String> {
    u.map(|u| u.to_string())
}

pub fn corrupt(column: &'static str, value: &str, reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        column,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

pub fn parse_json_object(column: &'static str, text: &str) -> Result<Fields, StoreError> {
    match serde_json::from_str(text) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(corrupt(column, text, "not a JSON object")),
        Err(e) => Err(corrupt(column, text, e)),
    }
}

pub fn parse_state(column: &'static str, s: &str) -> Result<ProvisionState, StoreError> {
    s.parse()
        .map_err(|e: crate::model::state::UnknownValue| corrupt(column, s, e))
}

pub fn parse_power(
    column: &'static str,
    s: Option<String>,
) -> Result<Option<PowerState>, StoreError> {
    s.map(|s| PowerState::parse(&s).ok_or_else(|| corrupt(column, &s, "unknown power state")))
        .transpose()
}

pub fn parse_uuid(column: &'static str, s: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(s).map_err(|e| corrupt(column, s, e))
}

/// Whether a database error is a UNIQUE violation of `table.column`: SQLite names
/// `table.column` in its message, PostgreSQL names the constraint (`table_column_key` for a
/// UNIQUE column, the index name for a unique index).
pub fn unique_violation(e: &sqlx::Error, table: &str, column: &str, index: Option<&str>) -> bool {
    let sqlx::Error::Database(db) = e else {
        return false;
    };
    if !db.is_unique_violation() {
        return false;
    }
    let key = format!("{table}_{column}_key");
    db.message().contains(&format!("{table}.{column}"))
        || db.constraint() == Some(key.as_str())
        || index.is_some_and(|i| db.constraint() == Some(i))
}

pub fn foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_foreign_key_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_bind_every_column() {
        let insert = insert_sql("t", &["a", "b"]);
        assert_eq!(
            insert,
            "INSERT INTO t (a, b, uuid, created_at, updated_at) VALUES ($1, $2, $3, $4, NULL)"
        );
        assert_eq!(
            update_sql("t", &["a", "b"]),
            "UPDATE t SET a = $1, b = $2, updated_at = $3 WHERE uuid = $4"
        );
        assert_eq!(contains_pattern("50%_a\\b"), "%50\\%\\_a\\\\b%");
    }
}
