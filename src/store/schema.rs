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
