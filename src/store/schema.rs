//! The schema, as an ordered list of migrations applied at start-up.
//!
//! Each migration runs in its own transaction and is recorded in `ironboot_schema`; a database
//! written by a newer ironboot is refused rather than misread. The SQL sticks to what SQLite and
//! PostgreSQL both accept (TEXT timestamps in fixed-width RFC 3339 UTC, so they sort as text).

/// (version, name, SQL statements).
pub const MIGRATIONS: &[(i64, &str, &[&str])] = &[
    (
        1,
        "nodes, ports, conductors",
        &[
            "CREATE TABLE nodes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            uuid TEXT NOT NULL UNIQUE,
            name TEXT UNIQUE,
            driver TEXT NOT NULL,
            boot_interface TEXT NOT NULL,
            deploy_interface TEXT NOT NULL,
            power_interface TEXT NOT NULL,
            driver_info TEXT NOT NULL DEFAULT '{}',
            properties TEXT NOT NULL DEFAULT '{}',
            instance_info TEXT NOT NULL DEFAULT '{}',
            driver_internal_info TEXT NOT NULL DEFAULT '{}',
            extra TEXT NOT NULL DEFAULT '{}',
            resource_class TEXT,
            provision_state TEXT NOT NULL,
            target_provision_state TEXT,
            power_state TEXT,
            target_power_state TEXT,
            last_error TEXT,
            reservation TEXT,
            conductor_affinity TEXT,
            maintenance BOOLEAN NOT NULL DEFAULT FALSE,
            maintenance_reason TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT,
            provision_updated_at TEXT
        )",
            "CREATE INDEX nodes_provision_state ON nodes (provision_state)",
            "CREATE INDEX nodes_reservation ON nodes (reservation)",
            "CREATE TABLE ports (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            uuid TEXT NOT NULL UNIQUE,
            node_uuid TEXT NOT NULL REFERENCES nodes (uuid) ON DELETE CASCADE,
            address TEXT NOT NULL UNIQUE,
            pxe_enabled BOOLEAN NOT NULL DEFAULT TRUE,
            extra TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL,
            updated_at TEXT
        )",
            "CREATE INDEX ports_node_uuid ON ports (node_uuid)",
            "CREATE TABLE conductors (
            hostname TEXT PRIMARY KEY,
            online BOOLEAN NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )",
        ],
    ),
    (
        2,
        "nodes.management_interface",
        &["ALTER TABLE nodes ADD COLUMN management_interface TEXT NOT NULL DEFAULT 'fake'"],
    ),
    (
        3,
        "conductors.conductor_group, conductors.api_url",
        &[
            "ALTER TABLE conductors ADD COLUMN conductor_group TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE conductors ADD COLUMN api_url TEXT",
        ],
    ),
    (
        4,
        "the full Ironic node and port models",
        // The column defaults are fake-hardware's default interfaces; nodes of other types are
        // set to their do-nothing interfaces at the end.
        &[
            "ALTER TABLE nodes ADD COLUMN bios_interface TEXT NOT NULL DEFAULT 'fake'",
            "ALTER TABLE nodes ADD COLUMN console_interface TEXT NOT NULL DEFAULT 'fake'",
            "ALTER TABLE nodes ADD COLUMN firmware_interface TEXT NOT NULL DEFAULT 'fake'",
            "ALTER TABLE nodes ADD COLUMN inspect_interface TEXT NOT NULL DEFAULT 'fake'",
            "ALTER TABLE nodes ADD COLUMN network_interface TEXT NOT NULL DEFAULT 'noop'",
            "ALTER TABLE nodes ADD COLUMN raid_interface TEXT NOT NULL DEFAULT 'fake'",
            "ALTER TABLE nodes ADD COLUMN rescue_interface TEXT NOT NULL DEFAULT 'fake'",
            "ALTER TABLE nodes ADD COLUMN storage_interface TEXT NOT NULL DEFAULT 'noop'",
            "ALTER TABLE nodes ADD COLUMN vendor_interface TEXT NOT NULL DEFAULT 'fake'",
            "ALTER TABLE nodes ADD COLUMN traits TEXT NOT NULL DEFAULT '[]'",
            "ALTER TABLE nodes ADD COLUMN instance_uuid TEXT",
            "ALTER TABLE nodes ADD COLUMN allocation_uuid TEXT",
            "ALTER TABLE nodes ADD COLUMN automated_clean BOOLEAN",
            "ALTER TABLE nodes ADD COLUMN conductor_group TEXT NOT NULL DEFAULT ''",
            "ALTER TABLE nodes ADD COLUMN description TEXT",
            "ALTER TABLE nodes ADD COLUMN owner TEXT",
            "ALTER TABLE nodes ADD COLUMN lessee TEXT",
            "ALTER TABLE nodes ADD COLUMN protected BOOLEAN NOT NULL DEFAULT FALSE",
            "ALTER TABLE nodes ADD COLUMN protected_reason TEXT",
            "ALTER TABLE nodes ADD COLUMN retired BOOLEAN NOT NULL DEFAULT FALSE",
            "ALTER TABLE nodes ADD COLUMN retired_reason TEXT",
            "ALTER TABLE nodes ADD COLUMN network_data TEXT NOT NULL DEFAULT '{}'",
            "ALTER TABLE nodes ADD COLUMN raid_config TEXT NOT NULL DEFAULT '{}'",
            "ALTER TABLE nodes ADD COLUMN target_raid_config TEXT NOT NULL DEFAULT '{}'",
            "ALTER TABLE nodes ADD COLUMN boot_mode TEXT",
            "ALTER TABLE nodes ADD COLUMN secure_boot BOOLEAN",
            "ALTER TABLE nodes ADD COLUMN shard TEXT",
            "ALTER TABLE nodes ADD COLUMN parent_node TEXT",
            "ALTER TABLE nodes ADD COLUMN instance_name TEXT",
            "ALTER TABLE nodes ADD COLUMN disable_power_off BOOLEAN NOT NULL DEFAULT FALSE",
            "ALTER TABLE nodes ADD COLUMN inspection_started_at TEXT",
            "ALTER TABLE nodes ADD COLUMN inspection_finished_at TEXT",
            // One node per instance, as Ironic enforces; NULLs do not clash.
            "CREATE UNIQUE INDEX nodes_instance_uuid ON nodes (instance_uuid)",
            "ALTER TABLE ports ADD COLUMN local_link_connection TEXT NOT NULL DEFAULT '{}'",
            "ALTER TABLE ports ADD COLUMN physical_network TEXT",
            "ALTER TABLE ports ADD COLUMN is_smartnic BOOLEAN NOT NULL DEFAULT FALSE",
            "ALTER TABLE ports ADD COLUMN internal_info TEXT NOT NULL DEFAULT '{}'",
            "ALTER TABLE ports ADD COLUMN name TEXT",
            "ALTER TABLE ports ADD COLUMN description TEXT",
            "ALTER TABLE ports ADD COLUMN vendor TEXT",
            "ALTER TABLE ports ADD COLUMN category TEXT",
            "ALTER TABLE ports ADD COLUMN available_for_dynamic_portgroup BOOLEAN NOT NULL DEFAULT TRUE",
            // Nodes of the other hardware types take their types' do-nothing interfaces.
            "UPDATE nodes SET bios_interface = 'no-bios', console_interface = 'no-console',
                firmware_interface = 'no-firmware', inspect_interface = 'no-inspect',
                raid_interface = 'no-raid', rescue_interface = 'no-rescue',
                vendor_interface = 'no-vendor'
             WHERE driver <> 'fake-hardware'",
        ],
    ),
    (
        5,
        "allocations",
        &[
            "CREATE TABLE allocations (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            uuid TEXT NOT NULL UNIQUE,
            name TEXT UNIQUE,
            node_uuid TEXT,
            state TEXT NOT NULL,
            last_error TEXT,
            resource_class TEXT,
            traits TEXT NOT NULL DEFAULT '[]',
            candidate_nodes TEXT NOT NULL DEFAULT '[]',
            extra TEXT NOT NULL DEFAULT '{}',
            owner TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT
        )",
            "CREATE INDEX allocations_node_uuid ON allocations (node_uuid)",
        ],
    ),
    (
        6,
        "node inventories",
        &["CREATE TABLE node_inventory (
            node_uuid TEXT PRIMARY KEY REFERENCES nodes (uuid) ON DELETE CASCADE,
            inventory TEXT NOT NULL,
            plugin_data TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL
        )"],
    ),
];

/// The newest schema version this build knows.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map(|m| m.0).unwrap_or(0)
}

/// Formats a timestamp the way every table stores it (fixed width, sorts as text).
pub fn format_ts(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Parses a stored timestamp.
pub fn parse_ts(
    column: &'static str,
    s: &str,
) -> Result<chrono::DateTime<chrono::Utc>, super::StoreError> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| super::StoreError::Corrupt {
            column,
            value: s.to_string(),
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_increase_and_timestamps_sort_as_text() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].0 < w[1].0));
        let a = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .unwrap()
            .to_utc();
        let b = a + chrono::Duration::microseconds(1);
        assert!(format_ts(&a) < format_ts(&b));
        assert_eq!(parse_ts("x", &format_ts(&b)).unwrap(), b);
        assert!(parse_ts("x", "yesterday").is_err());
    }
}
