//! The embedded store: SQLite in WAL mode, one file in the data directory.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::Utc;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};
use uuid::Uuid;

use super::schema::{self, format_ts, parse_ts};
use super::{
    AllocationIdent, AllocationQuery, ConductorRecord, ConductorRegistration, InventoryRecord,
    NodeIdent, NodeQuery, NodeSortKey, PortQuery, SortAs, Store, StoreError,
};
use crate::model::{Allocation, Node, Port};

mod allocations;
mod rows;

use rows::{
    NODE_WRITE_COLUMNS, PORT_WRITE_COLUMNS, bind_node, bind_port, insert_sql, node_columns,
    node_from_row, port_columns, port_from_row, update_sql,
};

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
        let sql = format!("SELECT id, {} FROM nodes WHERE uuid = $1", node_columns());
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NodeNotFound(uuid.to_string()))?;
        Ok((row.try_get("id")?, node_from_row(&row)?))
    }
}

/// Maps a UNIQUE or foreign key violation on ports to what clashed.
fn port_conflict(e: sqlx::Error, port: &Port) -> StoreError {
    if let sqlx::Error::Database(db) = &e {
        if db.is_unique_violation() && db.message().contains("ports.address") {
            return StoreError::DuplicateMac(port.address.to_string());
        }
        if db.is_unique_violation() && db.message().contains("ports.uuid") {
            return StoreError::DuplicatePort(port.uuid.to_string());
        }
        if db.is_foreign_key_violation() {
            return StoreError::NodeNotFound(port.node_uuid.to_string());
        }
    }
    StoreError::Db(e)
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
        } else if db.message().contains("nodes.instance_uuid") {
            StoreError::InstanceAssociated {
                instance: node
                    .instance_uuid
                    .map(|u| u.to_string())
                    .unwrap_or_default(),
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

fn sort_column(key: NodeSortKey) -> String {
    sort_expr(key.column(), key.sort_as())
}

pub(super) fn sort_expr(c: &str, sort_as: SortAs) -> String {
    match sort_as {
        SortAs::NotNull => c.to_string(),
        SortAs::NullableText => format!("COALESCE({c}, '')"),
        SortAs::NullableBool => format!("COALESCE({c}, FALSE)"),
    }
}

/// `AND <column> LIKE '%text%'`, with the wildcards escaped so `%` and `_` match literally.
fn push_contains(qb: &mut QueryBuilder<Sqlite>, column: &str, text: &str) {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    qb.push(format!(" AND {column} LIKE "))
        .push_bind(format!("%{escaped}%"))
        .push(" ESCAPE '\\'");
}

/// The filters of a node query, as `AND ...` clauses.
fn push_node_filters(qb: &mut QueryBuilder<Sqlite>, query: &NodeQuery) {
    let text_eq: [(&str, &Option<String>); 8] = [
        ("driver", &query.driver),
        ("resource_class", &query.resource_class),
        ("conductor_group", &query.conductor_group),
        ("owner", &query.owner),
        ("lessee", &query.lessee),
        ("instance_name", &query.instance_name),
        ("instance_uuid", &query.instance_uuid.map(|u| u.to_string())),
        ("parent_node", &query.parent_node.map(|u| u.to_string())),
    ];
    for (col, value) in text_eq {
        if let Some(v) = value {
            qb.push(format!(" AND {col} = ")).push_bind(v.clone());
        }
    }
    if let Some(state) = query.provision_state {
        qb.push(" AND provision_state = ").push_bind(state.as_str());
    }
    for (col, value) in [
        ("maintenance", query.maintenance),
        ("retired", query.retired),
    ] {
        if let Some(v) = value {
            qb.push(format!(" AND {col} = ")).push_bind(v);
        }
    }
    let null_test = [
        ("reservation", query.reserved),
        ("instance_uuid", query.associated),
        ("shard", query.sharded),
    ];
    for (col, value) in null_test {
        match value {
            Some(true) => qb.push(format!(" AND {col} IS NOT NULL")),
            Some(false) => qb.push(format!(" AND {col} IS NULL")),
            None => qb,
        };
    }
    if let Some(p) = &query.project {
        qb.push(" AND (owner = ")
            .push_bind(p.clone())
            .push(" OR lessee = ")
            .push_bind(p.clone())
            .push(")");
    }
    if let Some(d) = &query.description_contains {
        push_contains(qb, "description", d);
    }
    if !query.shards.is_empty() {
        qb.push(" AND shard IN (");
        let mut sep = qb.separated(", ");
        for s in &query.shards {
            sep.push_bind(s.clone());
        }
        qb.push(")");
    }
    if let Some(before) = &query.provision_updated_before {
        qb.push(" AND provision_updated_at IS NOT NULL AND provision_updated_at < ")
            .push_bind(format_ts(before));
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn create_node(&self, node: &Node) -> Result<(), StoreError> {
        let sql = insert_sql("nodes", NODE_WRITE_COLUMNS);
        let q = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
        bind_node(q, node)
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
        let sql = format!("SELECT {} FROM nodes WHERE {column} = $1", node_columns());
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(value)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NodeNotFound(ident.to_string()))?;
        node_from_row(&row)
    }

    async fn list_nodes(&self, query: &NodeQuery) -> Result<Vec<Node>, StoreError> {
        let mut qb: QueryBuilder<Sqlite> =
            QueryBuilder::new(format!("SELECT {} FROM nodes WHERE 1 = 1", node_columns()));
        push_node_filters(&mut qb, query);
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
        let sql = update_sql("nodes", NODE_WRITE_COLUMNS);
        let q = sqlx::query(sqlx::AssertSqlSafe(sql));
        let done = bind_node(q, node)
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
        let sql = insert_sql("ports", PORT_WRITE_COLUMNS);
        let q = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
        bind_port(q, port)
            .bind(port.uuid.to_string())
            .bind(format_ts(&port.created_at))
            .execute(&self.pool)
            .await
            .map_err(|e| port_conflict(e, port))?;
        Ok(())
    }

    async fn save_port(&self, port: &Port) -> Result<Port, StoreError> {
        let now = crate::model::now();
        let sql = update_sql("ports", PORT_WRITE_COLUMNS);
        let q = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
        let done = bind_port(q, port)
            .bind(format_ts(&now))
            .bind(port.uuid.to_string())
            .execute(&self.pool)
            .await
            .map_err(|e| port_conflict(e, port))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::PortNotFound(port.uuid.to_string()));
        }
        let mut saved = port.clone();
        saved.updated_at = Some(now);
        Ok(saved)
    }

    async fn get_port(&self, uuid: Uuid) -> Result<Port, StoreError> {
        let sql = format!("SELECT {} FROM ports WHERE uuid = $1", port_columns());
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(uuid.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::PortNotFound(uuid.to_string()))?;
        port_from_row(&row)
    }

    async fn list_ports(&self, query: &PortQuery) -> Result<Vec<Port>, StoreError> {
        let mut qb: QueryBuilder<Sqlite> =
            QueryBuilder::new(format!("SELECT {} FROM ports WHERE 1 = 1", port_columns()));
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
        if let Some(d) = &query.description_contains {
            push_contains(&mut qb, "description", d);
        }
        if !query.node_shards.is_empty() {
            qb.push(" AND node_uuid IN (SELECT uuid FROM nodes WHERE shard IN (");
            let mut sep = qb.separated(", ");
            for s in &query.node_shards {
                sep.push_bind(s.clone());
            }
            qb.push("))");
        }
        let col = sort_expr(query.sort_key.column(), query.sort_key.sort_as());
        let (cmp, dir) = if query.descending {
            ("<", "DESC")
        } else {
            (">", "ASC")
        };
        if let Some(marker) = query.marker {
            // Keyset pagination on (sort column, id), as for nodes.
            qb.push(format!(
                " AND ({col}, id) {cmp} (SELECT {col}, id FROM ports WHERE uuid = "
            ))
            .push_bind(marker.to_string())
            .push(")");
        }
        qb.push(format!(" ORDER BY {col} {dir}, id {dir}"));
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

    async fn create_allocation(&self, allocation: &Allocation) -> Result<(), StoreError> {
        self.insert_allocation(allocation).await
    }

    async fn get_allocation(&self, ident: &AllocationIdent) -> Result<Allocation, StoreError> {
        self.select_allocation(ident).await
    }

    async fn list_allocations(
        &self,
        query: &AllocationQuery,
    ) -> Result<Vec<Allocation>, StoreError> {
        self.select_allocations(query).await
    }

    async fn save_allocation(&self, allocation: &Allocation) -> Result<Allocation, StoreError> {
        self.update_allocation(allocation).await
    }

    async fn delete_allocation(&self, uuid: Uuid) -> Result<(), StoreError> {
        self.remove_allocation(uuid).await
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

    async fn save_inventory(&self, record: &InventoryRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO node_inventory (node_uuid, inventory, plugin_data, created_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (node_uuid) DO UPDATE SET inventory = excluded.inventory, \
             plugin_data = excluded.plugin_data, created_at = excluded.created_at",
        )
        .bind(record.node_uuid.to_string())
        .bind(record.inventory.to_string())
        .bind(record.plugin_data.to_string())
        .bind(format_ts(&Utc::now()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_inventory(&self, node: Uuid) -> Result<Option<InventoryRecord>, StoreError> {
        let row =
            sqlx::query("SELECT inventory, plugin_data FROM node_inventory WHERE node_uuid = $1")
                .bind(node.to_string())
                .fetch_optional(&self.pool)
                .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let text = |col: &str| -> Result<serde_json::Value, StoreError> {
            let s: String = row.try_get(col)?;
            Ok(serde_json::from_str(&s).unwrap_or(serde_json::Value::Null))
        };
        Ok(Some(InventoryRecord {
            node_uuid: node,
            inventory: text("inventory")?,
            plugin_data: text("plugin_data")?,
        }))
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
    use crate::model::{HardwareType, MacAddress, PowerState, ProvisionState};
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
        Port::new(
            Uuid::new_v4(),
            node,
            MacAddress::parse(mac).unwrap(),
            crate::model::now(),
        )
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
                sort_key: NodeSortKey::parse("name").unwrap(),
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
