// The `Store` implementation of one driver. Included into `store/sqlite.rs` and
// `store/postgres.rs` (see `store/sql/mod.rs`), where `Backend` is the store type (with a
// `pool: DbPool` field), `Db`/`DbRow` the driver's types, and `adapt_ddl` /
// `lock_migrations` the driver's schema hooks.

impl Backend {
    /// Brings the schema up to date, one transaction per migration (a newer schema than this
    /// build knows is refused rather than misread).
    async fn migrate(&self) -> Result<(), StoreError> {
        // The lock comes first: conductors starting together on one database must not race
        // even to create the version table.
        let mut lock = self.pool.begin().await?;
        lock_migrations(&mut lock).await?;
        sqlx::query(sqlx::AssertSqlSafe(
            adapt_ddl(
                "CREATE TABLE IF NOT EXISTS ironboot_schema (version INTEGER PRIMARY KEY, \
                 name TEXT NOT NULL, applied_at TEXT NOT NULL)",
            )
            .into_owned(),
        ))
        .execute(&mut *lock)
        .await?;
        let current: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) FROM ironboot_schema",
        )
        .fetch_one(&mut *lock)
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
            for sql in statements {
                sqlx::query(sqlx::AssertSqlSafe(adapt_ddl(sql).into_owned()))
                    .execute(&mut *lock)
                    .await
                    .map_err(fail)?;
            }
            sqlx::query(
                "INSERT INTO ironboot_schema (version, name, applied_at) VALUES ($1, $2, $3)",
            )
            .bind(version)
            .bind(name)
            .bind(format_ts(&chrono::Utc::now()))
            .execute(&mut *lock)
            .await
            .map_err(fail)?;
            tracing::info!(version, name, "applied database migration");
        }
        lock.commit().await?;
        Ok(())
    }

    async fn node_id(&self, uuid: Uuid) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT id FROM nodes WHERE uuid = $1")
            .bind(uuid.to_string())
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NodeNotFound(uuid.to_string()))
    }
}

/// Maps a UNIQUE or foreign key violation on ports to what clashed.
fn port_conflict(e: sqlx::Error, port: &Port) -> StoreError {
    if unique_violation(&e, "ports", "address", None) {
        return StoreError::DuplicateMac(port.address.to_string());
    }
    if unique_violation(&e, "ports", "uuid", None) {
        return StoreError::DuplicatePort(port.uuid.to_string());
    }
    if foreign_key_violation(&e) {
        return StoreError::NodeNotFound(port.node_uuid.to_string());
    }
    StoreError::Db(e)
}

/// Maps a UNIQUE violation on nodes to the field that clashed.
fn node_conflict(e: sqlx::Error, node: &Node) -> StoreError {
    if unique_violation(&e, "nodes", "name", None) {
        StoreError::DuplicateNode {
            field: "name",
            value: node.name.clone().unwrap_or_default(),
        }
    } else if unique_violation(&e, "nodes", "instance_uuid", Some("nodes_instance_uuid")) {
        StoreError::InstanceAssociated {
            instance: node
                .instance_uuid
                .map(|u| u.to_string())
                .unwrap_or_default(),
        }
    } else if unique_violation(&e, "nodes", "uuid", None) {
        StoreError::DuplicateNode {
            field: "uuid",
            value: node.uuid.to_string(),
        }
    } else {
        StoreError::Db(e)
    }
}

fn allocation_conflict(e: sqlx::Error, a: &Allocation) -> StoreError {
    if unique_violation(&e, "allocations", "name", None) {
        StoreError::DuplicateAllocation {
            field: "name",
            value: a.name.clone().unwrap_or_default(),
        }
    } else if unique_violation(&e, "allocations", "uuid", None) {
        StoreError::DuplicateAllocation {
            field: "UUID",
            value: a.uuid.to_string(),
        }
    } else {
        StoreError::Db(e)
    }
}

/// `AND <column> LIKE '%text%'`, the text matching literally.
fn push_contains(qb: &mut QueryBuilder<Db>, column: &str, text: &str) {
    qb.push(format!(" AND {column} LIKE "))
        .push_bind(contains_pattern(text))
        .push(" ESCAPE '\\'");
}

/// `AND <column> IN (...)`.
fn push_in(qb: &mut QueryBuilder<Db>, column: &str, values: &[String]) {
    qb.push(format!(" AND {column} IN ("));
    let mut sep = qb.separated(", ");
    for v in values {
        sep.push_bind(v.clone());
    }
    qb.push(")");
}

