//! Several conductors on one PostgreSQL database (seed 004's take over, issue 11): three real
//! `ironboot serve` processes, each with its own host name, data directory and served roots,
//! share nodes by the hash ring; one is killed with SIGKILL and the survivors re-hash its
//! nodes, regenerate their boot configs in their own roots and recover what it left reserved;
//! when it comes back it gets its share again.

use crate::support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ironboot::conductor::ring::HashRing;
use reqwest::Method;
use serde_json::{Value, json};
use support::fake_agent::FakeAgent;
use support::postgres::Postgres;
use support::server::Server;
use support::vmedia_lab::{AgentSide, api_call, wait_state};
use uuid::Uuid;

const NODES: usize = 24;
const HOSTS: [&str; 3] = ["cond-a", "cond-b", "cond-c"];
/// Keepalive 1 s, dead after 4 s of silence: the whole test runs in seconds.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(4);

struct Conductor {
    host: &'static str,
    server: Server,
    config: PathBuf,
}

impl Conductor {
    fn start(dir: &Path, host: &'static str, db_url: &str) -> Conductor {
        Self::start_in_group(dir, host, db_url, "")
    }

    fn start_in_group(dir: &Path, host: &'static str, db_url: &str, group: &str) -> Conductor {
        let config = dir.join(format!("{host}.toml"));
        std::fs::write(
            &config,
            format!(
                "host = \"{host}\"\n\
                 [database]\nurl = \"{db_url}\"\n\
                 [conductor]\nconductor_group = \"{group}\"\nheartbeat_interval = 1\nheartbeat_timeout = {}\n\
                 sync_local_state_interval = 2\ncheck_provision_state_interval = 1\n\
                 [pxe]\nenable_netboot_fallback = true\n\
                 [agent]\nrequire_tls = false\n",
                HEARTBEAT_TIMEOUT.as_secs()
            ),
        )
        .unwrap();
        let server = Self::serve(dir, host, &config);
        Conductor {
            host,
            server,
            config,
        }
    }

    fn serve(dir: &Path, host: &str, config: &Path) -> Server {
        Server::start_in(
            &dir.join(host),
            &["--config", config.to_str().unwrap()],
            &[],
        )
    }

    fn api(&self) -> String {
        self.server.api_url()
    }

    /// The node's PXELINUX config as the firmware asks for it, in this conductor's TFTP root.
    fn has_config(&self, mac: &str) -> bool {
        pxe_config(&self.server.data_dir, mac).is_file()
    }
}

fn pxe_config(data_dir: &Path, mac: &str) -> PathBuf {
    data_dir
        .join("tftpboot/pxelinux.cfg")
        .join(format!("01-{}", mac.replace(':', "-")))
}

fn mac(i: usize) -> String {
    format!("52:54:00:7a:00:{i:02x}")
}

