//! The embedded store: SQLite in WAL mode, one file in the data directory.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::Utc;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};
use uuid::Uuid;

use super::schema::{self, format_ts, parse_ts};
use super::{
    ConductorRecord, ConductorRegistration, NodeIdent, NodeQuery, NodeSortKey, PortQuery, Store,
    StoreError,
};
use crate::model::{Fields, MacAddress, Node, Port, PowerState, ProvisionState};

const NODE_COLUMNS: &str = "uuid, name, driver, boot_interface, deploy_interface, power_interface, \
     management_interface, driver_info, properties, instance_info, driver_internal_info, extra, \
     resource_class, provision_state, target_provision_state, power_state, target_power_state, \
     last_error, reservation, conductor_affinity, maintenance, maintenance_reason, created_at, \
     updated_at, provision_updated_at";

/// The columns [`bind_node_fields`] binds, in its order (everything a save writes).
const NODE_WRITE_COLUMNS: &[&str] = &[
    "name",
    "driver",
    "boot_interface",
    "deploy_interface",
    "power_interface",
    "management_interface",
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
];

/// `INSERT INTO nodes (<written columns>, uuid, created_at, updated_at) VALUES ($1, ...)`.
fn insert_node_sql() -> String {
    let n = NODE_WRITE_COLUMNS.len();
    let params: Vec<String> = (1..=n + 2).map(|i| format!("${i}")).collect();
    format!(
        "INSERT INTO nodes ({}, uuid, created_at, updated_at) VALUES ({}, NULL)",
        NODE_WRITE_COLUMNS.join(", "),
        params.join(", ")
    )
}

/// `UPDATE nodes SET <written columns> = $i, updated_at = $n+1 WHERE uuid = $n+2`.
fn update_node_sql() -> String {
    let n = NODE_WRITE_COLUMNS.len();
    let sets: Vec<String> = NODE_WRITE_COLUMNS
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{c} = ${}", i + 1))
        .collect();
    format!(
        "UPDATE nodes SET {}, updated_at = ${} WHERE uuid = ${}",
        sets.join(", "),
        n + 1,
        n + 2
    )
}

const PORT_COLUMNS: &str = "uuid, node_uuid, address, pxe_enabled, extra, created_at, updated_at";

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
        // In-memory databases exist per connection, so those get exactly one.
        let max = if url.contains(":memory:") { 1 } else { 8 };
        let pool = SqlitePoolOptions::new()
            .max_connections(max)
            .min_connections(1)
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

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::query("CREATE TABLE IF NOT EXISTS ironboot_schema (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
            .execute(&self.pool)
            .await?;
        let current: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM ironboot_schema")
                .fetch_one(&self.pool)
                .await?;
        if current > schema::latest_version() {
            return Err(StoreError::SchemaTooNew {
                found: current,
                known: schema::latest_version(),
            });
        }
        for &(version, name, statements) in schema::MIGRATIONS.iter().filter(|m| m.0 > current) {
            let fail = |source| StoreError::Migration {
                version,
                name,
                source,
            };
            let mut tx = self.pool.begin().await.map_err(fail)?;
            for sql in statements {
                sqlx::query(sqlx::AssertSqlSafe(*sql))
                    .execute(&mut *tx)
                    .await
                    .map_err(fail)?;
            }
            sqlx::query(
                "INSERT INTO ironboot_schema (version, name, applied_at) VALUES ($1, $2, $3)",
            )
            .bind(version)
            .bind(name)
            .bind(format_ts(&Utc::now()))
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
            tx.commit().await.map_err(fail)?;
            tracing::info!(version, name, "applied database migration");
        }
        Ok(())
    }

    async fn node_id(&self, uuid: Uuid) -> Result<(i64, Node), StoreError> {
        let sql = format!("SELECT id, {NODE_COLUMNS} FROM nodes WHERE uuid = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NodeNotFound(uuid.to_string()))?;
        Ok((row.try_get("id")?, node_from_row(&row)?))
    }
}

fn json_text(fields: &Fields) -> String {
    serde_json::Value::Object(fields.clone()).to_string()
}

