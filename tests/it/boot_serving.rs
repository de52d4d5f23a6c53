//! Network boot data plane, black-box: real TFTP and HTTP clients against the servers, the
//! traversal corpus and malformed packets, and the golden rendered configs and node trees.
//!
//! Servers run in-process on 127.0.0.1:0 (tests/it/support/bootserve.rs); one test runs the
//! real `ironboot serve`. Golden files live in `tftpboot-fixtures/`; `IRONBOOT_BLESS=1`
//! rewrites them from the current output.

use crate::support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ironboot::boot::layout::{Images, Layout, NodeFile};
use ironboot::boot::render::{BootContext, Entry, KernelParams, Renderer};
use ironboot::boot::{Arch, BootMode, NetBoot, PxeSettings};
use ironboot::model::port::MacAddress;
use support::bootserve::*;
use support::{require_peer, run, write_pattern_file};
use uuid::Uuid;

const NODE: &str = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123";
const WAIT: Duration = Duration::from_millis(700);

fn curl_tftp(extra: &[&str], url: &str, out: &Path) -> (bool, String) {
    let (ok, _, err) = run(Command::new("curl")
        .args(["-sS", "--max-time", "60"])
        .args(extra)
        .arg("-o")
        .arg(out)
        .arg(url));
    (ok, err)
}

#[test]
fn real_tftp_clients_get_identical_bytes_and_the_options_they_asked_for() {
    if !require_peer(
        "tftp clients",
        &["curl", "tftp", "atftp", "busybox", "timeout"],
    ) {
        return;
    }
    let s = BootServers::start();
    let out = tempfile::tempdir().unwrap();
    // 8 MiB, and a size that is an exact multiple of 1468 (ends with an empty DATA block).
    let files = [("big.bin", 8 * 1024 * 1024), ("exact.bin", 1468 * 700)];
    for (i, (name, len)) in files.iter().enumerate() {
        write_pattern_file(&s.tftp_root().join(name), *len, i as u64 + 7);
    }
    let port = s.tftp.port().to_string();
    let mut blksizes = Vec::new();
    for (name, _) in files {
        let want = md5_file(&s.tftp_root().join(name));
        let fetched = |client: &str| out.path().join(format!("{name}.{client}"));
        let check = |client: &str, ok: bool, err: &str| {
            assert!(ok, "{client} failed for {name}: {err}");
            assert_eq!(
                md5_file(&fetched(client)),
                want,
                "{client} got different bytes of {name}"
            );
        };

        let (ok, err) = curl_tftp(&[], &s.tftp_url(name), &fetched("curl"));
        check("curl", ok, &err);
        let (ok, err) = curl_tftp(
            &["--tftp-blksize", "1468"],
            &s.tftp_url(name),
            &fetched("curl1468"),
        );
        check("curl1468", ok, &err);
        let (ok, err) = curl_tftp(
            &["--tftp-no-options"],
            &s.tftp_url(name),
            &fetched("curlnoopt"),
        );
        check("curlnoopt", ok, &err);
        let (ok, _, err) = run(Command::new("timeout")
            .args([
                "60",
                "tftp",
                "-m",
                "binary",
                "127.0.0.1",
                &port,
                "-c",
                "get",
                name,
            ])
            .arg(fetched("tftp-hpa")));
        check("tftp-hpa", ok, &err);
        let (ok, _, err) = run(Command::new("timeout")
            .args(["60", "busybox", "tftp", "-g", "-r", name, "-l"])
            .arg(fetched("busybox"))
            .args(["-b", "1468", "127.0.0.1", &port]));
        check("busybox", ok, &err);
        let (ok, stdout, err) = run(Command::new("timeout")
            .args(["60", "atftp", "--get", "-r", name, "-l"])
            .arg(fetched("atftp"))
            .args([
                "--option",
                "blksize 1468",
                "--option",
                "windowsize 16",
                "--option",
                "tsize 0",
            ])
            .args(["--trace", "127.0.0.1", &port]));
        check("atftp", ok, &err);
        let trace = format!("{stdout}{err}");
        let oack = trace
            .lines()
            .find(|l| l.contains("received OACK"))
            .unwrap_or_else(|| panic!("atftp saw no OACK:\n{}", &trace[..trace.len().min(2000)]));
        assert!(
            oack.contains("windowsize: 16") && oack.contains("blksize: 1468"),
            "atftp OACK: {oack}"
        );
        // Windowing really happened: far fewer ACKs than DATA blocks.
        let acks = trace.lines().filter(|l| l.contains("sent ACK")).count();
        let blocks = trace.lines().filter(|l| l.contains(" DATA <block")).count();
        assert!(
            blocks > 100 && acks * 8 < blocks,
            "acks {acks} for {blocks} blocks"
        );
        blksizes.extend([512, 1468, 512, 512, 1468, 1468]);
    }
    // The block size each transfer used, as the server observed it.
    let n = blksizes.len() as f64;
    let sum: usize = blksizes.iter().sum();
    assert_eq!(s.metric("ironboot_tftp_negotiated_blksize_count"), n);
    assert_eq!(s.metric("ironboot_tftp_negotiated_blksize_sum"), sum as f64);
    assert_eq!(
        s.metric("ironboot_tftp_transfers_total{outcome=\"complete\"}"),
        n
    );
    let bytes: usize = files.iter().map(|(_, l)| l * 6).sum();
    assert_eq!(s.metric("ironboot_tftp_sent_bytes_total"), bytes as f64);
}