/// Waits until every node's `conductor` (as `api` answers) is the ring's owner among `hosts`,
/// its reservation is free and its config is in that owner's TFTP root; returns the owners.
async fn wait_settled(
    http: &reqwest::Client,
    api: &str,
    nodes: &[(Uuid, String)],
    conductors: &[&Conductor],
    timeout: Duration,
) -> BTreeMap<Uuid, &'static str> {
    let ring = HashRing::new(conductors.iter().map(|c| c.host.to_string()));
    let deadline = Instant::now() + timeout;
    loop {
        let mut owners = BTreeMap::new();
        let mut pending = vec![];
        for (uuid, mac) in nodes {
            let owner = conductors
                .iter()
                .find(|c| Some(c.host) == ring.owner(uuid))
                .unwrap();
            let (_, n) = api_call(http, api, Method::GET, &format!("/v1/nodes/{uuid}"), None).await;
            if n["conductor"] != owner.host || !n["reservation"].is_null() || !owner.has_config(mac)
            {
                pending.push(format!("{uuid}: {n}"));
            }
            owners.insert(*uuid, owner.host);
        }
        if pending.is_empty() {
            return owners;
        }
        assert!(
            Instant::now() < deadline,
            "not settled within {timeout:?} on {:?}:\n{}",
            conductors.iter().map(|c| c.host).collect::<Vec<_>>(),
            pending.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_metric(server: &Server, sample: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = server.metric(sample);
        if now == value {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{sample} stays {now}, expected {value}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survivors_take_over_a_killed_conductors_nodes_and_give_them_back_when_it_returns() {
    let test = "multi_conductor";
    let Some(pg) = Postgres::start(test, "ironboot") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db_url = pg.url("ironboot");
    let mut conductors: Vec<Conductor> = HOSTS
        .iter()
        .map(|h| Conductor::start(dir.path(), h, &db_url))
        .collect();
    let http = support::http_client();
    let api_b = conductors[1].api();
    let kernel = dir.path().join("deploy.kernel");
    std::fs::write(&kernel, b"kernel").unwrap();

    // Every conductor sees all three before the nodes arrive.
    let deadline = Instant::now() + Duration::from_secs(20);
    for c in &conductors {
        while c.server.metric("ironboot_conductor_ring_members") != 3.0 {
            assert!(Instant::now() < deadline, "{} never saw 3 members", c.host);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // Enrolled and deployed through one conductor's API: each node's deploy runs on its
    // owner (the request is forwarded there), which writes the boot config into its roots.
    let mut nodes = vec![];
    for i in 0..NODES {
        let body = pxe_node(&format!("node-{i}"), "", &kernel);
        nodes.push((create_node(&http, &api_b, body, &mac(i)).await, mac(i)));
    }
    for (uuid, _) in &nodes {
        provision(&http, &api_b, *uuid, "active").await;
    }
    let all: Vec<&Conductor> = conductors.iter().collect();
    let owners = wait_settled(&http, &api_b, &nodes, &all, Duration::from_secs(30)).await;
    for c in &conductors {
        let mine = owners.values().filter(|h| **h == c.host).count();
        assert!(mine > 0, "the ring gave {} nothing: {owners:?}", c.host);
        // Counted at each take-over run (every 2 s).
        wait_metric(&c.server, "ironboot_conductor_nodes_owned", mine as f64).await;
        // A node's config lives only with its owner.
        for (uuid, mac) in &nodes {
            assert_eq!(
                c.has_config(mac),
                owners[uuid] == c.host,
                "{} {uuid}",
                c.host
            );
        }
    }
    for c in &conductors[1..] {
        assert_eq!(
            c.server
                .metric("ironboot_conductor_take_overs_total{outcome=\"succeeded\"}"),
            0.0
        );
    }

    // A direct (agent) deploy on cond-a waits for its agent; the agent looked the node up
    // (through cond-b's API) and holds its token. The agent is the tests' stand-in
    // (support::fake_agent, plain HTTP, hence `require_tls = false`): it answers the
    // commands as IPA does without writing a disk; real agents deploy in agent_ipa/e2e_deploy.
    let three = HashRing::new(HOSTS.iter().map(|h| h.to_string()));
    let waiting = std::iter::repeat_with(Uuid::new_v4)
        .find(|u| three.owner(u) == Some("cond-a"))
        .unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::write(&disk, vec![7u8; 65536]).unwrap();
    let waiting_mac = mac(NODES);
    let mut body = pxe_node("waiting", "", &kernel);
    body["uuid"] = json!(waiting);
    body["deploy_interface"] = json!("direct");
    body["instance_info"] = json!({"image_source": format!("file://{}", disk.display())});
    create_node(&http, &api_b, body, &waiting_mac).await;
    provision(&http, &api_b, waiting, "wait call-back").await;
    let deploy_config =
        std::fs::read_to_string(pxe_config(&conductors[0].server.data_dir, &waiting_mac))
            .expect("cond-a wrote the ramdisk config");
    let side = AgentSide {
        http: &http,
        api: api_b.clone(),
        node: waiting.to_string(),
        mac: waiting_mac.clone(),
        token: String::new(),
    };
    let (s, found) = side.lookup().await;
    assert_eq!(s, 200, "{found}");
    let token = found["config"]["agent_token"].as_str().unwrap().to_string();
    let side = AgentSide {
        token: token.clone(),
        ..side
    };

    // An inspection on cond-a waits for its agent's report.
    let inspecting = std::iter::repeat_with(Uuid::new_v4)
        .find(|u| three.owner(u) == Some("cond-a") && *u != waiting)
        .unwrap();
    let inspecting_mac = mac(NODES + 1);
    let mut body = pxe_node("inspecting", "", &kernel);
    body["uuid"] = json!(inspecting);
    body["inspect_interface"] = json!("agent");
    create_node(&http, &api_b, body, &inspecting_mac).await;
    for (target, state) in [("manage", "manageable"), ("inspect", "inspect wait")] {
        let path = format!("/v1/nodes/{inspecting}/states/provision");
        let (s, b) = api_call(
            &http,
            &api_b,
            Method::PUT,
            &path,
            Some(json!({"target": target})),
        )
        .await;
        assert_eq!(s, 202, "{b}");
        let id = inspecting.to_string();
        wait_state(&http, &api_b, &id, &[state], Duration::from_secs(20)).await;
    }
    let inspect_config =
        std::fs::read_to_string(pxe_config(&conductors[0].server.data_dir, &inspecting_mac))
            .expect("cond-a wrote the inspection ramdisk config");
    assert!(
        inspect_config.contains("ipa-inspection-callback-url="),
        "{inspect_config}"
    );

    // cond-a dies in the middle of a deploy: one of its nodes stays reserved by it in
    // `deploying`, as a SIGKILL between two steps leaves it (written here, since the fake
    // deploy has no step slow enough to kill it in).
    let a_nodes: Vec<Uuid> = owners
        .iter()
        .filter(|(_, h)| **h == "cond-a")
        .map(|(u, _)| *u)
        .collect();
    let interrupted = a_nodes[0];
    conductors[0].server.kill9();
    pg.query(
        "ironboot",
        &format!(
            "UPDATE nodes SET reservation = 'cond-a', provision_state = 'deploying', \
             target_provision_state = 'active' WHERE uuid = '{interrupted}'"
        ),
    );
    let killed = Instant::now();

    // The survivors re-hash: cond-a's active nodes get their configs regenerated in the roots
    // of cond-b and cond-c, and their API shows the new owner.
    let survivors: Vec<&Conductor> = conductors[1..].iter().collect();
    let active: Vec<(Uuid, String)> = nodes
        .iter()
        .filter(|(u, _)| *u != interrupted)
        .cloned()
        .collect();
    let after = wait_settled(&http, &api_b, &active, &survivors, Duration::from_secs(30)).await;
    let moved = killed.elapsed();
    eprintln!(
        "{test}: {} nodes of the killed conductor regenerated by the survivors {:.1} s after \
         the kill (heartbeat timeout {} s)",
        a_nodes.len() - 1,
        moved.as_secs_f64(),
        HEARTBEAT_TIMEOUT.as_secs()
    );
    assert!(
        moved >= HEARTBEAT_TIMEOUT - Duration::from_secs(1),
        "{moved:?}: too early"
    );
    for (uuid, owner) in &owners {
        if *owner != "cond-a" {
            assert_eq!(after[uuid], *owner, "only the dead conductor's nodes move");
        }
    }

    // The interrupted deploy is released and failed, saying who died.
    let n = wait_state(
        &http,
        &api_b,
        &interrupted.to_string(),
        &["deploy failed"],
        Duration::from_secs(20),
    )
    .await;
    let error = n["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("cond-a") && error.contains("died"), "{n}");

    // The waiting node's ramdisk config is back, the same, in its new owner's root; its agent's
    // next heartbeat (to any API) finishes the deploy there.
    let heir = survivors
        .iter()
        .find(|c| {
            HashRing::new(["cond-b", "cond-c"].map(String::from)).owner(&waiting) == Some(c.host)
        })
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !heir.has_config(&waiting_mac) {
        assert!(
            Instant::now() < deadline,
            "{} never regenerated the ramdisk config",
            heir.host
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let regenerated =
        std::fs::read_to_string(pxe_config(&heir.server.data_dir, &waiting_mac)).unwrap();
    // The same config, but for the API address the agent is told: the heir's own (where no
    // shared `[api] public_url` names one address for all conductors).
    let dead_api = conductors[0].api();
    assert_eq!(
        regenerated.replace(&heir.api(), "<api>"),
        deploy_config.replace(&dead_api, "<api>"),
    );
    // So is the inspection's, with its callback; the agent's report (to any API) finishes the
    // inspection on the heir.
    let inspect_heir = survivors
        .iter()
        .find(|c| {
            HashRing::new(["cond-b", "cond-c"].map(String::from)).owner(&inspecting) == Some(c.host)
        })
        .unwrap();
    while !inspect_heir.has_config(&inspecting_mac) {
        assert!(
            Instant::now() < deadline,
            "{} never regenerated the inspection config",
            inspect_heir.host
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let regenerated =
        std::fs::read_to_string(pxe_config(&inspect_heir.server.data_dir, &inspecting_mac))
            .unwrap();
    assert_eq!(
        regenerated.replace(&inspect_heir.api(), "<api>"),
        inspect_config.replace(&dead_api, "<api>"),
    );
    let report = json!({"inventory": {"cpu": {"architecture": "x86_64"},
        "interfaces": [{"name": "eth0", "mac_address": inspecting_mac}]}});
    // (As IPA posts it: no version header, so API 1.1.)
    let answer = http
        .post(format!("{api_b}/v1/continue_inspection"))
        .json(&report)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["uuid"], inspecting.to_string(), "{body}");
    let n = wait_state(
        &http,
        &api_b,
        &inspecting.to_string(),
        &["manageable"],
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(n["conductor"], inspect_heir.host, "{n}");
    assert_eq!(n["properties"]["cpu_arch"], "x86_64", "{n}");

    let took: f64 = survivors
        .iter()
        .map(|c| {
            c.server
                .metric("ironboot_conductor_take_overs_total{outcome=\"succeeded\"}")
        })
        .sum();
    assert_eq!(
        took as usize,
        a_nodes.len() + 1,
        "each of cond-a's active nodes (but the interrupted one), the waiting one and the \
         inspecting one, once"
    );
    let agent = FakeAgent::start(&token, "").await;
    let done = side
        .heartbeat_until_done(&agent.url, Duration::from_secs(60))
        .await;
    assert_eq!(done["provision_state"], "active", "{done}");
    assert_eq!(done["conductor"], heir.host, "{done}");
    assert!(
        agent
            .received()
            .iter()
            .any(|c| c == "deploy.execute_deploy_step"),
        "{:?}",
        agent.received()
    );

    // Work on a node goes to its owner whichever API it arrives at.
    let moved_node = active
        .iter()
        .find(|(u, _)| owners[u] == "cond-a")
        .unwrap()
        .0;
    let (s, b) = api_call(
        &http,
        &conductors[2].api(),
        Method::PUT,
        &format!("/v1/nodes/{moved_node}/states/power"),
        Some(json!({"target": "power off"})),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    let owner = survivors
        .iter()
        .find(|c| c.host == after[&moved_node])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, n) = api_call(
            &http,
            &api_b,
            Method::GET,
            &format!("/v1/nodes/{moved_node}"),
            None,
        )
        .await;
        if n["power_state"] == "power off" && n["reservation"].is_null() {
            break;
        }
        assert!(Instant::now() < deadline, "{n}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        owner.server.log().contains(&format!("{moved_node}")),
        "the owner ({}) did the work",
        owner.host
    );

    // cond-a comes back: the ring gives it its share again and it regenerates those configs.
    let a = &mut conductors[0];
    a.server = Conductor::serve(dir.path(), a.host, &a.config);
    let all: Vec<&Conductor> = conductors.iter().collect();
    let mut active = active;
    active.push((waiting, waiting_mac));
    let back = wait_settled(&http, &api_b, &active, &all, Duration::from_secs(30)).await;
    assert_eq!(back[&waiting], "cond-a");
    for (uuid, _) in active.iter().filter(|(u, _)| *u != waiting) {
        assert_eq!(
            back[uuid], owners[uuid],
            "the ring is the same as before the kill"
        );
    }
    // Nodes outside `active` (and periodic tasks) may hold a reservation for a moment
    // after the ring settles; one left behind would still be there at the deadline.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = pg.query(
            "ironboot",
            "SELECT count(*) FROM nodes WHERE reservation IS NOT NULL",
        );
        if rows.trim() == "0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} reservations left behind",
            rows.trim()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The create body of a pxe node of `group` on fake hardware, deployed by the `fake`
/// interface (with `enable_netboot_fallback` its active config stays in the TFTP root).
fn pxe_node(name: &str, group: &str, kernel: &Path) -> Value {
    let href = format!("file://{}", kernel.display());
    json!({
        "name": name, "driver": "fake-hardware", "conductor_group": group,
        "boot_interface": "pxe", "deploy_interface": "fake",
        "driver_info": {"deploy_kernel": href, "deploy_ramdisk": href},
        "instance_info": {"image_source": "http://192.0.2.1/disk.img"},
    })
}

/// Creates the node and one port with `mac` (through `api`).
async fn create_node(http: &reqwest::Client, api: &str, body: Value, mac: &str) -> Uuid {
    let (s, n) = api_call(http, api, Method::POST, "/v1/nodes", Some(body)).await;
    assert_eq!(s, 201, "{n}");
    let uuid: Uuid = n["uuid"].as_str().unwrap().parse().unwrap();
    let port = json!({"address": mac, "node_uuid": uuid});
    let (s, p) = api_call(http, api, Method::POST, "/v1/ports", Some(port)).await;
    assert_eq!(s, 201, "{p}");
    uuid
}

/// manage, provide, deploy (through `api`) until the node rests in `end`.
async fn provision(http: &reqwest::Client, api: &str, uuid: Uuid, end: &str) {
    for (target, state) in [
        ("manage", "manageable"),
        ("provide", "available"),
        ("active", end),
    ] {
        let path = format!("/v1/nodes/{uuid}/states/provision");
        let (s, b) = api_call(
            http,
            api,
            Method::PUT,
            &path,
            Some(json!({ "target": target })),
        )
        .await;
        assert_eq!(s, 202, "{target}: {b}");
        wait_state(
            http,
            api,
            &uuid.to_string(),
            &[state],
            Duration::from_secs(30),
        )
        .await;
    }
}

/// Waits until `api` names `host` (or none: `None`) as the node's conductor.
async fn wait_conductor(http: &reqwest::Client, api: &str, uuid: Uuid, host: Option<&str>) {
    let deadline = Instant::now() + HEARTBEAT_TIMEOUT + Duration::from_secs(15);
    loop {
        let (_, n) = api_call(http, api, Method::GET, &format!("/v1/nodes/{uuid}"), None).await;
        if n["conductor"].as_str() == host {
            return;
        }
        assert!(Instant::now() < deadline, "conductor is not {host:?}: {n}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conductor_groups_keep_their_nodes_to_themselves() {
    let test = "multi_conductor groups";
    let Some(pg) = Postgres::start(test, "ironboot") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db_url = pg.url("ironboot");
    let default = Conductor::start(dir.path(), "cond-a", &db_url);
    let mut rack = Conductor::start_in_group(dir.path(), "cond-b", &db_url, "rack-2");
    let http = support::http_client();
    let api = default.api();
    let kernel = dir.path().join("deploy.kernel");
    std::fs::write(&kernel, b"kernel").unwrap();

    // A group no live conductor serves is refused, as in Ironic.
    let (s, b) = api_call(
        &http,
        &api,
        Method::POST,
        "/v1/nodes",
        Some(json!({"driver": "fake-hardware", "conductor_group": "rack-9"})),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert!(b.to_string().contains("rack-9"), "{b}");

    // Each group's node is deployed by its group's conductor, whichever API is asked (once
    // cond-a's view of the ring, read every heartbeat, has cond-b).
    let (mac_a, mac_b) = ("52:54:00:7b:00:01", "52:54:00:7b:00:02");
    let plain = create_node(&http, &api, pxe_node("plain", "", &kernel), mac_a).await;
    let racked = create_node(&http, &api, pxe_node("racked", "rack-2", &kernel), mac_b).await;
    wait_conductor(&http, &api, racked, Some("cond-b")).await;
    wait_conductor(&http, &api, plain, Some("cond-a")).await;
    provision(&http, &api, plain, "active").await;
    provision(&http, &api, racked, "active").await;
    assert!(default.has_config(mac_a) && !default.has_config(mac_b));
    assert!(rack.has_config(mac_b) && !rack.has_config(mac_a));
    // The port list filters by the group of each port's node.
    for (groups, want) in [
        ("rack-2", vec![mac_b]),
        ("", vec![mac_a]),
        ("rack-2,", vec![mac_a, mac_b]),
        ("rack-9", vec![]),
    ] {
        let path = format!("/v1/ports?conductor_groups={groups}&sort_key=address");
        let (s, b) = api_call(&http, &api, Method::GET, &path, None).await;
        assert_eq!(s, 200, "{b}");
        let got: Vec<&str> = b["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["address"].as_str().unwrap())
            .collect();
        assert_eq!(got, want, "conductor_groups={groups}");
    }

    // With its group's only conductor dead, the rack node has no conductor and the default
    // group's conductor leaves it alone.
    rack.server.kill9();
    wait_conductor(&http, &api, racked, None).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!default.has_config(mac_b), "cond-a took a rack-2 node");
    let (s, b) = api_call(
        &http,
        &api,
        Method::PUT,
        &format!("/v1/nodes/{racked}/states/power"),
        Some(json!({"target": "power off"})),
    )
    .await;
    assert!(s >= 400, "{s} {b}");
}
