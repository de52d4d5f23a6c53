//! The embedded store: SQLite in WAL mode, one file in the data directory. The SQL itself is
//! shared with the PostgreSQL store (`store/sql/`).

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row};
use uuid::Uuid;

use super::schema::{self, format_ts, parse_ts};
use super::sql::*;
use super::{
    AllocationIdent, AllocationQuery, ConductorRecord, ConductorRegistration, NodeIdent, NodeQuery,
    PortQuery, Store, StoreError,
};
use crate::model::{Allocation, AllocationState, Fields, MacAddress, Node, Port};

type Db = sqlx::Sqlite;
type DbRow = sqlx::sqlite::SqliteRow;
type Backend = SqliteStore;

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let url = path.display().to_string();
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        Self::connect(options, &url).await
    }

    /// A private in-memory database (tests).
    pub async fn in_memory() -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(|e| StoreError::Open {
                url: "sqlite::memory:".into(),
                source: e,
            })?
            .foreign_keys(true);
        Self::connect(options, "sqlite::memory:").await
    }

    async fn connect(options: SqliteConnectOptions, url: &str) -> Result<SqliteStore, StoreError> {
        // In-memory databases exist per connection, so those get exactly one, kept open. A
        // file gets its connections on demand: a connection kept ready from the start would
        // be opened beside the first one, and two connections switching a new file to WAL at
        // once can fail with "database is locked".
        let memory = url.contains(":memory:");
        let pool = SqlitePoolOptions::new()
            .max_connections(if memory { 1 } else { 8 })
            .min_connections(u32::from(memory))
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Open {
                url: url.to_string(),
                source: e,
            })?;
        let store = SqliteStore { pool };
        store.migrate().await?;
        Ok(store)
    }
}

/// The schema as written (it is SQLite's dialect).
fn adapt_ddl(sql: &str) -> Cow<'_, str> {
    Cow::Borrowed(sql)
}

/// One process per database (the service holds a lock file beside it): nothing to do.
async fn lock_migrations(_tx: &mut sqlx::Transaction<'_, Db>) -> Result<(), StoreError> {
    Ok(())
}

include!("sql/rows.inc.rs");
include!("sql/store.inc.rs");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HardwareType;
    use serde_json::json;

    fn node(name: Option<&str>) -> Node {
        let mut n = Node::new(
            Uuid::new_v4(),
            HardwareType::find("fake-hardware").unwrap(),
            crate::model::now(),
        );
        n.name = name.map(String::from);
        n.driver_info = json!({"deploy_kernel": "file:///k"})
            .as_object()
            .unwrap()
            .clone();
        n
    }

    // The behaviour both stores share is checked against each in tests/it/store_backends.rs.

    #[tokio::test]
    async fn file_database_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ironboot.sqlite");
        let a = node(Some("persist"));
        {
            let s = SqliteStore::open(&path).await.unwrap();
            s.create_node(&a).await.unwrap();
        }
        let s = SqliteStore::open(&path).await.unwrap();
        assert_eq!(
            s.get_node(&NodeIdent::Uuid(a.uuid))
                .await
                .unwrap()
                .name
                .as_deref(),
            Some("persist")
        );
    }
}