#[test]
fn oack_grants_what_was_asked_within_the_caps() {
    let s = BootServers::start();
    let len = 3 * 1024 * 1024 + 17;
    write_pattern_file(&s.tftp_root().join("k"), len, 3);
    let want = std::fs::read(s.tftp_root().join("k")).unwrap();

    // As asked (the client's timeout is not honoured by default, so it is not acknowledged).
    let (oack, data) = fetch_windowed(
        s.tftp,
        "k",
        &[
            ("blksize", "1468"),
            ("tsize", "0"),
            ("timeout", "1"),
            ("windowsize", "16"),
        ],
    );
    assert_eq!(oack.get("blksize").map(String::as_str), Some("1468"));
    assert_eq!(oack.get("tsize"), Some(&len.to_string()));
    assert_eq!(oack.get("windowsize").map(String::as_str), Some("16"));
    assert_eq!(oack.get("timeout"), None, "{oack:?}");
    assert!(data == want, "windowed transfer differs");

    // Above the caps: lowered to them.
    let (oack, data) = fetch_windowed(
        s.tftp,
        "/k",
        &[("blksize", "65464"), ("windowsize", "65535")],
    );
    assert_eq!(
        oack.get("blksize").map(String::as_str),
        Some("1468"),
        "{oack:?}"
    );
    assert_eq!(
        oack.get("windowsize").map(String::as_str),
        Some("16"),
        "{oack:?}"
    );
    assert!(data == want);

    // No options at all: plain RFC 1350, 512-byte DATA straight away.
    let (reply, _) = send_once(s.tftp, &rrq(b"k", &[]), WAIT).expect("no reply");
    assert_eq!(opcode(&reply), DATA);
    assert_eq!(reply.len(), 4 + 512);

    // A server configured to honour the client's timeout acknowledges it.
    let honouring = BootServers::start_with(ironboot::serve::tftp::TftpSettings {
        honour_client_timeout: true,
        ..Default::default()
    });
    write_pattern_file(&honouring.tftp_root().join("k"), 5000, 1);
    let (oack, data) = fetch_windowed(
        honouring.tftp,
        "k",
        &[("timeout", "2"), ("blksize", "1024")],
    );
    assert_eq!(
        oack.get("timeout").map(String::as_str),
        Some("2"),
        "{oack:?}"
    );
    assert_eq!(data.len(), 5000);
}

#[test]
fn tftp_traversal_corpus_is_refused() {
    let s = BootServers::start();
    std::fs::create_dir_all(s.tftp_root().join("sub")).unwrap();
    std::fs::write(s.tftp_root().join("sub/ok"), b"fine").unwrap();
    let long = "a".repeat(1500);
    let huge = "b".repeat(5000);
    // (name, code): that ERROR, never DATA.
    let corpus: Vec<(Vec<u8>, u16)> = vec![
        (b"../outside/secret".to_vec(), 2),
        (b"/../outside/secret".to_vec(), 2),
        (b"sub/../../outside/secret".to_vec(), 2),
        (b"..\\outside\\secret".to_vec(), 2),
        (b"\\..\\outside\\secret".to_vec(), 2),
        (b"sub\\..\\..\\outside\\secret".to_vec(), 2),
        (b"%2e%2e/outside/secret".to_vec(), 1),
        (b"%2e%2e%2foutside%2fsecret".to_vec(), 1),
        (b"/etc/passwd".to_vec(), 1),
        (b"escape".to_vec(), 2),
        (b"slash/etc/passwd".to_vec(), 2),
        (b"slash".to_vec(), 2),
        (b"/slash/etc/shadow".to_vec(), 2),
        (long.into_bytes(), 2),
        (b"sub/ok\x01".to_vec(), 2),
        (b"sub\nok".to_vec(), 2),
        (b"".to_vec(), 2),
        (b"/".to_vec(), 2),
        (b"sub".to_vec(), 1),
        (huge.into_bytes(), 2),
        (b"\xff\xfe/secret".to_vec(), 1),
    ];
    for (name, want) in &corpus {
        let shown = String::from_utf8_lossy(&name[..name.len().min(40)]).into_owned();
        let (reply, _) = send_once(s.tftp, &rrq(name, &[]), WAIT)
            .unwrap_or_else(|| panic!("{shown:?}: no ERROR reply"));
        assert!(
            !reply.windows(SECRET.len()).any(|w| w == SECRET),
            "{shown:?} leaked"
        );
        assert_eq!(error_code(&reply), *want, "{shown:?}");
    }
    // NUL inside the name: the name ends there and the rest is a bogus mode.
    let mut p = vec![0, 1];
    p.extend_from_slice(b"../outside/secret\0x\0octet\0");
    let (reply, _) = send_once(s.tftp, &p, WAIT).expect("reply");
    assert_eq!(error_code(&reply), 4, "unknown mode \"x\"");
    let mut p = vec![0, 1];
    p.extend_from_slice(b"escape\0octet\0");
    let (reply, _) = send_once(s.tftp, &p, WAIT).expect("reply");
    assert_eq!(error_code(&reply), 2);

    // Still serving, and the refusals are counted.
    let (reply, _) = send_once(s.tftp, &rrq(b"sub\\ok", &[]), WAIT).expect("reply");
    assert_eq!(&reply[..4], &[0, 3, 0, 1]);
    assert_eq!(&reply[4..], b"fine");
    assert!(
        s.metric("ironboot_tftp_errors_total{code=\"2\"}") >= 14.0,
        "{}",
        s.metrics()
    );
    assert!(s.metric("ironboot_tftp_requests_total{op=\"read\",result=\"outside_root\"}") >= 5.0);
}

