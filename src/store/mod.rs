//! Persistence behind one small, backend-neutral trait.
//!
//! [`sqlite::SqliteStore`] is the embedded default (one process, WAL);
//! [`postgres::PostgresStore`] is shared by several conductors. Both run the same SQL
//! (`sql/`), compiled once per driver.
//!
//! Concurrency rule: the `reservation` column is only ever changed by [`Store::reserve_node`] and
//! [`Store::release_node`], atomically in the database. Whoever holds a node's reservation is the
//! only writer of its other fields ([`Store::save_node`] never touches `reservation`).

mod located;
pub mod postgres;
pub mod schema;
mod settings;
mod sql;
pub mod sqlite;

pub use located::Located;

pub use settings::{Database, DatabaseSettings, mask_password};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::model::{Allocation, AllocationState, MacAddress, Node, Port, ProvisionState};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("node {0} could not be found")]
    NodeNotFound(String),
    #[error("port {0} could not be found")]
    PortNotFound(String),
    #[error("allocation {0} could not be found")]
    AllocationNotFound(String),
    #[error("an allocation with {field} {value} already exists")]
    DuplicateAllocation { field: &'static str, value: String },
    #[error(
        "node {node} is locked by host {holder}, please retry after the current operation is completed"
    )]
    NodeLocked { node: String, holder: String },
    #[error("a node with {field} {value:?} already exists")]
    DuplicateNode { field: &'static str, value: String },
    #[error("a port with MAC address {0} already exists")]
    DuplicateMac(String),
    #[error("a port with UUID {0} already exists")]
    DuplicatePort(String),
    #[error("instance {instance} is already associated with another node")]
    InstanceAssociated { instance: String },
    #[error("cannot open database {url}: {source}")]
    Open { url: String, source: sqlx::Error },
    #[error("database migration {version} ({name}) failed: {source}")]
    Migration {
        version: i64,
        name: &'static str,
        source: sqlx::Error,
    },
    #[error(
        "database schema version {found} is newer than this ironboot understands ({known}); upgrade ironboot"
    )]
    SchemaTooNew { found: i64, known: i64 },
    #[error("stored {column} value {value:?} is invalid: {reason}")]
    Corrupt {
        column: &'static str,
        value: String,
        reason: String,
    },
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error(
        "the filesystem holding the database {} is full ({} free): {source}; free at least \
         {} there and ironboot resumes without a restart",
        path.display(), crate::fsutil::human_bytes(*free), crate::fsutil::human_bytes(*needed)
    )]
    NoSpace {
        path: std::path::PathBuf,
        free: u64,
        needed: u64,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "the database {} cannot be written (read-only file, directory or filesystem, or a \
         failing disk): {source}",
        path.display()
    )]
    NotWritable {
        path: std::path::PathBuf,
        #[source]
        source: sqlx::Error,
    },
}

/// Free space below which a database write is reported as a full disk, and what is asked
/// to be freed: SQLite needs room for its write-ahead log and a checkpoint.
pub const DB_MIN_FREE: u64 = 16 * 1024 * 1024;

impl StoreError {
    /// Names the database file in a storage failure (full disk, read-only, I/O error), which
    /// SQLite reports without it; every other error is returned unchanged.
    pub fn at(self, path: &std::path::Path) -> StoreError {
        let StoreError::Db(source) = self else {
            return self;
        };
        match storage_failure(&source) {
            Some(Storage::Full) => StoreError::NoSpace {
                free: crate::fsutil::free_bytes(path.parent().unwrap_or(path)).unwrap_or(0),
                needed: DB_MIN_FREE,
                path: path.to_path_buf(),
                source,
            },
            Some(Storage::NotWritable) => StoreError::NotWritable {
                path: path.to_path_buf(),
                source,
            },
            None => StoreError::Db(source),
        }
    }
}

enum Storage {
    Full,
    NotWritable,
}

/// SQLite's primary result codes (the low byte of an extended code): SQLITE_READONLY,
/// SQLITE_IOERR, SQLITE_FULL, SQLITE_CANTOPEN; or the OS error behind an I/O error.
fn storage_failure(e: &sqlx::Error) -> Option<Storage> {
    match e {
        sqlx::Error::Database(db) => {
            let code: i64 = db.code()?.parse().ok()?;
            match code & 0xff {
                13 => Some(Storage::Full),
                8 | 10 | 14 => Some(Storage::NotWritable),
                _ => None,
            }
        }
        sqlx::Error::Io(io) if io.raw_os_error() == Some(libc::ENOSPC) => Some(Storage::Full),
        sqlx::Error::Io(io) if io.raw_os_error() == Some(libc::EROFS) => Some(Storage::NotWritable),
        _ => None,
    }
}

