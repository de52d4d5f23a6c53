//! The two stores answer alike: the same checks run against the embedded SQLite file and a
//! real PostgreSQL server, including what only matters when several conductors share one
//! database (a reservation race with one winner, migrations started together).

use std::sync::Arc;

use ironboot::model::{
    Allocation, HardwareType, Node, Port, PowerState, ProvisionState, port::MacAddress,
};
use ironboot::store::postgres::PostgresStore;
use ironboot::store::sqlite::SqliteStore;
use ironboot::store::{
    ConductorRegistration, NodeIdent, NodeQuery, NodeSortKey, PortQuery, Store, StoreError,
};
use uuid::Uuid;

use crate::support::postgres::Postgres;

fn node(name: Option<&str>) -> Node {
    let mut n = Node::new(
        Uuid::new_v4(),
        HardwareType::find("fake-hardware").unwrap(),
        ironboot::model::now(),
    );
    n.name = name.map(String::from);
    n.driver_info = serde_json::json!({"deploy_kernel": "file:///k"})
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
        ironboot::model::now(),
    )
}

async fn nodes_round_trip_and_conflict(s: &dyn Store) {
    let mut a = node(Some("alpha"));
    a.description = Some("rack 4, 50%_off".into());
    s.create_node(&a).await.unwrap();
    assert_eq!(
        s.get_node(&NodeIdent::Name("alpha".into())).await.unwrap(),
        a
    );
    assert_eq!(s.get_node(&NodeIdent::Uuid(a.uuid)).await.unwrap(), a);
    assert!(matches!(
        s.create_node(&node(Some("alpha"))).await,
        Err(StoreError::DuplicateNode { field: "name", .. })
    ));
    let mut same_uuid = node(Some("beta"));
    same_uuid.uuid = a.uuid;
    assert!(matches!(
        s.create_node(&same_uuid).await,
        Err(StoreError::DuplicateNode { field: "uuid", .. })
    ));
    let instance = Uuid::new_v4();
    a.instance_uuid = Some(instance);
    a.provision_state = ProvisionState::Manageable;
    a.power_state = Some(PowerState::Off);
    a.last_error = Some("boom".into());
    a.provision_updated_at = Some(ironboot::model::now());
    let saved = s.save_node(&a).await.unwrap();
    assert!(saved.updated_at.is_some());
    let got = s.get_node(&NodeIdent::Uuid(a.uuid)).await.unwrap();
    assert_eq!(got.provision_state, ProvisionState::Manageable);
    assert_eq!(got.power_state, Some(PowerState::Off));
    assert_eq!(got.last_error.as_deref(), Some("boom"));
    let mut other = node(Some("gamma"));
    other.instance_uuid = Some(instance);
    assert!(matches!(
        s.create_node(&other).await,
        Err(StoreError::InstanceAssociated { .. })
    ));
    assert!(matches!(
        s.get_node(&NodeIdent::Name("nope".into())).await,
        Err(StoreError::NodeNotFound(n)) if n == "nope"
    ));
    // LIKE's wildcards in the text match only themselves.
    let like = |text: &str| NodeQuery {
        description_contains: Some(text.into()),
        ..Default::default()
    };
    assert_eq!(s.list_nodes(&like("50%_o")).await.unwrap().len(), 1);
    assert_eq!(s.list_nodes(&like("5_%")).await.unwrap().len(), 0);
    s.delete_node(a.uuid).await.unwrap();
    assert!(matches!(
        s.delete_node(a.uuid).await,
        Err(StoreError::NodeNotFound(_))
    ));
}