fn json_field(row: &SqliteRow, column: &'static str) -> Result<Fields, StoreError> {
    let text: String = row.try_get(column)?;
    match serde_json::from_str(&text) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(StoreError::Corrupt {
            column,
            value: text,
            reason: "not a JSON object".into(),
        }),
        Err(e) => Err(StoreError::Corrupt {
            column,
            value: text,
            reason: e.to_string(),
        }),
    }
}

fn opt_ts(
    row: &SqliteRow,
    column: &'static str,
) -> Result<Option<chrono::DateTime<Utc>>, StoreError> {
    let v: Option<String> = row.try_get(column)?;
    v.map(|s| parse_ts(column, &s)).transpose()
}

fn parse_state(column: &'static str, s: &str) -> Result<ProvisionState, StoreError> {
    s.parse()
        .map_err(|e: crate::model::state::UnknownValue| StoreError::Corrupt {
            column,
            value: s.to_string(),
            reason: e.to_string(),
        })
}

fn parse_power(column: &'static str, s: Option<String>) -> Result<Option<PowerState>, StoreError> {
    s.map(|s| {
        PowerState::parse(&s).ok_or(StoreError::Corrupt {
            column,
            value: s.clone(),
            reason: "unknown power state".into(),
        })
    })
    .transpose()
}

fn parse_uuid(column: &'static str, s: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(s).map_err(|e| StoreError::Corrupt {
        column,
        value: s.to_string(),
        reason: e.to_string(),
    })
}

fn node_from_row(row: &SqliteRow) -> Result<Node, StoreError> {
    let uuid: String = row.try_get("uuid")?;
    let state: String = row.try_get("provision_state")?;
    let target: Option<String> = row.try_get("target_provision_state")?;
    let created: String = row.try_get("created_at")?;
    Ok(Node {
        uuid: parse_uuid("uuid", &uuid)?,
        name: row.try_get("name")?,
        driver: row.try_get("driver")?,
        boot_interface: row.try_get("boot_interface")?,
        deploy_interface: row.try_get("deploy_interface")?,
        power_interface: row.try_get("power_interface")?,
        management_interface: row.try_get("management_interface")?,
        driver_info: json_field(row, "driver_info")?,
        properties: json_field(row, "properties")?,
        instance_info: json_field(row, "instance_info")?,
        driver_internal_info: json_field(row, "driver_internal_info")?,
        extra: json_field(row, "extra")?,
        resource_class: row.try_get("resource_class")?,
        provision_state: parse_state("provision_state", &state)?,
        target_provision_state: target
            .map(|t| parse_state("target_provision_state", &t))
            .transpose()?,
        power_state: parse_power("power_state", row.try_get("power_state")?)?,
        target_power_state: parse_power("target_power_state", row.try_get("target_power_state")?)?,
        last_error: row.try_get("last_error")?,
        reservation: row.try_get("reservation")?,
        conductor_affinity: row.try_get("conductor_affinity")?,
        maintenance: row.try_get("maintenance")?,
        maintenance_reason: row.try_get("maintenance_reason")?,
        created_at: parse_ts("created_at", &created)?,
        updated_at: opt_ts(row, "updated_at")?,
        provision_updated_at: opt_ts(row, "provision_updated_at")?,
    })
}

fn port_from_row(row: &SqliteRow) -> Result<Port, StoreError> {
    let uuid: String = row.try_get("uuid")?;
    let node: String = row.try_get("node_uuid")?;
    let address: String = row.try_get("address")?;
    let created: String = row.try_get("created_at")?;
    Ok(Port {
        uuid: parse_uuid("uuid", &uuid)?,
        node_uuid: parse_uuid("node_uuid", &node)?,
        address: MacAddress::parse(&address).map_err(|e| StoreError::Corrupt {
            column: "address",
            value: address.clone(),
            reason: e.to_string(),
        })?,
        pxe_enabled: row.try_get("pxe_enabled")?,
        extra: json_field(row, "extra")?,
        created_at: parse_ts("created_at", &created)?,
        updated_at: opt_ts(row, "updated_at")?,
    })
}

/// Maps a UNIQUE violation on nodes to the field that clashed.
fn node_conflict(e: sqlx::Error, node: &Node) -> StoreError {
    if let sqlx::Error::Database(db) = &e
        && db.is_unique_violation()
    {
        return if db.message().contains("nodes.name") {
            StoreError::DuplicateNode {
                field: "name",
                value: node.name.clone().unwrap_or_default(),
            }
        } else {
            StoreError::DuplicateNode {
                field: "uuid",
                value: node.uuid.to_string(),
            }
        };
    }
    StoreError::Db(e)
}