/// How API clients name a node: its uuid or its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeIdent {
    Uuid(Uuid),
    Name(String),
}

impl NodeIdent {
    pub fn parse(s: &str) -> NodeIdent {
        match Uuid::parse_str(s) {
            Ok(u) => NodeIdent::Uuid(u),
            Err(_) => NodeIdent::Name(s.to_string()),
        }
    }
}

impl std::fmt::Display for NodeIdent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeIdent::Uuid(u) => write!(f, "{u}"),
            NodeIdent::Name(n) => f.write_str(n),
        }
    }
}

/// A column a node list may be sorted by: every scalar column (JSON columns cannot be ordered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeSortKey(&'static str);

/// How a sortable column is ordered: nullable columns sort as their empty value, so marker
/// pagination over `(column, id)` is well defined and SQLite and PostgreSQL agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortAs {
    NotNull,
    NullableText,
    NullableBool,
}

/// Sortable node columns.
const NODE_SORT_COLUMNS: &[(&str, SortAs)] = &[
    ("id", SortAs::NotNull),
    ("uuid", SortAs::NotNull),
    ("name", SortAs::NullableText),
    ("driver", SortAs::NotNull),
    ("created_at", SortAs::NotNull),
    ("updated_at", SortAs::NullableText),
    ("provision_updated_at", SortAs::NullableText),
    ("provision_state", SortAs::NotNull),
    ("target_provision_state", SortAs::NullableText),
    ("power_state", SortAs::NullableText),
    ("target_power_state", SortAs::NullableText),
    ("maintenance", SortAs::NotNull),
    ("maintenance_reason", SortAs::NullableText),
    ("resource_class", SortAs::NullableText),
    ("reservation", SortAs::NullableText),
    ("last_error", SortAs::NullableText),
    ("instance_uuid", SortAs::NullableText),
    ("conductor_group", SortAs::NotNull),
    ("owner", SortAs::NullableText),
    ("lessee", SortAs::NullableText),
    ("description", SortAs::NullableText),
    ("automated_clean", SortAs::NullableBool),
    ("protected", SortAs::NotNull),
    ("protected_reason", SortAs::NullableText),
    ("retired", SortAs::NotNull),
    ("retired_reason", SortAs::NullableText),
    ("boot_mode", SortAs::NullableText),
    ("secure_boot", SortAs::NullableBool),
    ("shard", SortAs::NullableText),
    ("parent_node", SortAs::NullableText),
    ("instance_name", SortAs::NullableText),
    ("disable_power_off", SortAs::NotNull),
    ("inspection_started_at", SortAs::NullableText),
    ("inspection_finished_at", SortAs::NullableText),
    ("bios_interface", SortAs::NotNull),
    ("boot_interface", SortAs::NotNull),
    ("console_interface", SortAs::NotNull),
    ("deploy_interface", SortAs::NotNull),
    ("firmware_interface", SortAs::NotNull),
    ("inspect_interface", SortAs::NotNull),
    ("management_interface", SortAs::NotNull),
    ("network_interface", SortAs::NotNull),
    ("power_interface", SortAs::NotNull),
    ("raid_interface", SortAs::NotNull),
    ("rescue_interface", SortAs::NotNull),
    ("storage_interface", SortAs::NotNull),
    ("vendor_interface", SortAs::NotNull),
];

impl Default for NodeSortKey {
    fn default() -> Self {
        NodeSortKey("id")
    }
}

impl NodeSortKey {
    pub fn parse(s: &str) -> Option<NodeSortKey> {
        NODE_SORT_COLUMNS
            .iter()
            .find(|(c, _)| *c == s)
            .map(|(c, _)| NodeSortKey(c))
    }

    pub fn column(self) -> &'static str {
        self.0
    }

    pub fn sort_as(self) -> SortAs {
        NODE_SORT_COLUMNS
            .iter()
            .find(|(c, _)| *c == self.0)
            .map(|(_, s)| *s)
            .unwrap_or(SortAs::NotNull)
    }
}

