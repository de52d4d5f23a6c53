//! The service as an attacker (or an unlucky network) meets it: connection floods, slowloris,
//! oversized requests, UDP junk, amplification through the ramdisk endpoints, timing oracles
//! in `http_basic`, temporary files in the served roots. Each test starts the real binary.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::bootserve::{self, DATA, OACK, md5_bytes, rrq, send_once};
use crate::support::server::Server;
use crate::support::{self, write_pattern_file};

/// One raw HTTP/1.1 exchange on a fresh connection: (status, headers, body).
fn raw_request(addr: SocketAddr, request: &[u8]) -> (u16, String, Vec<u8>) {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may answer (and close) before it read everything we send.
    let _ = c.write_all(request);
    let mut resp = Vec::new();
    let _ = c.read_to_end(&mut resp);
    split_response(&resp)
}

fn split_response(resp: &[u8]) -> (u16, String, Vec<u8>) {
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(resp.len(), |p| p + 4);
    let head = String::from_utf8_lossy(&resp[..end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head, resp[end..].to_vec())
}

/// The faultstring inside Ironic's error body, or a panic saying what came instead.
fn ironic_fault(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(body)));
    let inner: Value = serde_json::from_str(v["error_message"].as_str().expect("error_message"))
        .expect("inner JSON");
    inner["faultstring"].as_str().expect("faultstring").into()
}

fn curl_status(url: &str, timeout_s: u32) -> (u16, Duration) {
    let started = Instant::now();
    let out = std::process::Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-m"])
        .arg(timeout_s.to_string())
        .arg(url)
        .output()
        .unwrap();
    let code = String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0);
    (code, started.elapsed())
}

/// Whether the server closed `c` (EOF or reset) within `wait`.
fn closed_within(c: &mut TcpStream, wait: Duration) -> bool {
    c.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + wait;
    loop {
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
        if Instant::now() > deadline {
            return false;
        }
    }
}

