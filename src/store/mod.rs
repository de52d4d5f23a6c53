//! Persistence behind one small, backend-neutral trait.
//!
//! [`sqlite::SqliteStore`] is the embedded default (one process, WAL). The trait avoids anything
//! SQLite-specific so a PostgreSQL store for multi-conductor take over can implement it too.
//!
//! Concurrency rule: the `reservation` column is only ever changed by [`Store::reserve_node`] and
//! [`Store::release_node`], atomically in the database. Whoever holds a node's reservation is the
//! only writer of its other fields ([`Store::save_node`] never touches `reservation`).

mod located;
pub mod schema;
mod settings;
pub mod sqlite;

pub use located::Located;

pub use settings::{Database, DatabaseSettings};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::model::{MacAddress, Node, Port, ProvisionState};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("node {0} could not be found")]
    NodeNotFound(String),
    #[error("port {0} could not be found")]
    PortNotFound(String),
    #[error(
        "node {node} is locked by host {holder}, please retry after the current operation is completed"
    )]
    NodeLocked { node: String, holder: String },
    #[error("a node with {field} {value:?} already exists")]
    DuplicateNode { field: &'static str, value: String },
    #[error("a port with MAC address {0} already exists")]
    DuplicateMac(String),
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

/// Columns a node list may be sorted by (all non-null, so marker pagination is well defined).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NodeSortKey {
    #[default]
    Id,
    Uuid,
    Name,
    CreatedAt,
    ProvisionState,
    Driver,
}

impl NodeSortKey {
    pub fn parse(s: &str) -> Option<NodeSortKey> {
        Some(match s {
            "id" => NodeSortKey::Id,
            "uuid" => NodeSortKey::Uuid,
            "name" => NodeSortKey::Name,
            "created_at" => NodeSortKey::CreatedAt,
            "provision_state" => NodeSortKey::ProvisionState,
            "driver" => NodeSortKey::Driver,
            _ => return None,
        })
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
    pub sort_key: NodeSortKey,
    pub descending: bool,
    pub marker: Option<Uuid>,
    pub limit: Option<u32>,
}

/// Filters and paging for [`Store::list_ports`].
#[derive(Debug, Clone, Default)]
pub struct PortQuery {
    pub node: Option<Uuid>,
    pub addresses: Vec<MacAddress>,
    pub marker: Option<Uuid>,
    pub limit: Option<u32>,
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
    async fn delete_port(&self, uuid: Uuid) -> Result<(), StoreError>;

    /// Registers (or re-registers) a conductor as online.
    async fn register_conductor(&self, c: &ConductorRegistration) -> Result<(), StoreError>;
    /// The keepalive: bumps `updated_at` of an online conductor.
    async fn touch_conductor(&self, host: &str) -> Result<(), StoreError>;
    async fn unregister_conductor(&self, host: &str) -> Result<(), StoreError>;
    async fn list_conductors(&self) -> Result<Vec<ConductorRecord>, StoreError>;
}