/// Filters and paging for [`Store::list_nodes`]. Empty = every node, oldest first.
#[derive(Debug, Clone, Default)]
pub struct NodeQuery {
    pub provision_state: Option<ProvisionState>,
    pub maintenance: Option<bool>,
    pub driver: Option<String>,
    pub reserved: Option<bool>,
    /// Only nodes whose `provision_updated_at` is older than this (callback timeouts).
    pub provision_updated_before: Option<DateTime<Utc>>,
    pub associated: Option<bool>,
    pub instance_uuid: Option<Uuid>,
    pub resource_class: Option<String>,
    pub conductor_group: Option<String>,
    pub owner: Option<String>,
    pub lessee: Option<String>,
    /// Nodes owned or leased by this project.
    pub project: Option<String>,
    pub retired: Option<bool>,
    pub description_contains: Option<String>,
    /// Nodes in one of these shards.
    pub shards: Vec<String>,
    pub sharded: Option<bool>,
    pub parent_node: Option<Uuid>,
    pub instance_name: Option<String>,
    pub sort_key: NodeSortKey,
    pub descending: bool,
    pub marker: Option<Uuid>,
    pub limit: Option<u32>,
}

/// A column a port list may be sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortSortKey(&'static str, SortAs);

const PORT_SORT_COLUMNS: &[(&str, SortAs)] = &[
    ("id", SortAs::NotNull),
    ("uuid", SortAs::NotNull),
    ("address", SortAs::NotNull),
    ("node_uuid", SortAs::NotNull),
    ("created_at", SortAs::NotNull),
    ("updated_at", SortAs::NullableText),
    ("pxe_enabled", SortAs::NotNull),
    ("physical_network", SortAs::NullableText),
    ("is_smartnic", SortAs::NotNull),
    ("name", SortAs::NullableText),
    ("description", SortAs::NullableText),
    ("vendor", SortAs::NullableText),
    ("category", SortAs::NullableText),
];

impl Default for PortSortKey {
    fn default() -> Self {
        PortSortKey("id", SortAs::NotNull)
    }
}

impl PortSortKey {
    pub fn parse(s: &str) -> Option<PortSortKey> {
        PORT_SORT_COLUMNS
            .iter()
            .find(|(c, _)| *c == s)
            .map(|(c, a)| PortSortKey(c, *a))
    }

    pub fn column(self) -> &'static str {
        self.0
    }

    pub fn sort_as(self) -> SortAs {
        self.1
    }
}

/// Filters and paging for [`Store::list_ports`].
#[derive(Debug, Clone, Default)]
pub struct PortQuery {
    pub node: Option<Uuid>,
    pub addresses: Vec<MacAddress>,
    pub marker: Option<Uuid>,
    pub limit: Option<u32>,
    pub sort_key: PortSortKey,
    pub descending: bool,
    pub description_contains: Option<String>,
    /// Ports of nodes in one of these shards.
    pub node_shards: Vec<String>,
    /// Ports of nodes in one of these conductor groups.
    pub node_conductor_groups: Vec<String>,
}

impl PortQuery {
    /// Every port of one node, oldest first.
    pub fn of_node(node: Uuid) -> PortQuery {
        PortQuery {
            node: Some(node),
            ..Default::default()
        }
    }
}

/// How API clients name an allocation: its uuid or its name.
pub type AllocationIdent = NodeIdent;

/// Sortable allocation columns.
const ALLOCATION_SORT_COLUMNS: &[(&str, SortAs)] = &[
    ("id", SortAs::NotNull),
    ("uuid", SortAs::NotNull),
    ("name", SortAs::NullableText),
    ("node_uuid", SortAs::NullableText),
    ("state", SortAs::NotNull),
    ("resource_class", SortAs::NullableText),
    ("owner", SortAs::NullableText),
    ("last_error", SortAs::NullableText),
    ("created_at", SortAs::NotNull),
    ("updated_at", SortAs::NullableText),
];

/// A column an allocation list may be sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocationSortKey(&'static str, SortAs);

impl Default for AllocationSortKey {
    fn default() -> Self {
        AllocationSortKey("id", SortAs::NotNull)
    }
}

impl AllocationSortKey {
    pub fn parse(s: &str) -> Option<AllocationSortKey> {
        ALLOCATION_SORT_COLUMNS
            .iter()
            .find(|(c, _)| *c == s)
            .map(|(c, a)| AllocationSortKey(c, *a))
    }

    pub fn column(self) -> &'static str {
        self.0
    }

    pub fn sort_as(self) -> SortAs {
        self.1
    }
}

/// Filters and paging for [`Store::list_allocations`].
#[derive(Debug, Clone, Default)]
pub struct AllocationQuery {
    pub node: Option<Uuid>,
    pub resource_class: Option<String>,
    pub state: Option<AllocationState>,
    pub owner: Option<String>,
    pub sort_key: AllocationSortKey,
    pub descending: bool,
    pub marker: Option<Uuid>,
    pub limit: Option<u32>,
}

