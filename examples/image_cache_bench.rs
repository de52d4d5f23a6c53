//! Driver for `benches/image_cache.sh` (release build).
//!
//! `origin FILE PORT_FILE`: serves FILE at `/image` (tower-http, with Range and
//! Last-Modified) on 127.0.0.1:0, writes the port to PORT_FILE, and counts GETs at `/stats`.
//!
//! `deploy URL CACHE_DIR NODES_DIR N HITS`: N concurrent deploy-style requests (fetch through
//! one cold `ImageCache`, then hard-link into `NODES_DIR/<i>/disk`), then HITS sequential
//! cache hits; prints `deploy_secs`, `hit_p50_ms`, `hit_p99_ms`. The script checks the bytes
//! itself (against a checksum of the source file), never against anything printed here.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::Request;
use axum::http::Method;
use axum::middleware::{self, Next};
use ironboot::images::{CacheSettings, ImageCache, ImageRequest};
use ironboot::metrics::Registry;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Runtime::new()?;
    match args.first().map(String::as_str) {
        Some("origin") if args.len() == 3 => rt.block_on(origin(&args[1], &args[2])),
        Some("deploy") if args.len() == 6 => rt.block_on(deploy(
            &args[1],
            PathBuf::from(&args[2]),
            PathBuf::from(&args[3]),
            args[4].parse()?,
            args[5].parse()?,
        )),
        _ => anyhow::bail!(
            "usage: image_cache_bench origin FILE PORT_FILE | deploy URL CACHE_DIR NODES_DIR N HITS"
        ),
    }
}

async fn origin(file: &str, port_file: &str) -> anyhow::Result<()> {
    let gets = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&gets);
    let app = axum::Router::new()
        .route_service("/image", tower_http::services::ServeFile::new(file))
        .layer(middleware::from_fn(move |req: Request, next: Next| {
            let counter = Arc::clone(&counter);
            async move {
                if req.method() == Method::GET {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                next.run(req).await
            }
        }))
        .route(
            "/stats",
            axum::routing::get(move || async move { gets.load(Ordering::SeqCst).to_string() }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    std::fs::write(port_file, listener.local_addr()?.port().to_string())?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn deploy(
    url: &str,
    cache_dir: PathBuf,
    nodes: PathBuf,
    n: usize,
    hits: usize,
) -> anyhow::Result<()> {
    let cache = ImageCache::open(
        CacheSettings {
            size_cap_mib: 64 * 1024,
            ..CacheSettings::default()
        },
        &cache_dir,
        &[],
        &mut Registry::default(),
    )?;
    // An instance image: inspected (it is raw, so nothing is converted).
    let req = ImageRequest::new(url);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..n {
        let (cache, req, dest) = (cache.clone(), req.clone(), nodes.join(format!("{i}/disk")));
        tasks.push(tokio::spawn(async move {
            let image = cache.fetch(&req).await?;
            cache.place(&image, &dest).await?;
            anyhow::Ok(image.sha256().to_string())
        }));
    }
    let mut digests = Vec::new();
    for t in tasks {
        digests.push(t.await??);
    }
    let deploy_secs = started.elapsed().as_secs_f64();
    digests.dedup();
    anyhow::ensure!(digests.len() == 1, "requests saw different images");

    let mut lat = Vec::with_capacity(hits);
    for _ in 0..hits {
        let t = Instant::now();
        let image = cache.fetch(&req).await?;
        anyhow::ensure!(!image.downloaded, "a cache hit downloaded");
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    println!("deploy_secs {deploy_secs:.3}");
    println!("hit_p50_ms {:.3}", pct(0.5));
    println!("hit_p99_ms {:.3}", pct(0.99));
    Ok(())
}