#[test]
fn malformed_tftp_packets_get_an_error_or_silence_and_the_server_keeps_serving() {
    let s = BootServers::start();
    write_pattern_file(&s.tftp_root().join("f"), 4000, 9);
    let opt = |k: &str, v: &str| rrq(b"f", &[(k, v)]);
    let mut bad: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("one byte", vec![0]),
        ("opcode only", vec![0, 1]),
        ("unknown opcode", vec![0, 9, b'f', 0, b'o', 0]),
        ("opcode 0", vec![0, 0, b'f', 0]),
        ("unterminated rrq", b"\x00\x01f".to_vec()),
        ("rrq without mode", b"\x00\x01f\x00".to_vec()),
        ("rrq mode foo", request(RRQ, b"f", "foo", &[])),
        (
            "option without value",
            b"\x00\x01f\x00octet\x00blksize\x00".to_vec(),
        ),
        ("blksize 0", opt("blksize", "0")),
        ("blksize 4", opt("blksize", "4")),
        ("blksize 70000", opt("blksize", "70000")),
        ("blksize -1", opt("blksize", "-1")),
        ("blksize abc", opt("blksize", "abc")),
        ("blksize huge", opt("blksize", "99999999999999999999999")),
        ("windowsize 0", opt("windowsize", "0")),
        ("windowsize 65536", opt("windowsize", "65536")),
        ("tsize abc", opt("tsize", "abc")),
        ("tsize 5", opt("tsize", "5")),
        ("timeout 0", opt("timeout", "0")),
        ("timeout 300", opt("timeout", "300")),
        ("unknown option", opt("x-ironboot", "1")),
        ("data to listen port", vec![0, 3, 0, 1, 1, 2, 3]),
        ("ack to listen port", vec![0, 4, 0, 1]),
        ("error to listen port", vec![0, 5, 0, 1, b'x', 0]),
        ("oack to listen port", vec![0, 6, b'a', 0, b'b', 0]),
        ("64 KiB of zeros", vec![0; 65_000]),
    ];
    bad.push(("wrq", request(WRQ, b"upload", "octet", &[])));
    for (what, packet) in &bad {
        if let Some((reply, _)) = send_once(s.tftp, packet, WAIT) {
            match opcode(&reply) {
                ERROR => {}
                // Out-of-range options are ignored as RFC 2347 allows: the transfer starts
                // with defaults or within the caps, never beyond them.
                DATA => assert!(
                    reply.len() <= 4 + 512,
                    "{what}: {} byte block",
                    reply.len() - 4
                ),
                OACK => {
                    let o = oack_options(&reply);
                    let b: usize = o.get("blksize").map_or(512, |b| b.parse().unwrap());
                    let w: usize = o.get("windowsize").map_or(1, |w| w.parse().unwrap());
                    assert!(
                        (8..=1468).contains(&b) && (1..=16).contains(&w),
                        "{what}: {o:?}"
                    );
                }
                other => panic!("{what}: unexpected opcode {other}"),
            }
        }
    }
    let (reply, _) = send_once(s.tftp, &request(WRQ, b"upload", "octet", &[]), WAIT).unwrap();
    assert_eq!(error_code(&reply), 4, "write requests are refused");
    // A whole request in an unknown mode is answered; a datagram that is not a whole
    // request is not (so junk is not reflected at the address it claims).
    let (reply, _) = send_once(s.tftp, &request(RRQ, b"f", "foo", &[]), WAIT).unwrap();
    assert_eq!(error_code(&reply), 4, "unknown mode");
    for silent in [
        &b"\x00\x01f"[..],
        b"\x00\x01f\x00",
        &[0, 4, 0, 1],
        &[0; 100],
    ] {
        assert_eq!(send_once(s.tftp, silent, WAIT), None, "{silent:?}");
    }
    assert!(!s.tftp_root().join("upload").exists());
    // Still serving.
    let (_, data) = fetch_windowed(s.tftp, "f", &[("blksize", "1468")]);
    assert_eq!(md5_bytes(&data), md5_file(&s.tftp_root().join("f")));
}

/// One raw HTTP/1.1 request; returns (status, whole response).
fn raw_http(addr: std::net::SocketAddr, request_line: &str) -> (u16, Vec<u8>) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        c,
        "{request_line}\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = Vec::new();
    let _ = c.read_to_end(&mut resp);
    let head = String::from_utf8_lossy(&resp[..resp.len().min(64)]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, resp)
}

