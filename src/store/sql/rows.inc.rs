// How nodes, ports and allocations map to rows of one driver: the binds of a write and the
// reads. Included into `store/sqlite.rs` and `store/postgres.rs` (see `store/sql/mod.rs`),
// where `Db` and `DbRow` name the driver's types.

type Query<'q> = sqlx::query::Query<'q, Db, <Db as sqlx::Database>::Arguments>;

fn bind_node<'q>(q: Query<'q>, n: &Node) -> Query<'q> {
    let q = q
        .bind(n.name.clone())
        .bind(n.driver.clone())
        .bind(n.boot_interface.clone())
        .bind(n.deploy_interface.clone())
        .bind(n.power_interface.clone())
        .bind(n.management_interface.clone())
        .bind(n.bios_interface.clone())
        .bind(n.console_interface.clone())
        .bind(n.firmware_interface.clone())
        .bind(n.inspect_interface.clone())
        .bind(n.network_interface.clone())
        .bind(n.raid_interface.clone())
        .bind(n.rescue_interface.clone())
        .bind(n.storage_interface.clone())
        .bind(n.vendor_interface.clone())
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
        .bind(n.provision_updated_at.as_ref().map(format_ts));
    q.bind(serde_json::Value::from(n.traits.clone()).to_string())
        .bind(opt_uuid_text(&n.instance_uuid))
        .bind(opt_uuid_text(&n.allocation_uuid))
        .bind(n.automated_clean)
        .bind(n.conductor_group.clone())
        .bind(n.description.clone())
        .bind(n.owner.clone())
        .bind(n.lessee.clone())
        .bind(n.protected)
        .bind(n.protected_reason.clone())
        .bind(n.retired)
        .bind(n.retired_reason.clone())
        .bind(json_text(&n.network_data))
        .bind(json_text(&n.raid_config))
        .bind(json_text(&n.target_raid_config))
        .bind(n.boot_mode.clone())
        .bind(n.secure_boot)
        .bind(n.shard.clone())
        .bind(opt_uuid_text(&n.parent_node))
        .bind(n.instance_name.clone())
        .bind(n.disable_power_off)
        .bind(n.inspection_started_at.as_ref().map(format_ts))
        .bind(n.inspection_finished_at.as_ref().map(format_ts))
}

fn json_field(row: &DbRow, column: &'static str) -> Result<Fields, StoreError> {
    let text: String = row.try_get(column)?;
    parse_json_object(column, &text)
}

fn string_list(row: &DbRow, column: &'static str) -> Result<Vec<String>, StoreError> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| corrupt(column, &text, e))
}

fn opt_ts(
    row: &DbRow,
    column: &'static str,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, StoreError> {
    let v: Option<String> = row.try_get(column)?;
    v.map(|s| parse_ts(column, &s)).transpose()
}

fn opt_uuid(row: &DbRow, column: &'static str) -> Result<Option<Uuid>, StoreError> {
    let v: Option<String> = row.try_get(column)?;
    v.map(|s| parse_uuid(column, &s)).transpose()
}

fn node_from_row(row: &DbRow) -> Result<Node, StoreError> {
    let uuid: String = row.try_get("uuid")?;
    let state: String = row.try_get("provision_state")?;
    let target: Option<String> = row.try_get("target_provision_state")?;
    let created: String = row.try_get("created_at")?;
    let s = |c: &str| row.try_get::<String, _>(c);
    Ok(Node {
        uuid: parse_uuid("uuid", &uuid)?,
        name: row.try_get("name")?,
        driver: s("driver")?,
        boot_interface: s("boot_interface")?,
        deploy_interface: s("deploy_interface")?,
        power_interface: s("power_interface")?,
        management_interface: s("management_interface")?,
        bios_interface: s("bios_interface")?,
        console_interface: s("console_interface")?,
        firmware_interface: s("firmware_interface")?,
        inspect_interface: s("inspect_interface")?,
        network_interface: s("network_interface")?,
        raid_interface: s("raid_interface")?,
        rescue_interface: s("rescue_interface")?,
        storage_interface: s("storage_interface")?,
        vendor_interface: s("vendor_interface")?,
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
        traits: string_list(row, "traits")?,
        instance_uuid: opt_uuid(row, "instance_uuid")?,
        allocation_uuid: opt_uuid(row, "allocation_uuid")?,
        automated_clean: row.try_get("automated_clean")?,
        conductor_group: s("conductor_group")?,
        description: row.try_get("description")?,
        owner: row.try_get("owner")?,
        lessee: row.try_get("lessee")?,
        protected: row.try_get("protected")?,
        protected_reason: row.try_get("protected_reason")?,
        retired: row.try_get("retired")?,
        retired_reason: row.try_get("retired_reason")?,
        network_data: json_field(row, "network_data")?,
        raid_config: json_field(row, "raid_config")?,
        target_raid_config: json_field(row, "target_raid_config")?,
        boot_mode: row.try_get("boot_mode")?,
        secure_boot: row.try_get("secure_boot")?,
        shard: row.try_get("shard")?,
        parent_node: opt_uuid(row, "parent_node")?,
        instance_name: row.try_get("instance_name")?,
        disable_power_off: row.try_get("disable_power_off")?,
        inspection_started_at: opt_ts(row, "inspection_started_at")?,
        inspection_finished_at: opt_ts(row, "inspection_finished_at")?,
        created_at: parse_ts("created_at", &created)?,
        updated_at: opt_ts(row, "updated_at")?,
        provision_updated_at: opt_ts(row, "provision_updated_at")?,
    })
}