fn sort_column(key: NodeSortKey) -> &'static str {
    match key {
        NodeSortKey::Id => "id",
        NodeSortKey::Uuid => "uuid",
        NodeSortKey::Name => "COALESCE(name, '')",
        NodeSortKey::CreatedAt => "created_at",
        NodeSortKey::ProvisionState => "provision_state",
        NodeSortKey::Driver => "driver",
    }
}

fn bind_node_fields<'q>(
    q: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments>,
    n: &Node,
) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments> {
    q.bind(n.name.clone())
        .bind(n.driver.clone())
        .bind(n.boot_interface.clone())
        .bind(n.deploy_interface.clone())
        .bind(n.power_interface.clone())
        .bind(n.management_interface.clone())
        .bind(json_text(&n.driver_info))
        .bind(json_text(&n.properties))
        .bind(json_text(&n.instance_info))
        .bind(json_text(&n.driver_internal_info))
        .bind(json_text(&n.extra))
        .bind(n.resource_class.clone())
        .bind(n.provision_state.as_str())
        .bind(n.target_provision_state.map(|s| s.as_str()))
        .bind(n.power_state.map(|s| s.as_str()))
        .bind(n.target_power_state.map(|s| s.as_str()))
        .bind(n.last_error.clone())
        .bind(n.conductor_affinity.clone())
        .bind(n.maintenance)
        .bind(n.maintenance_reason.clone())
        .bind(n.provision_updated_at.as_ref().map(format_ts))
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn create_node(&self, node: &Node) -> Result<(), StoreError> {
        let sql = insert_node_sql();
        let q = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
        bind_node_fields(q, node)
            .bind(node.uuid.to_string())
            .bind(format_ts(&node.created_at))
            .execute(&self.pool)
            .await
            .map_err(|e| node_conflict(e, node))?;
        Ok(())
    }

    async fn get_node(&self, ident: &NodeIdent) -> Result<Node, StoreError> {
        let (column, value) = match ident {
            NodeIdent::Uuid(u) => ("uuid", u.to_string()),
            NodeIdent::Name(n) => ("name", n.clone()),
        };
        let sql = format!("SELECT {NODE_COLUMNS} FROM nodes WHERE {column} = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(value)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NodeNotFound(ident.to_string()))?;
        node_from_row(&row)
    }

    async fn list_nodes(&self, query: &NodeQuery) -> Result<Vec<Node>, StoreError> {
        let mut qb: QueryBuilder<Sqlite> =
            QueryBuilder::new(format!("SELECT {NODE_COLUMNS} FROM nodes WHERE 1 = 1"));
        if let Some(state) = query.provision_state {
            qb.push(" AND provision_state = ").push_bind(state.as_str());
        }
        if let Some(m) = query.maintenance {
            qb.push(" AND maintenance = ").push_bind(m);
        }
        if let Some(d) = &query.driver {
            qb.push(" AND driver = ").push_bind(d.clone());
        }
        match query.reserved {
            Some(true) => {
                qb.push(" AND reservation IS NOT NULL");
            }
            Some(false) => {
                qb.push(" AND reservation IS NULL");
            }
            None => {}
        }
        if let Some(before) = &query.provision_updated_before {
            qb.push(" AND provision_updated_at IS NOT NULL AND provision_updated_at < ")
                .push_bind(format_ts(before));
        }
        let col = sort_column(query.sort_key);
        let (cmp, dir) = if query.descending {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        if let Some(marker) = query.marker {
            // Keyset pagination on (sort column, id), so ties on the sort column are stable.
            let (marker_id, _) = self.node_id(marker).await?;
            qb.push(format!(
                " AND ({col}, id) {cmp} (SELECT {col}, id FROM nodes WHERE id = "
            ))
            .push_bind(marker_id)
            .push(")");
        }
        qb.push(format!(" ORDER BY {col} {dir}, id {dir}"));
        if let Some(limit) = query.limit {
            qb.push(" LIMIT ").push_bind(i64::from(limit));
        }
        let rows = qb.build().fetch_all(&self.pool).await?;
        rows.iter().map(node_from_row).collect()
    }

    async fn save_node(&self, node: &Node) -> Result<Node, StoreError> {
        let now = crate::model::now();
        let sql = update_node_sql();
        let q = sqlx::query(sqlx::AssertSqlSafe(sql));
        let done = bind_node_fields(q, node)
            .bind(format_ts(&now))
            .bind(node.uuid.to_string())
            .execute(&self.pool)
            .await
            .map_err(|e| node_conflict(e, node))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NodeNotFound(node.uuid.to_string()));
        }
        let mut saved = node.clone();
        saved.updated_at = Some(now);
        Ok(saved)
    }

    async fn delete_node(&self, uuid: Uuid) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM nodes WHERE uuid = $1")
            .bind(uuid.to_string())
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NodeNotFound(uuid.to_string()));
        }
        Ok(())
    }

    async fn reserve_node(&self, ident: &NodeIdent, host: &str) -> Result<Node, StoreError> {
        let node = self.get_node(ident).await?;
        let done = sqlx::query(
            "UPDATE nodes SET reservation = $1 WHERE uuid = $2 AND reservation IS NULL",
        )
        .bind(host)
        .bind(node.uuid.to_string())
        .execute(&self.pool)
        .await?;
        let current = self.get_node(&NodeIdent::Uuid(node.uuid)).await?;
        if done.rows_affected() == 1 {
            return Ok(current);
        }
        Err(StoreError::NodeLocked {
            node: node.uuid.to_string(),
            holder: current
                .reservation
                .unwrap_or_else(|| "(released meanwhile)".into()),
        })
    }

    async fn release_node(&self, uuid: Uuid, host: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE nodes SET reservation = NULL WHERE uuid = $1 AND reservation = $2")
            .bind(uuid.to_string())
            .bind(host)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn release_reservations(&self, host: &str) -> Result<u64, StoreError> {
        let done = sqlx::query("UPDATE nodes SET reservation = NULL WHERE reservation = $1")
            .bind(host)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn create_port(&self, port: &Port) -> Result<(), StoreError> {
        let res = sqlx::query(
            "INSERT INTO ports (uuid, node_uuid, address, pxe_enabled, extra, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(port.uuid.to_string())
        .bind(port.node_uuid.to_string())
        .bind(port.address.as_str())
        .bind(port.pxe_enabled)
        .bind(json_text(&port.extra))
        .bind(format_ts(&port.created_at))
        .execute(&self.pool)
        .await;
        match res {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(db))
                if db.is_unique_violation() && db.message().contains("address") =>
            {
                Err(StoreError::DuplicateMac(port.address.to_string()))
            }
            Err(sqlx::Error::Database(db)) if db.is_foreign_key_violation() => {
                Err(StoreError::NodeNotFound(port.node_uuid.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn get_port(&self, uuid: Uuid) -> Result<Port, StoreError> {
        let sql = format!("SELECT {PORT_COLUMNS} FROM ports WHERE uuid = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::PortNotFound(uuid.to_string()))?;
        port_from_row(&row)
    }

    async fn list_ports(&self, query: &PortQuery) -> Result<Vec<Port>, StoreError> {
        let mut qb: QueryBuilder<Sqlite> =
            QueryBuilder::new(format!("SELECT {PORT_COLUMNS} FROM ports WHERE 1 = 1"));
        if let Some(node) = query.node {
            qb.push(" AND node_uuid = ").push_bind(node.to_string());
        }
        if !query.addresses.is_empty() {
            qb.push(" AND address IN (");
            let mut sep = qb.separated(", ");
            for a in &query.addresses {
                sep.push_bind(a.as_str().to_string());
            }
            qb.push(")");
        }
        if let Some(marker) = query.marker {
            qb.push(" AND id > (SELECT id FROM ports WHERE uuid = ")
                .push_bind(marker.to_string())
                .push(")");
        }
        qb.push(" ORDER BY id");
        if let Some(limit) = query.limit {
            qb.push(" LIMIT ").push_bind(i64::from(limit));
        }
        let rows = qb.build().fetch_all(&self.pool).await?;
        rows.iter().map(port_from_row).collect()
    }

    async fn delete_port(&self, uuid: Uuid) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM ports WHERE uuid = $1")
            .bind(uuid.to_string())
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::PortNotFound(uuid.to_string()));
        }
        Ok(())
    }

    async fn register_conductor(&self, c: &ConductorRegistration) -> Result<(), StoreError> {
        let now = format_ts(&Utc::now());
        sqlx::query(
            "INSERT INTO conductors (hostname, conductor_group, api_url, online, created_at, updated_at) \
             VALUES ($1, $2, $3, TRUE, $4, $4) \
             ON CONFLICT (hostname) DO UPDATE SET online = TRUE, updated_at = excluded.updated_at, \
             conductor_group = excluded.conductor_group, api_url = excluded.api_url",
        )
        .bind(&c.hostname)
        .bind(&c.conductor_group)
        .bind(&c.api_url)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn touch_conductor(&self, host: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE conductors SET updated_at = $1 WHERE hostname = $2 AND online")
            .bind(format_ts(&Utc::now()))
            .bind(host)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn unregister_conductor(&self, host: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE conductors SET online = FALSE, updated_at = $1 WHERE hostname = $2")
            .bind(format_ts(&Utc::now()))
            .bind(host)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn list_conductors(&self) -> Result<Vec<ConductorRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT hostname, conductor_group, api_url, online, created_at, updated_at \
             FROM conductors ORDER BY hostname",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let created: String = r.try_get("created_at")?;
                let updated: String = r.try_get("updated_at")?;
                Ok(ConductorRecord {
                    hostname: r.try_get("hostname")?,
                    conductor_group: r.try_get("conductor_group")?,
                    api_url: r.try_get("api_url")?,
                    online: r.try_get("online")?,
                    created_at: parse_ts("created_at", &created)?,
                    updated_at: parse_ts("updated_at", &updated)?,
                })
            })
            .collect()
    }
}

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

    fn port(node: Uuid, mac: &str) -> Port {
        Port {
            uuid: Uuid::new_v4(),
            node_uuid: node,
            address: MacAddress::parse(mac).unwrap(),
            pxe_enabled: true,
            extra: Fields::new(),
            created_at: crate::model::now(),
            updated_at: None,
        }
    }

    #[tokio::test]
    async fn nodes_round_trip_and_conflict() {
        let s = SqliteStore::in_memory().await.unwrap();
        let mut a = node(Some("alpha"));
        s.create_node(&a).await.unwrap();
        let got = s.get_node(&NodeIdent::Name("alpha".into())).await.unwrap();
        assert_eq!(got, a);
        assert_eq!(s.get_node(&NodeIdent::Uuid(a.uuid)).await.unwrap(), a);
        let dup = node(Some("alpha"));
        assert!(matches!(
            s.create_node(&dup).await,
            Err(StoreError::DuplicateNode { field: "name", .. })
        ));
        let mut same_uuid = node(Some("beta"));
        same_uuid.uuid = a.uuid;
        assert!(matches!(
            s.create_node(&same_uuid).await,
            Err(StoreError::DuplicateNode { field: "uuid", .. })
        ));

        a.provision_state = ProvisionState::Manageable;
        a.power_state = Some(PowerState::Off);
        a.last_error = Some("boom".into());
        a.provision_updated_at = Some(crate::model::now());
        let saved = s.save_node(&a).await.unwrap();
        assert!(saved.updated_at.is_some());
        let got = s.get_node(&NodeIdent::Uuid(a.uuid)).await.unwrap();
        assert_eq!(got.provision_state, ProvisionState::Manageable);
        assert_eq!(got.power_state, Some(PowerState::Off));
        assert_eq!(got.last_error.as_deref(), Some("boom"));
        assert!(matches!(
            s.get_node(&NodeIdent::Name("nope".into())).await,
            Err(StoreError::NodeNotFound(n)) if n == "nope"
        ));
    }

    #[tokio::test]
    async fn reservations_are_exclusive() {
        let s = SqliteStore::in_memory().await.unwrap();
        let a = node(None);
        s.create_node(&a).await.unwrap();
        let id = NodeIdent::Uuid(a.uuid);
        let r = s.reserve_node(&id, "c1").await.unwrap();
        assert_eq!(r.reservation.as_deref(), Some("c1"));
        match s.reserve_node(&id, "c2").await {
            Err(StoreError::NodeLocked { holder, .. }) => assert_eq!(holder, "c1"),
            other => panic!("{other:?}"),
        }
        // save_node never clears the reservation.
        s.save_node(&a).await.unwrap();
        assert_eq!(
            s.get_node(&id).await.unwrap().reservation.as_deref(),
            Some("c1")
        );
        s.release_node(a.uuid, "c2").await.unwrap();
        assert!(
            s.get_node(&id).await.unwrap().reservation.is_some(),
            "only the holder releases"
        );
        s.release_node(a.uuid, "c1").await.unwrap();
        s.reserve_node(&id, "c2").await.unwrap();
        assert_eq!(s.release_reservations("c2").await.unwrap(), 1);
        assert!(s.get_node(&id).await.unwrap().reservation.is_none());
    }

    #[tokio::test]
    async fn listing_filters_and_pages() {
        let s = SqliteStore::in_memory().await.unwrap();
        let mut uuids = vec![];
        for i in 0..5 {
            let mut n = node(Some(&format!("n{i}")));
            if i % 2 == 0 {
                n.provision_state = ProvisionState::Available;
            }
            s.create_node(&n).await.unwrap();
            uuids.push(n.uuid);
        }
        let all = s.list_nodes(&NodeQuery::default()).await.unwrap();
        assert_eq!(all.iter().map(|n| n.uuid).collect::<Vec<_>>(), uuids);
        let avail = s
            .list_nodes(&NodeQuery {
                provision_state: Some(ProvisionState::Available),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(avail.len(), 3);
        let page1 = s
            .list_nodes(&NodeQuery {
                limit: Some(2),
                ..Default::default()
            })
            .await
            .unwrap();
        let page2 = s
            .list_nodes(&NodeQuery {
                limit: Some(2),
                marker: Some(page1[1].uuid),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            page2.iter().map(|n| n.uuid).collect::<Vec<_>>(),
            uuids[2..4]
        );
        let desc = s
            .list_nodes(&NodeQuery {
                sort_key: NodeSortKey::Name,
                descending: true,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(desc[0].name.as_deref(), Some("n4"));
        let unknown_marker = s
            .list_nodes(&NodeQuery {
                marker: Some(Uuid::new_v4()),
                ..Default::default()
            })
            .await;
        assert!(matches!(unknown_marker, Err(StoreError::NodeNotFound(_))));
    }

    #[tokio::test]
    async fn ports_unique_and_cascade() {
        let s = SqliteStore::in_memory().await.unwrap();
        let a = node(None);
        s.create_node(&a).await.unwrap();
        let p = port(a.uuid, "52:54:00:00:00:01");
        s.create_port(&p).await.unwrap();
        assert_eq!(s.get_port(p.uuid).await.unwrap(), p);
        let dup = port(a.uuid, "52:54:00:00:00:01");
        assert!(matches!(
            s.create_port(&dup).await,
            Err(StoreError::DuplicateMac(_))
        ));
        let orphan = port(Uuid::new_v4(), "52:54:00:00:00:02");
        assert!(matches!(
            s.create_port(&orphan).await,
            Err(StoreError::NodeNotFound(_))
        ));
        let by_mac = s
            .list_ports(&PortQuery {
                addresses: vec![MacAddress::parse("52:54:00:00:00:01").unwrap()],
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(by_mac.len(), 1);
        s.delete_node(a.uuid).await.unwrap();
        assert!(matches!(
            s.get_port(p.uuid).await,
            Err(StoreError::PortNotFound(_))
        ));
    }

    #[tokio::test]
    async fn conductors_register_and_go_offline() {
        let s = SqliteStore::in_memory().await.unwrap();
        let c1 = ConductorRegistration {
            hostname: "c1".into(),
            conductor_group: "rack-1".into(),
            api_url: "http://192.0.2.1:6385".into(),
        };
        s.register_conductor(&c1).await.unwrap();
        s.touch_conductor("c1").await.unwrap();
        s.unregister_conductor("c1").await.unwrap();
        let all = s.list_conductors().await.unwrap();
        assert_eq!(all.len(), 1);
        assert!(!all[0].online);
        s.register_conductor(&c1).await.unwrap();
        let back = &s.list_conductors().await.unwrap()[0];
        assert!(back.online);
        assert_eq!(back.conductor_group, "rack-1");
        assert_eq!(back.api_url.as_deref(), Some("http://192.0.2.1:6385"));
    }

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