#[test]
fn http_traversal_corpus_is_refused() {
    let s = BootServers::start();
    std::fs::write(s.http_root().join("ok"), b"fine").unwrap();
    let long = format!("/{}", "a".repeat(1500));
    let corpus: Vec<(String, u16)> = [
        ("/../outside/secret", 400),
        ("/%2e%2e/outside/secret", 400),
        ("/%2E%2E%2Foutside%2Fsecret", 400),
        ("/..%2foutside%2fsecret", 400),
        ("/%5c..%5coutside%5csecret", 400),
        ("/ok/..%5c..%5coutside%5csecret", 400),
        ("/escape", 403),
        ("/slash/etc/passwd", 403),
        ("/slash", 403),
        ("/slash/", 403),
        ("/etc/passwd", 404),
        ("//etc/passwd", 404),
        ("/%00", 400),
        ("/ok%00", 400),
        ("/ok%0a", 400),
        ("/%ff", 400),
        ("/%zz", 400),
        ("/", 400),
        (long.as_str(), 400),
    ]
    .into_iter()
    .map(|(p, c)| (p.to_string(), c))
    .collect();
    for (path, want) in &corpus {
        let (status, resp) = raw_http(s.http, &format!("GET {path} HTTP/1.1"));
        assert_eq!(status, *want, "GET {path}");
        assert!(
            !resp.windows(SECRET.len()).any(|w| w == SECRET),
            "{path} leaked"
        );
    }
    // What hyper itself refuses before us still never reaches a file.
    for line in [
        "GET /..\\outside\\secret HTTP/1.1",
        "GET http://x/../outside/secret HTTP/1.1",
    ] {
        let (status, resp) = raw_http(s.http, line);
        assert!((400..500).contains(&status), "{line}: {status}");
        assert!(
            !resp.windows(SECRET.len()).any(|w| w == SECRET),
            "{line} leaked"
        );
    }
    let (status, resp) = raw_http(s.http, "POST /ok HTTP/1.1");
    assert_eq!(status, 405);
    assert!(
        String::from_utf8_lossy(&resp)
            .to_lowercase()
            .contains("allow: get, head")
    );
    let (status, resp) = raw_http(s.http, "GET /ok HTTP/1.1");
    assert_eq!(status, 200);
    assert!(resp.ends_with(b"fine"));
    assert!(s.metric("ironboot_http_refused_total{reason=\"outside_root\"}") >= 4.0);
}

#[test]
fn http_get_head_and_ranges_with_curl() {
    if !require_peer("http range", &["curl"]) {
        return;
    }
    let s = BootServers::start();
    let len = 5 * 1024 * 1024 + 3;
    write_pattern_file(&s.http_root().join("ramdisk"), len, 5);
    let all = std::fs::read(s.http_root().join("ramdisk")).unwrap();
    let out = tempfile::tempdir().unwrap();
    let url = s.http_url("ramdisk");
    let curl = |args: &[&str]| {
        let file = out.path().join("body");
        let (ok, headers, err) = run(Command::new("curl")
            .args(["-sS", "--max-time", "60", "-D", "-", "-o"])
            .arg(&file)
            .args(args)
            .arg(&url));
        assert!(ok, "curl {args:?}: {err}");
        (
            headers.to_lowercase(),
            std::fs::read(&file).unwrap_or_default(),
        )
    };
    let (h, body) = curl(&[]);
    assert!(h.starts_with("http/1.1 200"), "{h}");
    assert!(
        h.contains(&format!("content-length: {len}")) && h.contains("accept-ranges: bytes"),
        "{h}"
    );
    assert_eq!(md5_bytes(&body), md5_bytes(&all));

    let (h, _) = curl(&["-I"]);
    assert!(
        h.starts_with("http/1.1 200") && h.contains(&format!("content-length: {len}")),
        "{h}"
    );
    assert!(h.contains("last-modified: "), "{h}");
    // HEAD sends the headers of a GET and no body.
    let (status, resp) = raw_http(s.http, "HEAD /ramdisk HTTP/1.1");
    assert_eq!(status, 200);
    assert!(resp.ends_with(b"\r\n\r\n"), "HEAD had a body");

    let (h, body) = curl(&["-r", "100-199"]);
    assert!(h.starts_with("http/1.1 206"), "{h}");
    assert!(
        h.contains(&format!("content-range: bytes 100-199/{len}")),
        "{h}"
    );
    assert_eq!(body, &all[100..200]);

    let (h, body) = curl(&["-r", "-1000"]);
    assert!(h.starts_with("http/1.1 206"), "{h}");
    assert_eq!(body, &all[len - 1000..]);

    let (h, body) = curl(&["-r", "5000000-"]);
    assert!(h.starts_with("http/1.1 206"), "{h}");
    assert_eq!(body, &all[5_000_000..]);

    let (h, _) = curl(&["-r", &format!("{len}-")]);
    assert!(
        h.starts_with("http/1.1 416") && h.contains(&format!("content-range: bytes */{len}")),
        "{h}"
    );

    // Several ranges: the whole file (RFC 9110 lets a server ignore Range).
    let (h, body) = curl(&["-r", "0-1,10-11"]);
    assert!(h.starts_with("http/1.1 200"), "{h}");
    assert_eq!(body.len(), len);

    // Resume: curl -C continues an interrupted download.
    std::fs::write(out.path().join("body"), &all[..1_000_000]).unwrap();
    let (h, _) = curl(&["-C", "-"]);
    assert!(h.starts_with("http/1.1 206"), "{h}");
    assert_eq!(md5_file(&out.path().join("body")), md5_bytes(&all));
    let sent = s.metric("ironboot_http_sent_bytes_total");
    let expected = len + 100 + 1000 + (len - 5_000_000) + len + (len - 1_000_000);
    assert_eq!(sent, expected as f64);
}

