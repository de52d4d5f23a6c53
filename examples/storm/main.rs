//! Load generator of `benches/storm.sh`: a rack of N nodes powering on within one second.
//!
//! Each simulated node does what its firmware does: a TFTP RRQ of the loader (blksize 1468;
//! every `--window-every`-th node also asks for windowsize 16), then over one kept-alive HTTP
//! connection `boot.ipxe`, its per-MAC script `nodes/<mac>.ipxe`, the kernel and the ramdisk.
//! Every transfer is checked against the length and CRC-32 of the source file, computed here
//! from the served tree before the storm (never from anything the server says).
//!
//! While the storm runs, the server processes (`--pids`, with their descendants, or the
//! members of `--cgroup`, a cpuacct group holding them) are sampled for resident memory;
//! their CPU time is read before and after (see `procs`).
//!
//! Usage: storm --tftp ADDR --http ADDR --tftp-root DIR --http-root DIR --nodes N
//!              [--pids PID,PID | --cgroup DIR] [--window-every K] [--spread-ms MS] [--parts tftp,http]
//! (`--parts` leaves out a protocol, to see what each costs the server.)
//! Prints `key value` lines (see `report`) and one `fail NODE REASON` line per failed node.

mod http;
mod procs;
mod tftp;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use tftp::TftpAsk;

const LOADER: &str = "loader.efi";
const KERNEL: &str = "/deploy/kernel";
const RAMDISK: &str = "/deploy/ramdisk";
const BOOT_IPXE: &str = "/boot.ipxe";

struct Args {
    tftp: SocketAddr,
    http: SocketAddr,
    tftp_root: PathBuf,
    http_root: PathBuf,
    nodes: usize,
    accounting: procs::Accounting,
    window_every: usize,
    spread: Duration,
    tftp_part: bool,
    http_part: bool,
}

/// Length and CRC-32 of a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sum {
    len: u64,
    crc: u32,
}

struct Expected {
    loader: Sum,
    boot: Sum,
    kernel: Sum,
    ramdisk: Sum,
    http_root: PathBuf,
}