/// Creates a fake-hardware node with curl; returns its uuid.
fn create_node(api: &str) -> String {
    let out = std::process::Command::new("curl")
        .args([
            "-sf",
            "-m",
            "10",
            "-H",
            "Content-Type: application/json",
            "-d",
        ])
        .arg(r#"{"driver": "fake-hardware"}"#)
        .arg(format!("{api}/v1/nodes"))
        .output()
        .unwrap();
    assert!(out.status.success(), "node create failed: {out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["uuid"].as_str().unwrap().to_string()
}

/// 1,100 idle connections to the unauthenticated boot HTTP port, at the soft open-file limit
/// of 1,024 a service manager gives, with no higher hard limit to raise it to.
#[test]
fn an_idle_flood_on_boot_http_starves_neither_the_api_nor_tftp() {
    if !support::require_peer("idle flood", &["curl"]) {
        return;
    }
    let s = Server::start_with_nofile((1024, 1024), &[], &[]);
    let tftp_root = s.data_dir.join("tftpboot");
    write_pattern_file(&tftp_root.join("f"), 20_000, 5);
    std::fs::write(s.data_dir.join("httpboot/hello"), b"hello").unwrap();
    let mut held = Vec::new();
    for _ in 0..1100 {
        if let Ok(c) = TcpStream::connect_timeout(&s.http_addr(), Duration::from_millis(200)) {
            held.push(c);
        }
    }
    // Let the server take what it will of the flood.
    std::thread::sleep(Duration::from_millis(500));
    let (code, took) = curl_status(&format!("{}/healthz", s.api_url()), 5);
    assert_eq!(
        code,
        200,
        "healthz during the flood ({took:?}):\n{}",
        s.log()
    );
    let node = create_node(&s.api_url());
    let (code, took) = curl_status(&format!("{}/v1/nodes/{node}", s.api_url()), 5);
    assert_eq!(code, 200, "GET node during the flood ({took:?})");
    // Boot HTTP answers at once: the file, or 503 while it is at its connection cap.
    let (code, took) = curl_status(&format!("{}/hello", s.http_url()), 5);
    assert!(
        code == 200 || code == 503,
        "boot HTTP during the flood: {code} after {took:?}"
    );
    let (reply, _) = send_once(s.tftp_addr(), &rrq(b"f", &[]), Duration::from_secs(5))
        .expect("TFTP silent during the flood");
    assert!(matches!(bootserve::opcode(&reply), DATA | OACK));
    assert!(
        !s.log().contains("Too many open files"),
        "the server ran out of descriptors:\n{}",
        s.log()
    );
    drop(held);
}

/// The soft limit is raised to the hard one at start, and both are logged.
#[test]
fn the_soft_open_file_limit_is_raised_to_the_hard_limit() {
    let s = Server::start_with_nofile((1024, 4096), &[], &[]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", s.pid())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers, ["4096", "4096"], "{line}");
    let log = s.log();
    assert!(
        log.contains("open-file limit") && log.contains("1024") && log.contains("4096"),
        "{log}"
    );
}

/// Slowloris (a head sent a line at a time, forever) and silent connections are closed
/// once the header-read timeout passes; the time to shed them is printed.
#[test]
fn slowloris_and_silent_connections_are_shed() {
    let s = Server::start_with(&[], &[("IRONBOOT_HTTP__HEADER_READ_TIMEOUT", "2")]);
    let mut slow = Vec::new();
    let mut silent = Vec::new();
    for i in 0..300 {
        let mut c = TcpStream::connect(s.http_addr()).unwrap();
        if i < 200 {
            c.write_all(b"GET /x HTTP/1.1\r\nHost: flood\r\n").unwrap();
            slow.push(c);
        } else {
            silent.push(c);
        }
    }
    let started = Instant::now();
    let mut open: Vec<(TcpStream, bool)> = slow
        .into_iter()
        .map(|c| (c, true))
        .chain(silent.into_iter().map(|c| (c, false)))
        .collect();
    let mut shed_at = Duration::ZERO;
    while !open.is_empty() && started.elapsed() < Duration::from_secs(8) {
        for (c, trickle) in &mut open {
            if *trickle {
                let _ = c.write_all(b"X-Trickle: 1\r\n");
            }
        }
        open.retain_mut(|(c, _)| !closed_within(c, Duration::from_millis(5)));
        shed_at = started.elapsed();
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!(
        "slowloris: 300 connections shed in {shed_at:?} (header_read_timeout 2 s), {} left",
        open.len()
    );
    assert!(
        open.is_empty(),
        "{} of 300 slow or silent connections still open after {:?}",
        open.len(),
        started.elapsed()
    );
    assert!(shed_at < Duration::from_secs(5), "shed took {shed_at:?}");
}

/// A keep-alive connection left idle after its response is closed after the keep-alive
/// timeout.
#[test]
fn idle_keep_alive_connections_are_closed() {
    let s = Server::start_with(&[], &[("IRONBOOT_API__KEEPALIVE_TIMEOUT", "1")]);
    let mut c = TcpStream::connect(s.api_addr()).unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 4096];
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let n = c.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let started = Instant::now();
    assert!(
        closed_within(&mut c, Duration::from_secs(4)),
        "idle keep-alive connection still open after {:?}",
        started.elapsed()
    );
}

/// Past a listener's connection cap, new connections get 503 with Retry-After at once —
/// in Ironic's error format on the API.
#[test]
fn past_the_connection_cap_the_answer_is_503_with_retry_after() {
    let s = Server::start_with(
        &[],
        &[
            ("IRONBOOT_HTTP__MAX_CONNECTIONS", "8"),
            ("IRONBOOT_API__MAX_CONNECTIONS", "8"),
        ],
    );
    for (addr, ironic) in [(s.http_addr(), false), (s.api_addr(), true)] {
        let held: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(addr).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        let (status, head, body) = raw_request(addr, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(status, 503, "{addr}: {head}");
        assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
        assert!(started.elapsed() < Duration::from_secs(2));
        if ironic {
            assert!(ironic_fault(&body).contains("connections"), "{body:?}");
        }
        drop(held);
        // Freed slots are usable again.
        std::thread::sleep(Duration::from_millis(300));
        let (status, _, _) = raw_request(
            addr,
            b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        assert!(
            status == 200 || status == 404,
            "{addr} after the hold: {status}"
        );
    }
}

/// 414, 431 and 413 come with Ironic's error body, not an empty one.
#[test]
fn oversized_requests_get_ironics_error_body() {
    let s = Server::start_with(&[], &[("IRONBOOT_API__MAX_BODY_BYTES", "2048")]);
    let macs: Vec<String> = (0..10_000u32)
        .map(|i| {
            format!(
                "52:54:00:{:02x}:{:02x}:{:02x}",
                i >> 16,
                (i >> 8) & 0xff,
                i & 0xff
            )
        })
        .collect();
    let req = format!(
        "GET /v1/lookup?addresses={} HTTP/1.1\r\nHost: t\r\nX-OpenStack-Ironic-API-Version: 1.68\r\n\r\n",
        macs.join(",")
    );
    let (status, head, body) = raw_request(s.api_addr(), req.as_bytes());
    assert_eq!(status, 414, "{head}");
    assert!(ironic_fault(&body).contains("URI"), "{body:?}");

    let req = format!(
        "GET /v1/nodes HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(600_000)
    );
    let (status, head, body) = raw_request(s.api_addr(), req.as_bytes());
    assert_eq!(status, 431, "{head}");
    assert!(ironic_fault(&body).contains("header"), "{body:?}");

    let big = format!(
        "{{\"driver\": \"fake-hardware\", \"extra\": {{\"x\": \"{}\"}}}}",
        "a".repeat(4000)
    );
    let req = format!(
        "POST /v1/nodes HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{big}",
        big.len()
    );
    let (status, head, body) = raw_request(s.api_addr(), req.as_bytes());
    assert_eq!(status, 413, "{head}");
    assert!(!ironic_fault(&body).is_empty());
}

/// A download the way firmware does it: a request that goes unanswered is sent again (up to
/// three tries), a transfer that stalls starts over.
fn fetch_retrying(server: SocketAddr, name: &str) -> Vec<u8> {
    for attempt in 1..=3 {
        let got = std::panic::catch_unwind(|| {
            bootserve::fetch_windowed(server, name, &[("blksize", "1468")]).1
        });
        match got {
            Ok(data) => return data,
            Err(_) => eprintln!("tftp fetch of {name}: attempt {attempt} failed, retrying"),
        }
    }
    panic!("three fetches of {name} failed under the flood");
}

/// A flood of junk datagrams (random bytes, truncated and bogus requests, requests for
/// missing files from many ports) while a client fetches a file: every fetch completes.
#[test]
fn tftp_keeps_serving_under_a_udp_junk_flood() {
    let s = Server::start();
    let tftp_root = s.data_dir.join("tftpboot");
    write_pattern_file(&tftp_root.join("f"), 64 * 1024, 11);
    let want = md5_bytes(&std::fs::read(tftp_root.join("f")).unwrap());
    let target = s.tftp_addr();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let flooders: Vec<_> = (0..3)
        .map(|t| {
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::spawn(move || {
                let sockets: Vec<std::net::UdpSocket> = (0..32)
                    .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
                    .collect();
                let mut x: u64 = 0x9e37_79b9 ^ t;
                let deadline = Instant::now() + Duration::from_secs(20);
                let mut i = 0usize;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline
                {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let junk: Vec<u8> = match i % 4 {
                        0 => x.to_le_bytes().repeat((x % 60) as usize + 1),
                        1 => vec![0, 1, b'a'],
                        2 => rrq(format!("missing-{x}").as_bytes(), &[("blksize", "99999")]),
                        _ => {
                            let mut p = vec![0, (x % 9) as u8];
                            p.extend_from_slice(&x.to_be_bytes());
                            p
                        }
                    };
                    let _ = sockets[i % sockets.len()].send_to(&junk, target);
                    sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    i += 1;
                    // About 10,000 datagrams a second per thread: a flood for one server
                    // thread, without the flooders themselves starving a 2-core machine.
                    if i.is_multiple_of(10) {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    for _ in 0..5 {
        let data = fetch_retrying(target, "f");
        assert_eq!(md5_bytes(&data), want);
    }
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for f in flooders {
        f.join().unwrap();
    }
    eprintln!(
        "tftp: 5 fetches of 64 KiB in {took:?} under {} junk datagrams",
        sent.load(std::sync::atomic::Ordering::Relaxed)
    );
    let (reply, _) = send_once(target, &rrq(b"f", &[]), Duration::from_secs(5)).expect("alive");
    assert!(matches!(bootserve::opcode(&reply), DATA | OACK));
}

/// Temporary names (what a crash leaves behind) are never served, and a restart removes them.
#[test]
fn temporary_files_are_never_served_and_a_restart_removes_them() {
    let mut s = Server::start();
    let http_root = s.data_dir.join("httpboot");
    let tftp_root = s.data_dir.join("tftpboot");
    let node_dir = http_root.join("1be26c0b-03f2-4d2e-ae87-c02d7bcaaa00");
    std::fs::create_dir_all(&node_dir).unwrap();
    let leftovers = [
        http_root.join(".ironboot-tmp-0a1b2c3d4e5f-boot.ipxe"),
        node_dir.join(".ironboot-tmp-0a1b2c3d4e5f-config"),
        tftp_root.join(".ironboot-tmp-0a1b2c3d4e5f-grub.cfg-01-52-54-00-00-00-01"),
    ];
    for f in &leftovers {
        std::fs::write(f, b"#!ipxe\npartial").unwrap();
    }
    for path in [
        "/.ironboot-tmp-0a1b2c3d4e5f-boot.ipxe",
        "/1be26c0b-03f2-4d2e-ae87-c02d7bcaaa00/.ironboot-tmp-0a1b2c3d4e5f-config",
    ] {
        let (code, _) = curl_status(&format!("{}{path}", s.http_url()), 5);
        assert_eq!(code, 404, "{path} was served");
    }
    let (reply, _) = send_once(
        s.tftp_addr(),
        &rrq(
            b".ironboot-tmp-0a1b2c3d4e5f-grub.cfg-01-52-54-00-00-00-01",
            &[],
        ),
        Duration::from_secs(5),
    )
    .expect("no TFTP reply");
    assert_eq!(
        bootserve::error_code(&reply),
        1,
        "temporary file served over TFTP"
    );
    s.stop();
    let s = Server::start_in(&s.data_dir.clone(), &[], &[]);
    for f in &leftovers {
        assert!(!f.exists(), "{} survived the restart", f.display());
    }
    assert!(node_dir.is_dir(), "only the leftovers go");
    drop(s);
}

/// One unauthenticated lookup naming 1,000 bad addresses writes at most one line; 500
/// heartbeats with a wrong token write a bounded number of lines, none at ERROR, and are
/// counted in metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_ramdisk_requests_are_logged_bounded_and_counted() {
    let s = Server::start();
    let node = create_node(&s.api_url());
    let bad: Vec<String> = (0..1000).map(|i| format!("zz:{i}")).collect();
    let url = format!("{}/v1/lookup?addresses={}", s.api_url(), bad.join(","));
    let c = support::http_client();
    let resp = c
        .get(&url)
        .header("X-OpenStack-Ironic-API-Version", "1.68")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    for _ in 0..500 {
        let resp = c
            .post(format!("{}/v1/heartbeat/{node}", s.api_url()))
            .header("X-OpenStack-Ironic-API-Version", "1.68")
            .json(
                &json!({"callback_url": "http://192.0.2.1:9999", "agent_token": "wrong",
                          "agent_version": "9.0"}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = s.log();
    let mac_lines = log.lines().filter(|l| l.contains("MAC address")).count();
    assert!(mac_lines <= 1, "{mac_lines} lines for one lookup");
    let token_lines: Vec<&str> = log.lines().filter(|l| l.contains("token")).collect();
    assert!(token_lines.len() <= 15, "{} token lines", token_lines.len());
    assert!(
        !token_lines.iter().any(|l| l.contains("ERROR")),
        "a client's wrong token is not a server error: {token_lines:?}"
    );
    assert_eq!(
        s.metric(
            "ironboot_api_ramdisk_refused_total{endpoint=\"heartbeat\",reason=\"invalid_token\"}"
        ),
        500.0
    );
    assert_eq!(
        s.metric(
            "ironboot_api_ramdisk_refused_total{endpoint=\"lookup\",reason=\"invalid_address\"}"
        ),
        1000.0
    );
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

async fn timed_get(c: &reqwest::Client, url: &str, auth: &str) -> (u16, Duration) {
    let started = Instant::now();
    let status = c
        .get(url)
        .header("Authorization", auth)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    (status, started.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// `http_basic`: an unknown user costs what a known one does (no user-name oracle); a correct
/// password is verified once and then cached; failures are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_basic_has_no_user_oracle_and_pays_bcrypt_once() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    let hash = bcrypt::hash("s3cret", 10).unwrap();
    std::fs::write(&htpasswd, format!("admin:{hash}\n")).unwrap();
    let file = htpasswd.display().to_string();
    let s = Server::start_with(
        &[],
        &[
            ("IRONBOOT_API__AUTH_STRATEGY", "http_basic"),
            ("IRONBOOT_API__HTTP_BASIC_AUTH_USER_FILE", file.as_str()),
        ],
    );
    let c = support::http_client();
    let url = format!("{}/v1/nodes", s.api_url());
    let mut unknown = Vec::new();
    let mut wrong = Vec::new();
    for i in 0..7 {
        let (st, t) = timed_get(&c, &url, &basic(&format!("nobody{i}"), "x")).await;
        assert_eq!(st, 401);
        unknown.push(t);
        let (st, t) = timed_get(&c, &url, &basic("admin", &format!("wrong{i}"))).await;
        assert_eq!(st, 401);
        wrong.push(t);
    }
    let (unknown, wrong) = (median(unknown), median(wrong));
    eprintln!("http_basic: unknown user {unknown:?}, known user with a wrong password {wrong:?}");
    assert!(
        unknown * 2 >= wrong && wrong * 2 >= unknown,
        "timing tells users apart: unknown {unknown:?} vs known {wrong:?}"
    );
    let (st, first) = timed_get(&c, &url, &basic("admin", "s3cret")).await;
    assert_eq!(st, 200);
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(timed_get(&c, &url, &basic("admin", "s3cret")).await.0, 200);
    }
    let twenty = started.elapsed();
    eprintln!("http_basic: first correct request {first:?}, 20 more {twenty:?}");
    assert!(
        twenty < wrong * 5,
        "20 correct requests took {twenty:?}; one bcrypt verification is ~{wrong:?}"
    );
    // A changed password is not served from the cache.
    assert_eq!(timed_get(&c, &url, &basic("admin", "s3cret!")).await.0, 401);
    let metrics = c
        .get(format!("{}/metrics", s.api_url()))
        .header("Authorization", basic("admin", "s3cret"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("ironboot_api_auth_failures_total{reason=\"invalid_credentials\"} 15"),
        "{metrics}"
    );
}