/// Keyset paging on (sort expression, id) after `marker`'s row, then the order and limit.
fn push_page(
    qb: &mut QueryBuilder<Db>,
    table: &str,
    sort: &str,
    descending: bool,
    marker: Option<Uuid>,
    limit: Option<u32>,
) {
    let (cmp, dir) = if descending {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    if let Some(marker) = marker {
        qb.push(format!(
            " AND ({sort}, id) {cmp} (SELECT {sort}, id FROM {table} WHERE uuid = "
        ))
        .push_bind(marker.to_string())
        .push(")");
    }
    qb.push(format!(" ORDER BY {sort} {dir}, id {dir}"));
    if let Some(limit) = limit {
        qb.push(" LIMIT ").push_bind(i64::from(limit));
    }
}

/// The filters of a node query, as `AND ...` clauses.
fn push_node_filters(qb: &mut QueryBuilder<Db>, query: &NodeQuery) {
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
        push_in(qb, "shard", &query.shards);
    }
    if let Some(before) = &query.provision_updated_before {
        qb.push(" AND provision_updated_at IS NOT NULL AND provision_updated_at < ")
            .push_bind(format_ts(before));
    }
}

#[async_trait::async_trait]
impl Store for Backend {
    async fn create_node(&self, node: &Node) -> Result<(), StoreError> {
        let sql = insert_sql("nodes", NODE_WRITE_COLUMNS);
        bind_node(sqlx::query(sqlx::AssertSqlSafe(sql)), node)
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
        if let Some(marker) = query.marker {
            // An unknown marker is an error, not an empty page.
            self.node_id(marker).await?;
        }
        let mut qb: QueryBuilder<Db> =
            QueryBuilder::new(format!("SELECT {} FROM nodes WHERE 1 = 1", node_columns()));
        push_node_filters(&mut qb, query);
        let sort = sort_expr(query.sort_key.column(), query.sort_key.sort_as());
        push_page(
            &mut qb,
            "nodes",
            &sort,
            query.descending,
            query.marker,
            query.limit,
        );
        let rows = qb.build().fetch_all(&self.pool).await?;
        rows.iter().map(node_from_row).collect()
    }

