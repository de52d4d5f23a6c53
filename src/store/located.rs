//! A store that names its file in storage failures. SQLite says "database or disk is full"
//! or "disk I/O error" without saying where; an operator needs the path (and the API a status
//! that says "storage", not "bug"), so every error passes through [`StoreError::at`].

use std::path::{Path, PathBuf};

use uuid::Uuid;

use super::{
    AllocationIdent, AllocationQuery, ConductorRecord, ConductorRegistration, InventoryRecord,
    NodeIdent, NodeQuery, PortQuery, Store, StoreError,
};
use crate::model::{Allocation, Node, Port};

/// `inner`, with storage failures naming `path`.
pub struct Located<S> {
    inner: S,
    path: PathBuf,
}

impl<S: Store> Located<S> {
    pub fn new(inner: S, path: &Path) -> Located<S> {
        Located {
            inner,
            path: path.to_path_buf(),
        }
    }

    fn at(&self, e: StoreError) -> StoreError {
        e.at(&self.path)
    }
}

#[async_trait::async_trait]
impl<S: Store> Store for Located<S> {
    async fn create_node(&self, node: &Node) -> Result<(), StoreError> {
        self.inner.create_node(node).await.map_err(|e| self.at(e))
    }

    async fn get_node(&self, ident: &NodeIdent) -> Result<Node, StoreError> {
        self.inner.get_node(ident).await.map_err(|e| self.at(e))
    }

    async fn list_nodes(&self, query: &NodeQuery) -> Result<Vec<Node>, StoreError> {
        self.inner.list_nodes(query).await.map_err(|e| self.at(e))
    }

    async fn save_node(&self, node: &Node) -> Result<Node, StoreError> {
        self.inner.save_node(node).await.map_err(|e| self.at(e))
    }

    async fn delete_node(&self, uuid: Uuid) -> Result<(), StoreError> {
        self.inner.delete_node(uuid).await.map_err(|e| self.at(e))
    }

    async fn reserve_node(&self, ident: &NodeIdent, host: &str) -> Result<Node, StoreError> {
        self.inner
            .reserve_node(ident, host)
            .await
            .map_err(|e| self.at(e))
    }

    async fn release_node(&self, uuid: Uuid, host: &str) -> Result<(), StoreError> {
        self.inner
            .release_node(uuid, host)
            .await
            .map_err(|e| self.at(e))
    }

    async fn release_reservations(&self, host: &str) -> Result<u64, StoreError> {
        self.inner
            .release_reservations(host)
            .await
            .map_err(|e| self.at(e))
    }

    async fn create_port(&self, port: &Port) -> Result<(), StoreError> {
        self.inner.create_port(port).await.map_err(|e| self.at(e))
    }

    async fn get_port(&self, uuid: Uuid) -> Result<Port, StoreError> {
        self.inner.get_port(uuid).await.map_err(|e| self.at(e))
    }

    async fn save_port(&self, port: &Port) -> Result<Port, StoreError> {
        self.inner.save_port(port).await.map_err(|e| self.at(e))
    }

    async fn create_allocation(&self, allocation: &Allocation) -> Result<(), StoreError> {
        self.inner
            .create_allocation(allocation)
            .await
            .map_err(|e| self.at(e))
    }

    async fn get_allocation(&self, ident: &AllocationIdent) -> Result<Allocation, StoreError> {
        self.inner
            .get_allocation(ident)
            .await
            .map_err(|e| self.at(e))
    }

    async fn list_allocations(
        &self,
        query: &AllocationQuery,
    ) -> Result<Vec<Allocation>, StoreError> {
        self.inner
            .list_allocations(query)
            .await
            .map_err(|e| self.at(e))
    }

    async fn save_allocation(&self, allocation: &Allocation) -> Result<Allocation, StoreError> {
        self.inner
            .save_allocation(allocation)
            .await
            .map_err(|e| self.at(e))
    }

    async fn delete_allocation(&self, uuid: Uuid) -> Result<(), StoreError> {
        self.inner
            .delete_allocation(uuid)
            .await
            .map_err(|e| self.at(e))
    }

    async fn save_inventory(&self, record: &InventoryRecord) -> Result<(), StoreError> {
        self.inner
            .save_inventory(record)
            .await
            .map_err(|e| self.at(e))
    }

    async fn get_inventory(&self, node: Uuid) -> Result<Option<InventoryRecord>, StoreError> {
        self.inner.get_inventory(node).await.map_err(|e| self.at(e))
    }

    async fn list_ports(&self, query: &PortQuery) -> Result<Vec<Port>, StoreError> {
        self.inner.list_ports(query).await.map_err(|e| self.at(e))
    }

    async fn delete_port(&self, uuid: Uuid) -> Result<(), StoreError> {
        self.inner.delete_port(uuid).await.map_err(|e| self.at(e))
    }

    async fn register_conductor(&self, c: &ConductorRegistration) -> Result<(), StoreError> {
        self.inner
            .register_conductor(c)
            .await
            .map_err(|e| self.at(e))
    }

    async fn touch_conductor(&self, host: &str) -> Result<(), StoreError> {
        self.inner
            .touch_conductor(host)
            .await
            .map_err(|e| self.at(e))
    }

    async fn unregister_conductor(&self, host: &str) -> Result<(), StoreError> {
        self.inner
            .unregister_conductor(host)
            .await
            .map_err(|e| self.at(e))
    }

    async fn list_conductors(&self) -> Result<Vec<ConductorRecord>, StoreError> {
        self.inner.list_conductors().await.map_err(|e| self.at(e))
    }
}