/// A row of the conductors table.
#[derive(Debug, Clone, PartialEq)]
pub struct ConductorRecord {
    pub hostname: String,
    /// Nodes of a group are only handled by conductors of that group (`""`: the default).
    pub conductor_group: String,
    /// Where its API answers: other conductors forward a node's work there.
    pub api_url: Option<String>,
    pub online: bool,
    pub created_at: DateTime<Utc>,
    /// Touched every `heartbeat_interval` while it runs.
    pub updated_at: DateTime<Utc>,
}

impl ConductorRecord {
    /// Online and seen within `timeout` before `now`.
    pub fn alive(&self, now: DateTime<Utc>, timeout: std::time::Duration) -> bool {
        let timeout = chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX);
        self.online && self.updated_at >= now - timeout
    }
}

/// What a conductor registers at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConductorRegistration {
    pub hostname: String,
    pub conductor_group: String,
    pub api_url: String,
}

#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts a new node; duplicate uuid or name is an error.
    async fn create_node(&self, node: &Node) -> Result<(), StoreError>;
    async fn get_node(&self, ident: &NodeIdent) -> Result<Node, StoreError>;
    async fn list_nodes(&self, query: &NodeQuery) -> Result<Vec<Node>, StoreError>;
    /// Writes every field except `reservation` and `created_at`, stamping `updated_at`.
    async fn save_node(&self, node: &Node) -> Result<Node, StoreError>;
    /// Deletes the node and its ports.
    async fn delete_node(&self, uuid: Uuid) -> Result<(), StoreError>;
    /// Atomically takes the node's reservation for `host`, or fails with `NodeLocked`.
    async fn reserve_node(&self, ident: &NodeIdent, host: &str) -> Result<Node, StoreError>;
    /// Releases the node's reservation if `host` holds it.
    async fn release_node(&self, uuid: Uuid, host: &str) -> Result<(), StoreError>;
    /// Releases every reservation `host` holds (start-up and shutdown); returns how many.
    async fn release_reservations(&self, host: &str) -> Result<u64, StoreError>;

    async fn create_port(&self, port: &Port) -> Result<(), StoreError>;
    async fn get_port(&self, uuid: Uuid) -> Result<Port, StoreError>;
    async fn list_ports(&self, query: &PortQuery) -> Result<Vec<Port>, StoreError>;
    /// Writes every field of the port except `uuid` and `created_at`, stamping `updated_at`.
    async fn save_port(&self, port: &Port) -> Result<Port, StoreError>;
    async fn delete_port(&self, uuid: Uuid) -> Result<(), StoreError>;

    /// Inserts a new allocation; a duplicate uuid or name is an error.
    async fn create_allocation(&self, allocation: &Allocation) -> Result<(), StoreError>;
    async fn get_allocation(&self, ident: &AllocationIdent) -> Result<Allocation, StoreError>;
    async fn list_allocations(
        &self,
        query: &AllocationQuery,
    ) -> Result<Vec<Allocation>, StoreError>;
    /// Writes every field except `uuid` and `created_at`, stamping `updated_at`.
    async fn save_allocation(&self, allocation: &Allocation) -> Result<Allocation, StoreError>;
    async fn delete_allocation(&self, uuid: Uuid) -> Result<(), StoreError>;

    /// Registers (or re-registers) a conductor as online.
    async fn register_conductor(&self, c: &ConductorRegistration) -> Result<(), StoreError>;
    /// The keepalive: bumps `updated_at` of an online conductor.
    async fn touch_conductor(&self, host: &str) -> Result<(), StoreError>;
    async fn unregister_conductor(&self, host: &str) -> Result<(), StoreError>;
    async fn list_conductors(&self) -> Result<Vec<ConductorRecord>, StoreError>;

    /// Stores what inspection found for a node, replacing an earlier record (Ironic's
    /// `database` inventory backend); removed with the node.
    async fn save_inventory(&self, record: &InventoryRecord) -> Result<(), StoreError>;
    /// The node's inventory record, if it was ever inspected.
    async fn get_inventory(&self, node: Uuid) -> Result<Option<InventoryRecord>, StoreError>;
}

/// What an agent reported at inspection: its `inventory`, and everything else it sent
/// (`plugin_data`).
#[derive(Debug, Clone, PartialEq)]
pub struct InventoryRecord {
    pub node_uuid: Uuid,
    pub inventory: serde_json::Value,
    pub plugin_data: serde_json::Value,
}
