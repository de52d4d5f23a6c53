//! Serves `<data dir>/tftpboot` over TFTP and `<data dir>/httpboot` over HTTP with the library's
//! servers, for trying clients by hand before `ironboot serve` exists.
//!
//! `cargo run --release --example bootserve -- DATA_DIR TFTP_ADDR HTTP_ADDR [TFTP_WORKERS]`

use std::path::PathBuf;

use ironboot::serve::confine::Confinement;
use ironboot::serve::http::{self, HttpMetrics, HttpSettings};
use ironboot::serve::tftp::{TftpMetrics, TftpService, TftpSettings};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 4,
        "usage: bootserve DATA_DIR TFTP_ADDR HTTP_ADDR [WORKERS]"
    );
    let data = PathBuf::from(&args[1]);
    let tftp_settings = TftpSettings {
        listen: args[2].parse()?,
        workers: args.get(4).map(|w| w.parse()).transpose()?.unwrap_or(2),
        ..TftpSettings::default()
    };
    let http_settings = HttpSettings {
        listen: args[3].parse()?,
        ..HttpSettings::default()
    };
    let shutdown = CancellationToken::new();
    let tftp = TftpService::bind(
        &tftp_settings,
        Confinement::new(&data.join("tftpboot"), &[])?,
        TftpMetrics::unregistered(),
    )?;
    let listener = http::bind(&http_settings).await?;
    let router = http::router(
        Confinement::new(&data.join("httpboot"), &[])?,
        &http_settings,
        HttpMetrics::default(),
    );
    println!("tftp {} http {}", tftp.local_addr(), listener.local_addr()?);
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
    });
    let (t, h) = tokio::join!(
        tftp.run(shutdown.clone()),
        http::serve(listener, router, shutdown)
    );
    t?;
    h?;
    Ok(())
}