/// One node's outcome.
struct NodeResult {
    /// From its start to the ramdisk's last byte checked.
    total: Duration,
    tftp: Duration,
    bytes: u64,
    window: u16,
    connections: u32,
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let expected = Arc::new(Expected {
        loader: sum_file(&args.tftp_root.join(LOADER))?,
        boot: sum_file(&args.http_root.join(&BOOT_IPXE[1..]))?,
        kernel: sum_file(&args.http_root.join(&KERNEL[1..]))?,
        ramdisk: sum_file(&args.http_root.join(&RAMDISK[1..]))?,
        http_root: args.http_root.clone(),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(storm(args, expected))
}

async fn storm(args: Args, expected: Arc<Expected>) -> anyhow::Result<()> {
    let cpu_before = args.accounting.cpu_seconds();
    let running = Arc::new(AtomicBool::new(true));
    let peak = Arc::new(AtomicU64::new(args.accounting.rss_kib()));
    let sampler = {
        let (running, peak, acc) = (running.clone(), peak.clone(), args.accounting.clone());
        tokio::task::spawn_blocking(move || {
            while running.load(Ordering::Relaxed) {
                peak.fetch_max(acc.rss_kib(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.nodes);
    for i in 0..args.nodes {
        let at = started + args.spread.mul_f64(i as f64 / args.nodes as f64);
        let ask = TftpAsk {
            blksize: 1468,
            windowsize: (args.window_every > 0 && i % args.window_every == 0).then_some(16),
            timeout: Duration::from_secs(1),
            retries: 6,
        };
        let (expected, tftp_addr, http_addr) = (expected.clone(), args.tftp, args.http);
        let ask = args.tftp_part.then_some(ask);
        let http_addr = args.http_part.then_some(http_addr);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            node(i, tftp_addr, http_addr, ask, &expected).await
        }));
    }
    let mut results = Vec::with_capacity(args.nodes);
    let mut failures = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await {
            Ok(Ok(r)) => results.push(r),
            Ok(Err(e)) => failures.push((i, format!("{e:#}"))),
            Err(e) => failures.push((i, format!("task: {e}"))),
        }
    }
    let wall = started.elapsed();
    // Reaped forks are added to the parent's times when it waits for them: give it a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu = args.accounting.cpu_seconds() - cpu_before;
    running.store(false, Ordering::Relaxed);
    let _ = sampler.await;
    report(
        &args,
        &results,
        &failures,
        wall,
        cpu,
        peak.load(Ordering::Relaxed),
    );
    Ok(())
}

async fn node(
    i: usize,
    tftp_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    ask: Option<TftpAsk>,
    expected: &Expected,
) -> anyhow::Result<NodeResult> {
    let started = Instant::now();
    let mut bytes = 0;
    let mut window = 0;
    if let Some(ask) = ask {
        let loader = tftp::fetch(tftp_addr, LOADER, ask)
            .await
            .context("TFTP loader")?;
        check(
            "TFTP loader",
            Sum {
                len: loader.len,
                crc: loader.crc,
            },
            expected.loader,
        )?;
        bytes += loader.len;
        window = loader.window;
    }
    let tftp = started.elapsed();
    let Some(http_addr) = http_addr else {
        return Ok(NodeResult {
            total: started.elapsed(),
            tftp,
            bytes,
            window,
            connections: 0,
        });
    };
    let mac = mac_of(i);
    let script = format!("/nodes/{mac}.ipxe");
    let script_sum = sum_file(&expected.http_root.join(&script[1..]))?;
    let mut client = http::Client::new(http_addr, Duration::from_secs(600));
    for (path, want) in [
        (BOOT_IPXE, expected.boot),
        (script.as_str(), script_sum),
        (KERNEL, expected.kernel),
        (RAMDISK, expected.ramdisk),
    ] {
        let got = client
            .get(path)
            .await
            .with_context(|| format!("GET {path}"))?;
        check(
            path,
            Sum {
                len: got.len,
                crc: got.crc,
            },
            want,
        )?;
        bytes += got.len;
    }
    Ok(NodeResult {
        total: started.elapsed(),
        tftp,
        bytes,
        window,
        connections: client.connections,
    })
}

fn check(what: &str, got: Sum, want: Sum) -> anyhow::Result<()> {
    if got != want {
        bail!(
            "{what}: got {} bytes crc {:08x}, source has {} bytes crc {:08x}",
            got.len,
            got.crc,
            want.len,
            want.crc
        );
    }
    Ok(())
}

/// The node's MAC, as storm.sh names the per-MAC scripts: 52:54:00 and the node number.
pub fn mac_of(i: usize) -> String {
    let b = (i as u32).to_be_bytes();
    format!("52-54-00-{:02x}-{:02x}-{:02x}", b[1], b[2], b[3])
}

fn sum_file(path: &Path) -> anyhow::Result<Sum> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok(Sum {
        len,
        crc: hasher.finalize(),
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn report(
    args: &Args,
    results: &[NodeResult],
    failures: &[(usize, String)],
    wall: Duration,
    cpu: f64,
    peak_kib: u64,
) {
    let mut totals: Vec<f64> = results.iter().map(|r| r.total.as_secs_f64()).collect();
    totals.sort_by(f64::total_cmp);
    let mut tftps: Vec<f64> = results.iter().map(|r| r.tftp.as_secs_f64()).collect();
    tftps.sort_by(f64::total_cmp);
    let bytes: u64 = results.iter().map(|r| r.bytes).sum();
    let gib = bytes as f64 / f64::from(1u32 << 30);
    let wall_s = wall.as_secs_f64();
    println!("nodes {}", args.nodes);
    println!("failures {}", failures.len());
    println!("p50_s {:.3}", percentile(&totals, 50.0));
    println!("p99_s {:.3}", percentile(&totals, 99.0));
    println!("max_s {:.3}", totals.last().copied().unwrap_or(f64::NAN));
    println!("tftp_p50_s {:.3}", percentile(&tftps, 50.0));
    println!("tftp_p99_s {:.3}", percentile(&tftps, 99.0));
    println!("wall_s {wall_s:.3}");
    println!("gib {gib:.3}");
    println!("throughput_gib_s {:.3}", gib / wall_s);
    println!("cpu_s {cpu:.2}");
    println!("cpu_source {}", args.accounting.label());
    println!(
        "cpu_s_per_gib {:.3}",
        if gib > 0.0 { cpu / gib } else { f64::NAN }
    );
    println!("peak_rss_mib {:.1}", peak_kib as f64 / 1024.0);
    let windowed = results.iter().filter(|r| r.window > 1).count();
    println!("tftp_windowed_granted {windowed}");
    let reconnects: u32 = results
        .iter()
        .map(|r| r.connections.saturating_sub(1))
        .sum();
    println!("http_reconnects {reconnects}");
    for (i, reason) in failures {
        println!("fail {i} {}", reason.replace('\n', " "));
    }
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        tftp: "127.0.0.1:69".parse()?,
        http: "127.0.0.1:8080".parse()?,
        tftp_root: PathBuf::new(),
        http_root: PathBuf::new(),
        nodes: 100,
        accounting: procs::Accounting::Tree(Vec::new()),
        window_every: 4,
        spread: Duration::from_secs(1),
        tftp_part: true,
        http_part: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--tftp" => a.tftp = value.parse()?,
            "--http" => a.http = value.parse()?,
            "--tftp-root" => a.tftp_root = value.into(),
            "--http-root" => a.http_root = value.into(),
            "--nodes" => a.nodes = value.parse()?,
            "--pids" => {
                a.accounting = procs::Accounting::Tree(
                    value
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::parse)
                        .collect::<Result<_, _>>()?,
                );
            }
            "--cgroup" => a.accounting = procs::Accounting::Cgroup(value.into()),
            "--window-every" => a.window_every = value.parse()?,
            "--spread-ms" => a.spread = Duration::from_millis(value.parse()?),
            "--parts" => {
                a.tftp_part = value.split(',').any(|p| p == "tftp");
                a.http_part = value.split(',').any(|p| p == "http");
            }
            other => bail!("unknown option {other} (see the file's header)"),
        }
    }
    if a.tftp_root.as_os_str().is_empty() || a.http_root.as_os_str().is_empty() {
        bail!("--tftp-root and --http-root are required");
    }
    Ok(a)
}