/// Reads one response from `conn` (its Content-Length body unless it answers a HEAD),
/// keeping what follows in `rest`.
fn read_response(conn: &mut TcpStream, rest: &mut Vec<u8>, head: bool) -> (String, Vec<u8>) {
    let mut buf = [0u8; 65536];
    let head_end = loop {
        if let Some(i) = rest.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "closed inside a head");
        rest.extend_from_slice(&buf[..n]);
    };
    let text = String::from_utf8_lossy(&rest[..head_end]).to_lowercase();
    let len: usize = match head {
        true => 0,
        false => text
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0),
    };
    rest.drain(..head_end);
    while rest.len() < len {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {} of {len} body bytes", rest.len());
        rest.extend_from_slice(&buf[..n]);
    }
    let body = rest.drain(..len).collect();
    (text, body)
}

#[test]
fn pipelined_requests_on_one_connection_get_their_own_bytes() {
    // File bodies go out with sendfile behind placeholder frames: several responses queued on
    // one connection must each get their own file's bytes, in order, HEAD and 404 between.
    let s = BootServers::start();
    let big_len = 3 * 1024 * 1024 + 5;
    write_pattern_file(&s.http_root().join("kernel"), big_len, 11);
    write_pattern_file(&s.http_root().join("script"), 300, 12);
    let kernel = std::fs::read(s.http_root().join("kernel")).unwrap();
    let script = std::fs::read(s.http_root().join("script")).unwrap();
    // Out of the page cache, so the first send reads ahead on a thread before sendfile.
    let file = std::fs::File::open(s.http_root().join("kernel")).unwrap();
    file.sync_all().unwrap();
    // SAFETY: the descriptor is open; the call only drops clean cached pages.
    unsafe {
        use std::os::fd::AsRawFd;
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
    let mut conn = TcpStream::connect(s.http).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let requests = [
        "GET /kernel HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /script HTTP/1.1\r\nHost: x\r\n\r\n",
        "HEAD /kernel HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /missing HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /kernel HTTP/1.1\r\nHost: x\r\nRange: bytes=1000000-1999999\r\n\r\n",
        "GET /kernel HTTP/1.1\r\nHost: x\r\n\r\n",
    ];
    conn.write_all(requests.concat().as_bytes()).unwrap();
    let mut rest = Vec::new();
    let mut next = |head| read_response(&mut conn, &mut rest, head);
    let (h, body) = next(false);
    assert!(h.starts_with("http/1.1 200"), "{h}");
    assert!(body == kernel, "first kernel differs");
    let (h, body) = next(false);
    assert!(h.starts_with("http/1.1 200") && body == script, "{h}");
    let (h, _) = next(true);
    assert!(h.starts_with("http/1.1 200"), "{h}");
    assert!(h.contains(&format!("content-length: {big_len}")), "{h}");
    let (h, _) = next(false);
    assert!(h.starts_with("http/1.1 404"), "{h}");
    let (h, body) = next(false);
    assert!(h.starts_with("http/1.1 206"), "{h}");
    assert!(body == kernel[1_000_000..2_000_000], "range differs");
    let (h, body) = next(false);
    assert!(
        h.starts_with("http/1.1 200") && body == kernel,
        "last kernel differs: {h}"
    );
}

#[test]
fn a_file_that_shrinks_while_it_is_sent_ends_the_connection_short_never_padded() {
    // sendfile meets the new end of file: the connection must close before the announced
    // length, with only the file's own bytes sent, and the server must go on serving.
    let s = BootServers::start();
    let len = 64 << 20;
    let path = s.http_root().join("ramdisk");
    write_pattern_file(&path, len, 13);
    write_pattern_file(&s.http_root().join("script"), 300, 14);
    let original = std::fs::read(&path).unwrap();
    let mut conn = TcpStream::connect(s.http).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    conn.write_all(b"GET /ramdisk HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    // Far less than the socket buffers could hold of a 64 MiB body.
    while got.len() < 1 << 20 {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("after {} bytes: {e}", got.len()),
        }
    }
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&got[..head_end]).to_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains(&format!("content-length: {len}")), "{head}");
    let body = &got[head_end..];
    assert!(body.len() < len, "a whole body was sent for a shrunk file");
    assert!(
        body == &original[..body.len()],
        "bytes other than the file's were sent"
    );
    let script = std::fs::read(s.http_root().join("script")).unwrap();
    let mut again = TcpStream::connect(s.http).unwrap();
    again
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    again
        .write_all(b"GET /script HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (h, body) = read_response(&mut again, &mut Vec::new(), false);
    assert!(h.starts_with("http/1.1 200") && body == script, "{h}");
}

