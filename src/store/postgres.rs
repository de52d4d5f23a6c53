//! The shared store: PostgreSQL, for several conductors on one database. The SQL is the
//! embedded store's (`store/sql/`); only the schema's key types and the migration lock differ.

use std::borrow::Cow;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{QueryBuilder, Row};
use uuid::Uuid;

use super::schema::{self, format_ts, parse_ts};
use super::settings::mask_password;
use super::sql::*;
use super::{
    AllocationIdent, AllocationQuery, ConductorRecord, ConductorRegistration, NodeIdent, NodeQuery,
    PortQuery, Store, StoreError,
};
use crate::model::{Allocation, AllocationState, Fields, MacAddress, Node, Port};

type Db = sqlx::Postgres;
type DbRow = sqlx::postgres::PgRow;
type Backend = PostgresStore;

/// Any constant shared by every ironboot on the database: the advisory lock that serialises
/// migrations ("ironboot" in ASCII).
const MIGRATION_LOCK: i64 = 0x69726f6e626f6f74;

#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/database`) and brings the
    /// schema up to date; several conductors may do this at once.
    pub async fn open(url: &str) -> Result<PostgresStore, StoreError> {
        let shown = mask_password(url);
        let open = |source| StoreError::Open {
            url: shown.clone(),
            source,
        };
        let options: PgConnectOptions = url.parse().map_err(open)?;
        let options = options.application_name("ironboot");
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(open)?;
        let store = PostgresStore { pool };
        store.migrate().await?;
        Ok(store)
    }
}

/// The schema is written in SQLite's dialect; PostgreSQL gets 64-bit integers throughout
/// (what the rows are read as) and sequences for the surrogate keys.
fn adapt_ddl(sql: &str) -> Cow<'_, str> {
    Cow::Owned(
        sql.replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY")
            .replace(" INTEGER", " BIGINT"),
    )
}

/// Serialises schema changes between conductors starting together: a transaction-scoped
/// advisory lock, released by the commit.
async fn lock_migrations(tx: &mut sqlx::Transaction<'_, Db>) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

include!("sql/rows.inc.rs");
include!("sql/store.inc.rs");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_gets_postgres_key_types() {
        assert_eq!(
            adapt_ddl("CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER NOT NULL)"),
            "CREATE TABLE t (id BIGSERIAL PRIMARY KEY, n BIGINT NOT NULL)"
        );
    }
}