    async fn save_node(&self, node: &Node) -> Result<Node, StoreError> {
        let now = crate::model::now();
        let sql = update_sql("nodes", NODE_WRITE_COLUMNS);
        let done = bind_node(sqlx::query(sqlx::AssertSqlSafe(sql)), node)
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

    /// One conditional UPDATE: of two conductors racing for a node, exactly one sees a row
    /// changed (the other's WHERE no longer matches once the first commits).
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
        bind_port(sqlx::query(sqlx::AssertSqlSafe(sql)), port)
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
        let done = bind_port(sqlx::query(sqlx::AssertSqlSafe(sql)), port)
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
        let mut qb: QueryBuilder<Db> =
            QueryBuilder::new(format!("SELECT {} FROM ports WHERE 1 = 1", port_columns()));
        if let Some(node) = query.node {
            qb.push(" AND node_uuid = ").push_bind(node.to_string());
        }
        if !query.addresses.is_empty() {
            let addresses: Vec<String> = query
                .addresses
                .iter()
                .map(|a| a.as_str().to_string())
                .collect();
            push_in(&mut qb, "address", &addresses);
        }
        if let Some(d) = &query.description_contains {
            push_contains(&mut qb, "description", d);
        }
        for (column, values) in [
            ("shard", &query.node_shards),
            ("conductor_group", &query.node_conductor_groups),
        ] {
            if !values.is_empty() {
                qb.push(" AND node_uuid IN (SELECT uuid FROM nodes WHERE 1 = 1");
                push_in(&mut qb, column, values);
                qb.push(")");
            }
        }
        let sort = sort_expr(query.sort_key.column(), query.sort_key.sort_as());
        push_page(
            &mut qb,
            "ports",
            &sort,
            query.descending,
            query.marker,
            query.limit,
        );
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

    async fn create_allocation(&self, a: &Allocation) -> Result<(), StoreError> {
        let sql = insert_sql("allocations", ALLOCATION_WRITE_COLUMNS);
        bind_allocation(sqlx::query(sqlx::AssertSqlSafe(sql)), a)
            .bind(a.uuid.to_string())
            .bind(format_ts(&a.created_at))
            .execute(&self.pool)
            .await
            .map_err(|e| allocation_conflict(e, a))?;
        Ok(())
    }

    async fn get_allocation(&self, ident: &AllocationIdent) -> Result<Allocation, StoreError> {
        let (column, value) = match ident {
            AllocationIdent::Uuid(u) => ("uuid", u.to_string()),
            AllocationIdent::Name(n) => ("name", n.clone()),
        };
        let sql = format!(
            "SELECT {} FROM allocations WHERE {column} = $1",
            allocation_columns()
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(value)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::AllocationNotFound(ident.to_string()))?;
        allocation_from_row(&row)
    }

    async fn list_allocations(&self, q: &AllocationQuery) -> Result<Vec<Allocation>, StoreError> {
        let mut qb: QueryBuilder<Db> = QueryBuilder::new(format!(
            "SELECT {} FROM allocations WHERE 1 = 1",
            allocation_columns()
        ));
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
        let sort = sort_expr(q.sort_key.column(), q.sort_key.sort_as());
        push_page(
            &mut qb,
            "allocations",
            &sort,
            q.descending,
            q.marker,
            q.limit,
        );
        let rows = qb.build().fetch_all(&self.pool).await?;
        rows.iter().map(allocation_from_row).collect()
    }

    async fn save_allocation(&self, a: &Allocation) -> Result<Allocation, StoreError> {
        let now = crate::model::now();
        let sql = update_sql("allocations", ALLOCATION_WRITE_COLUMNS);
        let done = bind_allocation(sqlx::query(sqlx::AssertSqlSafe(sql)), a)
            .bind(format_ts(&now))
            .bind(a.uuid.to_string())
            .execute(&self.pool)
            .await
            .map_err(|e| allocation_conflict(e, a))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::AllocationNotFound(a.uuid.to_string()));
        }
        let mut saved = a.clone();
        saved.updated_at = Some(now);
        Ok(saved)
    }

    async fn delete_allocation(&self, uuid: Uuid) -> Result<(), StoreError> {
        let done = sqlx::query("DELETE FROM allocations WHERE uuid = $1")
            .bind(uuid.to_string())
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::AllocationNotFound(uuid.to_string()));
        }
        Ok(())
    }

    async fn register_conductor(&self, c: &ConductorRegistration) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO conductors (hostname, conductor_group, api_url, online, created_at, \
             updated_at) VALUES ($1, $2, $3, TRUE, $4, $4) \
             ON CONFLICT (hostname) DO UPDATE SET online = TRUE, updated_at = excluded.updated_at, \
             conductor_group = excluded.conductor_group, api_url = excluded.api_url",
        )
        .bind(&c.hostname)
        .bind(&c.conductor_group)
        .bind(&c.api_url)
        .bind(format_ts(&chrono::Utc::now()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn touch_conductor(&self, host: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE conductors SET updated_at = $1 WHERE hostname = $2 AND online")
            .bind(format_ts(&chrono::Utc::now()))
            .bind(host)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn unregister_conductor(&self, host: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE conductors SET online = FALSE, updated_at = $1 WHERE hostname = $2")
            .bind(format_ts(&chrono::Utc::now()))
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
        rows.iter().map(conductor_from_row).collect()
    }

    async fn save_inventory(&self, record: &crate::store::InventoryRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO node_inventory (node_uuid, inventory, plugin_data, created_at) \
             VALUES ($1, $2, $3, $4) \
             ON CONFLICT (node_uuid) DO UPDATE SET inventory = excluded.inventory, \
             plugin_data = excluded.plugin_data, created_at = excluded.created_at",
        )
        .bind(record.node_uuid.to_string())
        .bind(record.inventory.to_string())
        .bind(record.plugin_data.to_string())
        .bind(format_ts(&chrono::Utc::now()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn get_inventory(
        &self,
        node: Uuid,
    ) -> Result<Option<crate::store::InventoryRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT inventory, plugin_data FROM node_inventory WHERE node_uuid = $1",
        )
        .bind(node.to_string())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let json = |col: &str| -> Result<serde_json::Value, StoreError> {
            let text: String = sqlx::Row::try_get(&row, col)?;
            Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
        };
        Ok(Some(crate::store::InventoryRecord {
            node_uuid: node,
            inventory: json("inventory")?,
            plugin_data: json("plugin_data")?,
        }))
    }
}