fn node() -> Uuid {
    NODE.parse().unwrap()
}

fn macs() -> Vec<MacAddress> {
    ["52:54:00:12:34:56", "52:54:00:ab:cd:ef"]
        .iter()
        .map(|m| MacAddress::parse(m).unwrap())
        .collect()
}

/// The context of the laid-out node: deploy params as the conductor would build them.
fn context(
    layout: &Layout,
    interface: NetBoot,
    mode: BootMode,
    arch: Arch,
    entry: Entry,
) -> BootContext {
    let http_url = Some("http://192.0.2.10:8080");
    let defaults = PxeSettings::default().default_kernel_params().unwrap();
    let mut deploy_params = KernelParams::parse_with_default(
        "driver_info.kernel_append_params",
        "%default% console=ttyS0,115200n8",
        &defaults,
    )
    .unwrap();
    deploy_params
        .push(
            "ramdisk_params",
            "ipa-api-url",
            Some("http://192.0.2.10:6385"),
        )
        .unwrap();
    deploy_params
        .push(
            "ramdisk_params",
            "ipa-global-request-id",
            Some("req-6f1c2a3b-0d4e-4b5a-9c8d-7e6f5a4b3c2d"),
        )
        .unwrap();
    BootContext {
        node_uuid: node(),
        interface,
        boot_mode: mode,
        arch,
        entry,
        deploy: Some(
            layout
                .image_locations(interface, mode, node(), Images::Deploy, http_url)
                .unwrap(),
        ),
        deploy_params,
        instance: Some(
            layout
                .image_locations(interface, mode, node(), Images::Instance, http_url)
                .unwrap(),
        ),
        instance_params: KernelParams::parse(
            "instance_info.ramdisk_kernel_arguments",
            "console=ttyS0",
        )
        .unwrap(),
        root_uuid: Some("4f0c3a4e-58c6-4b2b-9d5e-0d6f1c2a3b4c".into()),
        disk_id: None,
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tftpboot-fixtures")
}

/// Compares `actual` with the golden file, or rewrites it under IRONBOOT_BLESS=1.
fn golden(rel: &str, actual: &str) -> Option<String> {
    let path = fixtures().join(rel);
    if std::env::var("IRONBOOT_BLESS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return None;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    (expected != actual).then(|| {
        format!(
            "{rel} differs from the golden file (IRONBOOT_BLESS=1 cargo test --test it boot_serving:: rewrites it)\n\
             --- expected\n{expected}\n--- actual\n{actual}"
        )
    })
}

