//! Raw datagrams at the real TFTP server (ironboot's packet parsing and option negotiation,
//! confinement and transfer cap) on 127.0.0.1. After each datagram a valid
//! request for a known file must still be answered: the server neither died nor stalled.
#![no_main]

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use ironboot::serve::confine::Confinement;
use ironboot::serve::tftp::{TftpMetrics, TftpService, TftpSettings};
use libfuzzer_sys::fuzz_target;

fn server() -> SocketAddr {
    // Kept (and reachable, for the leak checker) for the life of the process: the server
    // serves out of it.
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
        let root = dir.path().join("tftpboot");
        std::fs::create_dir_all(root.join("pxelinux.cfg")).unwrap();
        std::fs::write(root.join("probe"), b"still serving").unwrap();
        std::fs::write(root.join("big"), vec![7u8; 300_000]).unwrap();
        std::fs::write(dir.path().join("secret"), b"secret").unwrap();
        std::os::unix::fs::symlink("../secret", root.join("escape")).unwrap();
        let settings = TftpSettings {
            listen: "127.0.0.1:0".parse().unwrap(),
            // Transfers nobody acknowledges end fast.
            timeout_ms: 100,
            max_send_retries: 1,
            max_transfers: 512,
            ..TftpSettings::default()
        };
        let confinement = Confinement::new(&root, &[]).unwrap();
        let service =
            TftpService::bind(&settings, confinement, TftpMetrics::unregistered()).unwrap();
        let addr = service.local_addr();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let result = rt.block_on(service.run(tokio_util::sync::CancellationToken::new()));
            panic!("the TFTP server stopped: {result:?}");
        });
        addr
    })
}

/// A fresh socket per datagram: the server ignores a request repeated from a source while
/// its transfer is in progress.
fn socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Keeps the last sockets open for a while: a transfer the fuzzed request started keeps
/// sending to its port until it gives up, and a new socket given that port (the kernel reuses
/// them fast) would take those packets for the probe's answer.
fn keep(s: UdpSocket) {
    static KEPT: Mutex<VecDeque<UdpSocket>> = Mutex::new(VecDeque::new());
    let mut kept = KEPT.lock().unwrap_or_else(|p| p.into_inner());
    if kept.len() >= 4096 {
        kept.pop_front();
    }
    kept.push_back(s);
}

fuzz_target!(|data: &[u8]| {
    let addr = server();
    let fuzzed = socket();
    let _ = fuzzed.send_to(data, addr);
    keep(fuzzed);
    // The one worker takes datagrams in order: once the probe is answered, the fuzzed
    // datagram was handled.
    let probe = socket();
    probe.send_to(b"\x00\x01probe\x00octet\x00", addr).unwrap();
    let mut buf = [0u8; 1024];
    // libFuzzer's timers interrupt blocking calls: EINTR is not an answer.
    let (n, from) = loop {
        match probe.recv_from(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => break r.expect("the TFTP server stopped answering after this datagram"),
        }
    };
    assert_eq!(
        &buf[..2],
        b"\x00\x03",
        "probe answered with {:?}",
        &buf[..n]
    );
    assert_eq!(&buf[4..n], b"still serving");
    // The one block was the last: acknowledging it ends the transfer now.
    let _ = probe.send_to(b"\x00\x04\x00\x01", from);
    keep(probe);
});