fn bind_port<'q>(q: Query<'q>, p: &Port) -> Query<'q> {
    q.bind(p.node_uuid.to_string())
        .bind(p.address.as_str().to_string())
        .bind(p.pxe_enabled)
        .bind(json_text(&p.extra))
        .bind(json_text(&p.local_link_connection))
        .bind(p.physical_network.clone())
        .bind(p.is_smartnic)
        .bind(json_text(&p.internal_info))
        .bind(p.name.clone())
        .bind(p.description.clone())
        .bind(p.vendor.clone())
        .bind(p.category.clone())
        .bind(p.available_for_dynamic_portgroup)
}

fn port_from_row(row: &DbRow) -> Result<Port, StoreError> {
    let uuid: String = row.try_get("uuid")?;
    let node: String = row.try_get("node_uuid")?;
    let address: String = row.try_get("address")?;
    let created: String = row.try_get("created_at")?;
    Ok(Port {
        uuid: parse_uuid("uuid", &uuid)?,
        node_uuid: parse_uuid("node_uuid", &node)?,
        address: MacAddress::parse(&address).map_err(|e| corrupt("address", &address, e))?,
        pxe_enabled: row.try_get("pxe_enabled")?,
        extra: json_field(row, "extra")?,
        local_link_connection: json_field(row, "local_link_connection")?,
        physical_network: row.try_get("physical_network")?,
        is_smartnic: row.try_get("is_smartnic")?,
        internal_info: json_field(row, "internal_info")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        vendor: row.try_get("vendor")?,
        category: row.try_get("category")?,
        available_for_dynamic_portgroup: row.try_get("available_for_dynamic_portgroup")?,
        created_at: parse_ts("created_at", &created)?,
        updated_at: opt_ts(row, "updated_at")?,
    })
}

fn bind_allocation<'q>(q: Query<'q>, a: &Allocation) -> Query<'q> {
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

fn allocation_from_row(row: &DbRow) -> Result<Allocation, StoreError> {
    let uuid: String = row.try_get("uuid")?;
    let node: Option<String> = row.try_get("node_uuid")?;
    let state: String = row.try_get("state")?;
    let created: String = row.try_get("created_at")?;
    let candidates: Vec<String> = string_list(row, "candidate_nodes")?;
    Ok(Allocation {
        uuid: parse_uuid("uuid", &uuid)?,
        name: row.try_get("name")?,
        node_uuid: node.map(|n| parse_uuid("node_uuid", &n)).transpose()?,
        state: AllocationState::parse(&state)
            .ok_or_else(|| corrupt("state", &state, "unknown allocation state"))?,
        last_error: row.try_get("last_error")?,
        resource_class: row.try_get("resource_class")?,
        traits: string_list(row, "traits")?,
        candidate_nodes: candidates
            .iter()
            .map(|c| parse_uuid("candidate_nodes", c))
            .collect::<Result<_, _>>()?,
        extra: json_field(row, "extra")?,
        owner: row.try_get("owner")?,
        created_at: parse_ts("created_at", &created)?,
        updated_at: opt_ts(row, "updated_at")?,
    })
}

fn conductor_from_row(r: &DbRow) -> Result<ConductorRecord, StoreError> {
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
}