async fn reservations_are_exclusive(s: Arc<dyn Store>) {
    let a = node(None);
    s.create_node(&a).await.unwrap();
    let id = NodeIdent::Uuid(a.uuid);
    let r = s.reserve_node(&id, "c1").await.unwrap();
    assert_eq!(r.reservation.as_deref(), Some("c1"));
    match s.reserve_node(&id, "c2").await {
        Err(StoreError::NodeLocked { holder, .. }) => assert_eq!(holder, "c1"),
        other => panic!("{other:?}"),
    }
    s.save_node(&a).await.unwrap();
    assert_eq!(
        s.get_node(&id).await.unwrap().reservation.as_deref(),
        Some("c1"),
        "save_node never clears the reservation"
    );
    s.release_node(a.uuid, "c2").await.unwrap();
    assert!(
        s.get_node(&id).await.unwrap().reservation.is_some(),
        "only the holder releases"
    );
    s.release_node(a.uuid, "c1").await.unwrap();

    // Sixteen conductors race for one node over separate connections: exactly one wins.
    let racers: Vec<_> = (0..16)
        .map(|i| {
            let s = s.clone();
            let id = NodeIdent::Uuid(a.uuid);
            tokio::spawn(async move { s.reserve_node(&id, &format!("racer-{i}")).await })
        })
        .collect();
    let mut winners = vec![];
    for (i, r) in racers.into_iter().enumerate() {
        match r.await.unwrap() {
            Ok(n) => winners.push((i, n.reservation)),
            Err(StoreError::NodeLocked { .. }) => {}
            Err(e) => panic!("racer {i}: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let (i, holder) = &winners[0];
    assert_eq!(holder.as_deref(), Some(format!("racer-{i}").as_str()));
    assert_eq!(
        s.release_reservations(&format!("racer-{i}")).await.unwrap(),
        1
    );
    assert!(s.get_node(&id).await.unwrap().reservation.is_none());
    s.delete_node(a.uuid).await.unwrap();
}

async fn listing_filters_and_pages(s: &dyn Store) {
    let mut uuids = vec![];
    for i in 0..5 {
        let mut n = node(Some(&format!("n{i}")));
        if i % 2 == 0 {
            n.provision_state = ProvisionState::Available;
        }
        n.owner = (i == 3).then(|| "tenant-a".to_string());
        s.create_node(&n).await.unwrap();
        uuids.push(n.uuid);
    }
    let all = s.list_nodes(&NodeQuery::default()).await.unwrap();
    assert_eq!(all.iter().map(|n| n.uuid).collect::<Vec<_>>(), uuids);
    let q = |f: fn(&mut NodeQuery)| {
        let mut q = NodeQuery::default();
        f(&mut q);
        q
    };
    let avail = s
        .list_nodes(&q(|q| q.provision_state = Some(ProvisionState::Available)))
        .await
        .unwrap();
    assert_eq!(avail.len(), 3);
    let owned = s
        .list_nodes(&q(|q| q.project = Some("tenant-a".into())))
        .await
        .unwrap();
    assert_eq!(owned.iter().map(|n| n.uuid).collect::<Vec<_>>(), [uuids[3]]);
    let page1 = s.list_nodes(&q(|q| q.limit = Some(2))).await.unwrap();
    let mut next = NodeQuery {
        limit: Some(2),
        marker: Some(page1[1].uuid),
        ..Default::default()
    };
    let page2 = s.list_nodes(&next).await.unwrap();
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
    let names: Vec<_> = desc.iter().filter_map(|n| n.name.clone()).collect();
    assert_eq!(names, ["n4", "n3", "n2", "n1", "n0"]);
    next.marker = Some(Uuid::new_v4());
    assert!(matches!(
        s.list_nodes(&next).await,
        Err(StoreError::NodeNotFound(_))
    ));
    for u in uuids {
        s.delete_node(u).await.unwrap();
    }
}

async fn ports_unique_and_cascade(s: &dyn Store) {
    let a = node(None);
    s.create_node(&a).await.unwrap();
    let p = port(a.uuid, "52:54:00:00:00:01");
    s.create_port(&p).await.unwrap();
    assert_eq!(s.get_port(p.uuid).await.unwrap(), p);
    assert!(matches!(
        s.create_port(&port(a.uuid, "52:54:00:00:00:01")).await,
        Err(StoreError::DuplicateMac(_))
    ));
    assert!(matches!(
        s.create_port(&port(Uuid::new_v4(), "52:54:00:00:00:02"))
            .await,
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

/// Inspection records: replaced on a second save, gone with their node.
async fn inventories_replace_and_cascade(s: &dyn Store) {
    let a = node(None);
    s.create_node(&a).await.unwrap();
    assert!(s.get_inventory(a.uuid).await.unwrap().is_none());
    let mut record = ironboot::store::InventoryRecord {
        node_uuid: a.uuid,
        inventory: serde_json::json!({"cpu": {"count": 2}, "interfaces": []}),
        plugin_data: serde_json::json!({"root_disk": {"name": "/dev/sda"}}),
    };
    s.save_inventory(&record).await.unwrap();
    assert_eq!(s.get_inventory(a.uuid).await.unwrap(), Some(record.clone()));
    record.inventory = serde_json::json!({"cpu": {"count": 4}});
    s.save_inventory(&record).await.unwrap();
    assert_eq!(s.get_inventory(a.uuid).await.unwrap(), Some(record));
    s.delete_node(a.uuid).await.unwrap();
    assert!(s.get_inventory(a.uuid).await.unwrap().is_none());
}

async fn allocations_round_trip(s: &dyn Store) {
    let mut a = Allocation::new(Uuid::new_v4(), ironboot::model::now());
    a.name = Some("alloc-1".into());
    a.traits = vec!["CUSTOM_GPU".into()];
    s.create_allocation(&a).await.unwrap();
    assert_eq!(
        s.get_allocation(&NodeIdent::Name("alloc-1".into()))
            .await
            .unwrap(),
        a
    );
    let mut dup = Allocation::new(Uuid::new_v4(), ironboot::model::now());
    dup.name = Some("alloc-1".into());
    assert!(matches!(
        s.create_allocation(&dup).await,
        Err(StoreError::DuplicateAllocation { field: "name", .. })
    ));
    s.delete_allocation(a.uuid).await.unwrap();
    assert!(matches!(
        s.delete_allocation(a.uuid).await,
        Err(StoreError::AllocationNotFound(_))
    ));
}

async fn conductors_register_and_go_offline(s: &dyn Store) {
    let c1 = ConductorRegistration {
        hostname: "c1".into(),
        conductor_group: "".into(),
        api_url: "http://192.0.2.1:6385".into(),
    };
    s.register_conductor(&c1).await.unwrap();
    let first = s.list_conductors().await.unwrap()[0].updated_at;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    s.touch_conductor("c1").await.unwrap();
    let touched = &s.list_conductors().await.unwrap()[0];
    assert!(touched.updated_at > first, "touch moves updated_at");
    s.unregister_conductor("c1").await.unwrap();
    let all = s.list_conductors().await.unwrap();
    assert_eq!(all.len(), 1);
    assert!(!all[0].online);
    s.register_conductor(&c1).await.unwrap();
    let back = &s.list_conductors().await.unwrap()[0];
    assert!(back.online);
    assert_eq!(back.api_url.as_deref(), Some("http://192.0.2.1:6385"));
}

async fn the_same_checks(s: Arc<dyn Store>) {
    nodes_round_trip_and_conflict(&*s).await;
    reservations_are_exclusive(s.clone()).await;
    listing_filters_and_pages(&*s).await;
    ports_unique_and_cascade(&*s).await;
    inventories_replace_and_cascade(&*s).await;
    allocations_round_trip(&*s).await;
    conductors_register_and_go_offline(&*s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_store() {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("ironboot.sqlite"))
        .await
        .unwrap();
    the_same_checks(Arc::new(s)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_answers_like_sqlite_and_migrates_once_when_started_together() {
    let Some(pg) = Postgres::start("store_backends::postgres", "ironboot") else {
        return;
    };
    let url = pg.url("ironboot");
    // Three conductors opening a fresh database at once: one applies the schema, the others
    // wait for it and find it current.
    let opened = futures_join(&url).await;
    let versions = pg.query(
        "ironboot",
        "SELECT count(*), count(DISTINCT version) FROM ironboot_schema",
    );
    let (rows, distinct) = versions.trim().split_once('|').unwrap();
    assert_eq!(rows, distinct, "each migration recorded once");
    assert!(rows.parse::<u32>().unwrap() >= 3);
    the_same_checks(Arc::new(opened)).await;

    let bad = PostgresStore::open(&format!(
        "postgres://ironboot:secret-pw@127.0.0.1:{}/missing",
        pg.port
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(
        bad.contains("missing") && bad.contains("******") && !bad.contains("secret-pw"),
        "{bad}"
    );
}

/// Opens three stores concurrently and returns one of them.
async fn futures_join(url: &str) -> PostgresStore {
    let tasks: Vec<_> = (0..3)
        .map(|_| {
            let url = url.to_string();
            tokio::spawn(async move { PostgresStore::open(&url).await })
        })
        .collect();
    let mut stores = vec![];
    for t in tasks {
        stores.push(t.await.unwrap().expect("open"));
    }
    stores.pop().unwrap()
}