#[test]
fn rendered_configs_match_golden_files() {
    let layout = Layout::new("/tftpboot", "/httpboot");
    let plain = Renderer::new(&PxeSettings::default()).unwrap();
    let tuned = Renderer::new(&PxeSettings {
        ipxe_timeout_secs: 30,
        ipxe_retries: 3,
        ipxe_fallback_script: Some("http://192.0.2.10:8080/fallback.ipxe".into()),
        ..PxeSettings::default()
    })
    .unwrap();
    use Entry::*;
    let cases: Vec<(&str, NetBoot, BootMode, Arch, Entry, bool)> = vec![
        (
            "pxelinux-x86_64-deploy.cfg",
            NetBoot::Pxe,
            BootMode::Bios,
            Arch::X86_64,
            Deploy,
            false,
        ),
        (
            "pxelinux-x86_64-boot_partition.cfg",
            NetBoot::Pxe,
            BootMode::Bios,
            Arch::X86_64,
            BootPartition,
            false,
        ),
        (
            "pxelinux-x86_64-boot_ramdisk.cfg",
            NetBoot::Pxe,
            BootMode::Bios,
            Arch::X86_64,
            BootRamdisk,
            false,
        ),
        (
            "pxelinux-x86_64-boot_whole_disk.cfg",
            NetBoot::Pxe,
            BootMode::Bios,
            Arch::X86_64,
            BootWholeDisk,
            false,
        ),
        (
            "grub-x86_64-deploy.cfg",
            NetBoot::Pxe,
            BootMode::Uefi,
            Arch::X86_64,
            Deploy,
            false,
        ),
        (
            "grub-x86_64-boot_partition.cfg",
            NetBoot::Pxe,
            BootMode::Uefi,
            Arch::X86_64,
            BootPartition,
            false,
        ),
        (
            "grub-aarch64-boot_whole_disk.cfg",
            NetBoot::Pxe,
            BootMode::Uefi,
            Arch::Aarch64,
            BootWholeDisk,
            false,
        ),
        (
            "ipxe-x86_64-bios-deploy.ipxe",
            NetBoot::Ipxe,
            BootMode::Bios,
            Arch::X86_64,
            Deploy,
            false,
        ),
        (
            "ipxe-x86_64-bios-boot_whole_disk.ipxe",
            NetBoot::Ipxe,
            BootMode::Bios,
            Arch::X86_64,
            BootWholeDisk,
            false,
        ),
        (
            "ipxe-x86_64-uefi-deploy-timeout.ipxe",
            NetBoot::Ipxe,
            BootMode::Uefi,
            Arch::X86_64,
            Deploy,
            true,
        ),
        (
            "ipxe-aarch64-uefi-boot_ramdisk.ipxe",
            NetBoot::Ipxe,
            BootMode::Uefi,
            Arch::Aarch64,
            BootRamdisk,
            false,
        ),
        (
            "ipxe-x86_64-uefi-boot_partition.ipxe",
            NetBoot::Ipxe,
            BootMode::Uefi,
            Arch::X86_64,
            BootPartition,
            false,
        ),
    ];
    let mut failures = Vec::new();
    for (file, iface, mode, arch, entry, use_tuned) in cases {
        let r = if use_tuned { &tuned } else { &plain };
        let text = r
            .render_node_config(&context(&layout, iface, mode, arch, entry))
            .unwrap();
        failures.extend(golden(&format!("configs/{file}"), &text));
    }
    // Whole-disk with a disk id: PXELINUX chains that disk's MBR.
    let mut c = context(
        &layout,
        NetBoot::Pxe,
        BootMode::Bios,
        Arch::X86_64,
        BootWholeDisk,
    );
    c.disk_id = Some("0x1a2b3c4d".into());
    c.instance = None;
    failures.extend(golden(
        "configs/pxelinux-x86_64-boot_whole_disk-disk_id.cfg",
        &plain.render_node_config(&c).unwrap(),
    ));
    failures.extend(golden(
        "configs/boot.ipxe",
        &plain.render_boot_ipxe().unwrap(),
    ));
    failures.extend(golden(
        "configs/boot-fallback.ipxe",
        &tuned.render_boot_ipxe().unwrap(),
    ));
    failures.extend(golden(
        "configs/grub-common.cfg",
        &plain.render_grub_common().unwrap(),
    ));
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn node_trees_match_golden_files_through_deploy_switch_and_clean_up() {
    let mut failures = Vec::new();
    for (iface, mode, name) in [
        (NetBoot::Pxe, BootMode::Bios, "pxe-bios"),
        (NetBoot::Pxe, BootMode::Uefi, "pxe-uefi"),
        (NetBoot::Ipxe, BootMode::Uefi, "ipxe-uefi"),
    ] {
        let d = tempfile::tempdir().unwrap();
        let layout = Layout::in_data_dir(d.path());
        let renderer = Renderer::new(&PxeSettings::default()).unwrap();
        layout.create_roots().unwrap();
        layout
            .write_boot_ipxe(&renderer.render_boot_ipxe().unwrap())
            .unwrap();
        layout
            .write_grub_common(&renderer.render_grub_common().unwrap())
            .unwrap();
        let (kernel, ramdisk) = (
            d.path().join("master-kernel"),
            d.path().join("master-ramdisk"),
        );
        std::fs::write(&kernel, b"deploy kernel").unwrap();
        std::fs::write(&ramdisk, b"deploy ramdisk").unwrap();
        let mut states = String::new();
        let root = layout.root(iface).to_path_buf();

        let ctx = context(&layout, iface, mode, Arch::X86_64, Entry::Deploy);
        layout
            .write_config(iface, node(), &renderer.render_node_config(&ctx).unwrap())
            .unwrap();
        layout
            .place_image(iface, node(), NodeFile::DeployKernel, &kernel)
            .unwrap();
        layout
            .place_image(iface, node(), NodeFile::DeployRamdisk, &ramdisk)
            .unwrap();
        layout.link_macs(iface, node(), &macs()).unwrap();
        states.push_str(&format!(
            "## {name}: deploy\n{}",
            support::tree(&root, true)
        ));

        // Switch to the instance: a fresh render replaces the config, links unchanged.
        let ctx = context(&layout, iface, mode, Arch::X86_64, Entry::BootPartition);
        layout
            .write_config(iface, node(), &renderer.render_node_config(&ctx).unwrap())
            .unwrap();
        layout
            .remove_node_file(iface, node(), NodeFile::DeployKernel)
            .unwrap();
        layout
            .remove_node_file(iface, node(), NodeFile::DeployRamdisk)
            .unwrap();
        states.push_str(&format!(
            "\n## {name}: boot_partition\n{}",
            support::tree(&root, true)
        ));

        let report = layout.clean_up_node(iface, node()).unwrap();
        assert!(report.node_dir_removed);
        states.push_str(&format!(
            "\n## {name}: cleaned up\n{}",
            support::tree(&root, true)
        ));
        failures.extend(golden(&format!("trees/{name}.txt"), &states));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn laid_out_node_is_served_through_its_mac_links_and_switches_atomically() {
    if !require_peer("laid out node", &["curl"]) {
        return;
    }
    let s = BootServers::start();
    let layout = Layout::new(s.tftp_root(), s.http_root());
    let renderer = Renderer::new(&PxeSettings::default()).unwrap();
    layout.create_roots().unwrap();
    for iface in [NetBoot::Pxe, NetBoot::Ipxe] {
        let mode = BootMode::Uefi;
        let ctx = context(&layout, iface, mode, Arch::X86_64, Entry::Deploy);
        layout
            .write_config(iface, node(), &renderer.render_node_config(&ctx).unwrap())
            .unwrap();
        layout.link_macs(iface, node(), &macs()).unwrap();
    }
    let out = tempfile::tempdir().unwrap();
    let fetch = |url: &str| {
        let file = out.path().join("got");
        let _ = std::fs::remove_file(&file);
        let (ok, err) = curl_tftp(&["-f"], url, &file);
        ok.then(|| std::fs::read_to_string(&file).unwrap())
            .ok_or(err)
    };
    // GRUB asks over TFTP with absolute names; iPXE over HTTP by hyphenated MAC.
    let grub = fetch(&s.tftp_url("/grub.cfg-01-52-54-00-ab-cd-ef")).unwrap();
    assert!(grub.contains("set default=deploy"), "{grub}");
    assert_eq!(fetch(&s.tftp_url("/52:54:00:12:34:56.conf")).unwrap(), grub);
    assert_eq!(
        fetch(&s.tftp_url("pxelinux.cfg/01-52-54-00-12-34-56")).unwrap(),
        grub
    );
    let ipxe = fetch(&s.http_url("pxelinux.cfg/52-54-00-12-34-56")).unwrap();
    assert!(
        ipxe.starts_with("#!ipxe") && ipxe.contains("goto deploy\n"),
        "{ipxe}"
    );

    let ctx = context(
        &layout,
        NetBoot::Ipxe,
        BootMode::Uefi,
        Arch::X86_64,
        Entry::BootWholeDisk,
    );
    layout
        .write_config(
            NetBoot::Ipxe,
            node(),
            &renderer.render_node_config(&ctx).unwrap(),
        )
        .unwrap();
    let ipxe = fetch(&s.http_url("pxelinux.cfg/52-54-00-ab-cd-ef")).unwrap();
    assert!(ipxe.contains("goto boot_whole_disk\n"), "{ipxe}");

    layout.clean_up_node(NetBoot::Ipxe, node()).unwrap();
    assert!(fetch(&s.http_url("pxelinux.cfg/52-54-00-ab-cd-ef")).is_err());
    // The pxe interface's files are untouched by the ipxe clean-up.
    assert_eq!(fetch(&s.tftp_url("/52:54:00:12:34:56.conf")).unwrap(), grub);
}

#[test]
fn ironboot_serve_serves_both_roots() {
    if !require_peer("ironboot serve", &["curl"]) {
        return;
    }
    let server = support::server::Server::start();
    let tftp_root = server.data_dir.join("tftpboot");
    let http_root = server.data_dir.join("httpboot");
    write_pattern_file(&tftp_root.join("vmlinuz"), 2 * 1024 * 1024, 11);
    write_pattern_file(&http_root.join("initrd"), 3 * 1024 * 1024, 12);
    let out = tempfile::tempdir().unwrap();
    let got = out.path().join("vmlinuz");
    let (ok, err) = curl_tftp(
        &["--tftp-blksize", "1468"],
        &format!("tftp://127.0.0.1:{}/vmlinuz", server.tftp_port),
        &got,
    );
    assert!(ok, "{err}");
    assert_eq!(md5_file(&got), md5_file(&tftp_root.join("vmlinuz")));
    let got = out.path().join("initrd");
    let (ok, err) = curl_tftp(
        &["-f"],
        &format!("http://127.0.0.1:{}/initrd", server.http_port),
        &got,
    );
    assert!(ok, "{err}");
    assert_eq!(md5_file(&got), md5_file(&http_root.join("initrd")));
    // boot.ipxe is rendered at start, at the top of the http root.
    let want = Renderer::new(&PxeSettings::default())
        .unwrap()
        .render_boot_ipxe()
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(http_root.join("boot.ipxe")).unwrap(),
        want
    );
}

/// An unprivileged `ironboot serve` asked for port 69 says why it cannot bind it. It runs in a
/// network namespace of its own: there port 69 is free, and unprivileged ports start at 1024
/// whatever this host says (container runtimes often set 0, which would let it bind).
#[test]
fn an_unprivileged_serve_explains_that_it_cannot_bind_port_69() {
    let test = "serve on port 69";
    if !support::require_condition(test, is_root(), "needs root (drops to nobody)")
        || !require_peer(test, &["setpriv", "unshare", "ip"])
    {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        d.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let netns = "ip link set lo up && \
                 echo 1024 > /proc/sys/net/ipv4/ip_unprivileged_port_start && exec \"$@\"";
    let (ok, _, err) = support::run_timeout(
        Command::new("unshare")
            .args(["--net", "sh", "-c", netns, "sh"])
            .args([
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
            ])
            .arg(support::ironboot_bin())
            .arg("serve")
            .arg("--data-dir")
            .arg(d.path().join("data"))
            .args([
                "--api-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .args(["--tftp-listen", "127.0.0.1:69"])
            .env_remove("IRONBOOT_CONFIG"),
        Duration::from_secs(30),
    );
    assert!(!ok, "nobody bound port 69");
    assert!(
        err.contains("127.0.0.1:69") && err.contains("CAP_NET_BIND_SERVICE"),
        "{err}"
    );
}

/// setpriv only drops privileges when we have them.
fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}
