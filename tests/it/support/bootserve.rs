//! In-process TFTP and HTTP boot servers on 127.0.0.1:0, and a raw TFTP client for the
//! packets real clients never send (traversal corpus, malformed packets, option checks).

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ironboot::metrics::Registry;
use ironboot::serve::confine::Confinement;
use ironboot::serve::http::{self, HttpMetrics, HttpSettings};
use ironboot::serve::listener::ListenerMetrics;
use ironboot::serve::tftp::{TftpMetrics, TftpService, TftpSettings};
use md5::{Digest, Md5};
use tokio_util::sync::CancellationToken;

/// Marker written into the files outside the roots: it must never appear in a response.
pub const SECRET: &[u8] = b"IRONBOOT-SECRET-OUTSIDE-THE-ROOT";

/// A temporary data dir with `tftpboot`, `httpboot` and an `outside` directory next to them,
/// served by the library's servers until dropped.
pub struct BootServers {
    pub dir: tempfile::TempDir,
    pub tftp: SocketAddr,
    pub http: SocketAddr,
    registry: Registry,
    token: CancellationToken,
    runtime: Option<tokio::runtime::Runtime>,
}

impl BootServers {
    pub fn start() -> Self {
        Self::start_with(TftpSettings::default())
    }

    /// Starts with these TFTP settings (`listen` is replaced by 127.0.0.1:0).
    pub fn start_with(tftp_settings: TftpSettings) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (tftp_root, http_root, outside) = (
            dir.path().join("tftpboot"),
            dir.path().join("httpboot"),
            dir.path().join("outside"),
        );
        for d in [&tftp_root, &http_root, &outside] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(outside.join("secret"), SECRET).unwrap();
        for root in [&tftp_root, &http_root] {
            // A symlink to a file outside, and one to the filesystem root.
            std::os::unix::fs::symlink("../outside/secret", root.join("escape")).unwrap();
            std::os::unix::fs::symlink("/", root.join("slash")).unwrap();
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let token = CancellationToken::new();
        let mut registry = Registry::default();
        let settings = TftpSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..tftp_settings
        };
        let tftp_metrics = TftpMetrics::register(&mut registry);
        let http_metrics = HttpMetrics::register(&mut registry);
        let (tftp, http) = runtime.block_on(async {
            let service = TftpService::bind(
                &settings,
                Confinement::new(&tftp_root, &[]).unwrap(),
                tftp_metrics,
            )
            .unwrap();
            let tftp = service.local_addr();
            tokio::spawn(service.run(token.clone()));
            let http_settings = HttpSettings {
                listen: "127.0.0.1:0".parse().unwrap(),
                ..HttpSettings::default()
            };
            let listener = http::bind(&http_settings).await.unwrap();
            let addr = listener.local_addr().unwrap();
            let router = http::router(
                Confinement::new(&http_root, &[]).unwrap(),
                &http_settings,
                http_metrics,
            );
            let limits = http_settings.limits(http_settings.max_connections);
            let conn_metrics = ListenerMetrics::register(&mut registry).for_listener("boot_http");
            tokio::spawn(http::serve(
                listener,
                router,
                limits,
                conn_metrics,
                http_settings.zero_copy,
                token.clone(),
            ));
            (tftp, addr)
        });
        Self {
            dir,
            tftp,
            http,
            registry,
            token,
            runtime: Some(runtime),
        }
    }

    pub fn tftp_root(&self) -> PathBuf {
        self.dir.path().join("tftpboot")
    }

    pub fn http_root(&self) -> PathBuf {
        self.dir.path().join("httpboot")
    }

    pub fn tftp_url(&self, name: &str) -> String {
        format!("tftp://{}/{name}", self.tftp)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.http)
    }

    /// The metrics in Prometheus text format.
    pub fn metrics(&self) -> String {
        ironboot::metrics::encode(&self.registry)
    }

    /// The value of one sample line (`name{labels}`), 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for BootServers {
    fn drop(&mut self) {
        self.token.cancel();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

pub fn md5_file(path: &Path) -> String {
    md5_bytes(&std::fs::read(path).unwrap())
}

pub fn md5_bytes(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

/// TFTP opcodes.
pub const RRQ: u16 = 1;
pub const WRQ: u16 = 2;
pub const DATA: u16 = 3;
pub const ACK: u16 = 4;
pub const ERROR: u16 = 5;
pub const OACK: u16 = 6;

/// A read or write request packet with options.
pub fn request(opcode: u16, name: &[u8], mode: &str, opts: &[(&str, &str)]) -> Vec<u8> {
    let mut p = opcode.to_be_bytes().to_vec();
    p.extend_from_slice(name);
    p.push(0);
    p.extend_from_slice(mode.as_bytes());
    p.push(0);
    for (k, v) in opts {
        p.extend_from_slice(k.as_bytes());
        p.push(0);
        p.extend_from_slice(v.as_bytes());
        p.push(0);
    }
    p
}

pub fn rrq(name: &[u8], opts: &[(&str, &str)]) -> Vec<u8> {
    request(RRQ, name, "octet", opts)
}

pub fn opcode(packet: &[u8]) -> u16 {
    u16::from_be_bytes([packet[0], packet[1]])
}

/// The code of an ERROR packet.
pub fn error_code(packet: &[u8]) -> u16 {
    assert_eq!(opcode(packet), ERROR, "not an ERROR packet: {packet:?}");
    u16::from_be_bytes([packet[2], packet[3]])
}

/// The options of an OACK packet.
pub fn oack_options(packet: &[u8]) -> BTreeMap<String, String> {
    assert_eq!(opcode(packet), OACK, "not an OACK packet: {packet:?}");
    let fields: Vec<String> = packet[2..]
        .split(|b| *b == 0)
        .map(|f| String::from_utf8_lossy(f).to_lowercase())
        .collect();
    fields
        .chunks(2)
        .filter(|kv| kv.len() == 2 && !kv[0].is_empty())
        .map(|kv| (kv[0].clone(), kv[1].clone()))
        .collect()
}

/// A fresh client socket on an ephemeral port.
pub fn client_socket(timeout: Duration) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    s
}

/// Sends `packet` from a fresh socket; returns the first reply and where it came from, or
/// `None` if the server stayed silent for `wait`.
pub fn send_once(
    server: SocketAddr,
    packet: &[u8],
    wait: Duration,
) -> Option<(Vec<u8>, SocketAddr)> {
    let s = client_socket(wait);
    s.send_to(packet, server).unwrap();
    let mut buf = vec![0u8; 70_000];
    match s.recv_from(&mut buf) {
        Ok((n, from)) => {
            // Tell the transfer to stop if it started (a client's ERROR ends it).
            if n >= 2 && matches!(opcode(&buf[..n]), DATA | OACK) {
                let _ = s.send_to(&[0, 5, 0, 0, b'x', 0], from);
            }
            Some((buf[..n].to_vec(), from))
        }
        Err(_) => None,
    }
}

/// A complete download with RFC 7440 windowing done by hand: returns the OACK options and
/// the bytes. ACKs the last block of each window (and re-ACKs on timeout).
pub fn fetch_windowed(
    server: SocketAddr,
    name: &str,
    opts: &[(&str, &str)],
) -> (BTreeMap<String, String>, Vec<u8>) {
    let s = client_socket(Duration::from_secs(2));
    s.send_to(&rrq(name.as_bytes(), opts), server).unwrap();
    let mut buf = vec![0u8; 70_000];
    let (n, peer) = s.recv_from(&mut buf).expect("no reply to RRQ");
    let oack = oack_options(&buf[..n]);
    let blksize: usize = oack.get("blksize").map_or(512, |b| b.parse().unwrap());
    let window: u16 = oack.get("windowsize").map_or(1, |w| w.parse().unwrap());
    let ack = |block: u16| {
        let mut p = ACK.to_be_bytes().to_vec();
        p.extend_from_slice(&block.to_be_bytes());
        s.send_to(&p, peer).unwrap();
    };
    ack(0);
    let mut data = Vec::new();
    let mut last_good: u16 = 0;
    let mut in_window: u16 = 0;
    let mut timeouts = 0;
    loop {
        let n = match s.recv_from(&mut buf) {
            Ok((n, from)) if from == peer => n,
            Ok(_) => continue,
            Err(_) => {
                timeouts += 1;
                assert!(
                    timeouts < 10,
                    "transfer of {name} stalled at block {last_good}"
                );
                ack(last_good);
                in_window = 0;
                continue;
            }
        };
        let p = &buf[..n];
        assert_eq!(opcode(p), DATA, "unexpected packet {p:?}");
        let block = u16::from_be_bytes([p[2], p[3]]);
        if block != last_good.wrapping_add(1) {
            // Out of order (a retransmitted window): re-synchronise on the last good block.
            ack(last_good);
            in_window = 0;
            continue;
        }
        data.extend_from_slice(&p[4..]);
        last_good = block;
        in_window += 1;
        let last = p.len() - 4 < blksize;
        if last || in_window == window {
            ack(last_good);
            in_window = 0;
        }
        if last {
            return (oack, data);
        }
    }
}
