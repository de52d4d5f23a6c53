//! `ironboot serve`: builds every part from the validated config, runs the listeners and the
//! conductor, and shuts down cleanly on SIGTERM/SIGINT.

use std::fs::File;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::boot::layout::Layout;
use crate::boot::render::Renderer;
use crate::conductor::{Conductor, ConductorError, ConductorMetrics, Interfaces};
use crate::config::{AuthStrategy, Config};
use crate::metrics::Registry;
use crate::serve::confine::Confinement;
use crate::serve::http::{self as boot_http, HttpMetrics};
use crate::serve::tftp::{TftpMetrics, TftpService};
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError};

/// How long shutdown waits for running operations before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot create directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "another ironboot is already using data directory {0} (lock file ironboot.lock is held)"
    )]
    Locked(PathBuf),
    #[error("cannot lock {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Conductor(#[from] ConductorError),
    #[error(transparent)]
    Auth(#[from] api::auth::AuthFileError),
    #[error("image cache: {0}")]
    Cache(#[from] crate::images::ImageError),
    #[error("media builder: {0}")]
    Media(#[from] crate::media::MediaError),
    #[error("cannot listen on {addr} for {what}: {source}{hint}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("{what} server failed: {source}")]
    Serve {
        what: &'static str,
        source: std::io::Error,
    },
    #[error(transparent)]
    BootFiles(#[from] crate::boot::BootFilesError),
    #[error(transparent)]
    Root(#[from] crate::serve::confine::RootError),
    #[error(transparent)]
    Tftp(#[from] crate::serve::tftp::TftpError),
    #[error(transparent)]
    BootHttp(#[from] crate::serve::http::HttpError),
}

/// The data plane's tasks, stopped with the service's token.
struct DataPlane {
    tftp: Option<tokio::task::JoinHandle<Result<(), crate::serve::tftp::TftpError>>>,
    http: Option<tokio::task::JoinHandle<Result<(), crate::serve::http::HttpError>>>,
}

/// Prepares the boot roots (boot.ipxe, the common GRUB config, boot loaders) and starts the
/// TFTP and HTTP servers on the service's shutdown token. Binding happens here, so a port
/// problem stops the start-up.
async fn start_data_plane(
    config: &Config,
    renderer: &Renderer,
    layout: Layout,
    registry: &mut Registry,
    shutdown: &CancellationToken,
) -> Result<DataPlane, ServiceError> {
    let boot_ipxe = renderer.render_boot_ipxe()?;
    let grub_common = renderer.render_grub_common()?;
    let loaders = config.file.pxe.loader_file_paths.clone();
    let report = tokio::task::spawn_blocking(move || {
        layout.create_roots()?;
        layout.write_boot_ipxe(&boot_ipxe)?;
        layout.write_grub_common(&grub_common)?;
        Ok::<_, crate::boot::BootFilesError>(layout.install_loaders(&loaders))
    })
    .await
    .map_err(|e| ServiceError::Serve {
        what: "boot root preparation",
        source: std::io::Error::other(e),
    })??;
    tracing::info!(
        installed = report.installed.len(),
        unchanged = report.unchanged.len(),
        missing = report.warnings.len(),
        "boot loaders in place"
    );
    let tftp_metrics = TftpMetrics::register(registry);
    let http_metrics = HttpMetrics::register(registry);
    let mut plane = DataPlane {
        tftp: None,
        http: None,
    };
    if config.file.tftp.enabled {
        let settings = &config.file.tftp;
        let confinement =
            Confinement::new(&config.tftp_root, std::slice::from_ref(&config.cache_dir))?;
        let service = TftpService::bind(settings, confinement, tftp_metrics)?;
        let (token, stop_all) = (shutdown.child_token(), shutdown.clone());
        plane.tftp = Some(tokio::spawn(async move {
            let result = service.run(token).await;
            stop_service_on_error("tftp", &result, &stop_all);
            result
        }));
    }
    if config.file.http.enabled {
        let settings = &config.file.http;
        let listener = boot_http::bind(settings).await?;
        let confinement =
            Confinement::new(&config.http_root, std::slice::from_ref(&config.cache_dir))?;
        let router = boot_http::router(confinement, settings, http_metrics);
        let (token, stop_all) = (shutdown.child_token(), shutdown.clone());
        plane.http = Some(tokio::spawn(async move {
            let result = boot_http::serve(listener, router, token).await;
            stop_service_on_error("boot http", &result, &stop_all);
            result
        }));
    }
    Ok(plane)
}

/// A data-plane server that dies takes the service down: running on without it would be a
/// silent outage for every node that boots.
fn stop_service_on_error<E: std::fmt::Display>(
    what: &str,
    result: &Result<(), E>,
    shutdown: &CancellationToken,
) {
    if let Err(e) = result {
        tracing::error!(error = %e, "{what} server failed, stopping the service");
        shutdown.cancel();
    }
}

impl DataPlane {
    /// Waits for both servers after the shutdown token fired.
    async fn join(self) {
        // Failures were logged when they happened (stop_service_on_error).
        if let Some(t) = self.tftp {
            let _ = t.await;
        }
        if let Some(h) = self.http {
            let _ = h.await;
        }
    }
}

/// Binds a TCP listener, explaining the usual failures.
pub async fn bind_tcp(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServiceError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| ServiceError::Bind {
            what,
            addr,
            hint: bind_hint(&e, addr),
            source: e,
        })
}

/// A hint for the operator when binding fails.
pub fn bind_hint(e: &std::io::Error, addr: SocketAddr) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied if addr.port() < 1024 => {
            " (ports below 1024 need root or CAP_NET_BIND_SERVICE; run as root, grant the capability, or pick another port)"
        }
        std::io::ErrorKind::AddrInUse => {
            " (another process, e.g. tftpd-hpa or nginx, already listens there; stop it or pick another address)"
        }
        std::io::ErrorKind::AddrNotAvailable => " (this host has no such address)",
        _ => "",
    }
}

/// Holds `<data_dir>/ironboot.lock` for the life of the process so two services never share
/// one database and set of roots.
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    pub fn acquire(data_dir: &Path) -> Result<DataDirLock, ServiceError> {
        let path = data_dir.join("ironboot.lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| ServiceError::Lock {
                path: path.clone(),
                source: e,
            })?;
        // SAFETY: flock on a file descriptor we own; no memory is shared with the kernel.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            return Err(if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                ServiceError::Locked(data_dir.to_path_buf())
            } else {
                ServiceError::Lock { path, source: err }
            });
        }
        Ok(DataDirLock { _file: file })
    }
}

fn ensure_dirs(config: &Config) -> Result<(), ServiceError> {
    for dir in [
        &config.data_dir,
        &config.tftp_root,
        &config.http_root,
        &config.cache_dir,
    ] {
        crate::fsutil::ensure_dir(dir).map_err(|e| ServiceError::Dir {
            path: dir.clone(),
            source: e,
        })?;
    }
    Ok(())
}

/// Runs the service until `shutdown` fires (or a listener fails).
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ServiceError> {
    ensure_dirs(&config)?;
    let _lock = DataDirLock::acquire(&config.data_dir)?;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&config.database_path).await?);
    let mut registry = Registry::default();
    let conductor_metrics = ConductorMetrics::register(&mut registry);
    let api_metrics = api::metrics::ApiMetrics::register(&mut registry);
    let cache = Arc::new(crate::images::ImageCache::open(
        config.file.image_cache.clone(),
        &config.cache_dir,
        &[config.tftp_root.clone(), config.http_root.clone()],
        &mut registry,
    )?);
    let media = Arc::new(
        crate::media::MediaBuilder::new(config.file.media.clone())?.with_metrics(Arc::new(
            crate::media::MediaMetrics::register(&mut registry),
        )),
    );
    let renderer = Arc::new(Renderer::new(&config.file.pxe)?);
    let layout = Layout::new(&config.tftp_root, &config.http_root);
    let mut interfaces = Interfaces::with_fakes();
    if config.file.conductor.enable_script_power {
        tracing::warn!(
            "the script power interface is enabled: node driver_info can run commands on this host"
        );
        interfaces.add_power(Arc::new(crate::bmc::script::ScriptPower));
    }
    add_netboot_interfaces(
        &mut interfaces,
        &config,
        &renderer,
        &layout,
        &cache,
        &mut registry,
    )?;
    crate::conductor::agent_deploy::register(
        &mut interfaces,
        crate::conductor::agent_deploy::AgentDeployConfig {
            settings: config.file.agent.clone(),
            api_url: config.api_public_url.clone(),
            http_url: config.http_url.clone(),
            http_root: config.http_root.clone(),
            cache: cache.clone(),
            media: media.clone(),
        },
        crate::agent::AgentMetrics::register(&mut registry),
    );

    let auth = match config.file.api.auth_strategy {
        AuthStrategy::Noauth => None,
        AuthStrategy::HttpBasic => {
            // Invariant: Config::resolve refuses http_basic without a user file.
            let path = config
                .file
                .api
                .http_basic_auth_user_file
                .clone()
                .unwrap_or_default();
            Some(Arc::new(api::auth::Htpasswd::load(&path)?))
        }
    };

    let api_listener = bind_tcp("the API", config.file.api.listen).await?;
    let data_plane = start_data_plane(&config, &renderer, layout, &mut registry, &shutdown).await?;
    let conductor_cancel = shutdown.child_token();
    let conductor = Conductor::new(
        store.clone(),
        config.host.clone(),
        config.file.conductor.clone(),
        interfaces,
        conductor_metrics,
        config.api_public_url.clone(),
        config.file.agent.clone(),
        conductor_cancel,
    );
    conductor.start().await?;
    spawn_cache_clean_up(
        &conductor,
        cache.clone(),
        config.file.conductor.cache_clean_up_interval,
    );

    let state = AppState {
        conductor: conductor.clone(),
        store: store.clone(),
        base_url: Arc::from(config.api_public_url.as_str()),
        registry: Arc::new(registry),
        max_limit: api::MAX_LIMIT,
        ramdisk: Arc::new(api::ramdisk::RamdiskConfig {
            heartbeat_timeout: config.file.api.ramdisk_heartbeat_timeout,
            md5_checksum_enable: config.file.agent.md5_checksum_enable,
            permitted_image_formats: config.file.agent.permitted_image_formats.clone(),
            enable_bios_bootloader_install: config.file.agent.enable_bios_bootloader_install,
        }),
    };
    let app = api::service(
        state,
        api::ApiOptions {
            auth,
            max_body_bytes: config.file.api.max_body_bytes,
            metrics: api_metrics,
        },
    );
    tracing::info!(
        api = %config.file.api.listen,
        data_dir = %config.data_dir.display(),
        host = %config.host,
        "ironboot is serving"
    );
    let api_shutdown = shutdown.clone();
    let app = axum::ServiceExt::<axum::extract::Request>::into_make_service(app);
    let served = axum::serve(api_listener, app)
        .with_graceful_shutdown(async move { api_shutdown.cancelled().await })
        .await;
    shutdown.cancel();
    conductor.shutdown(SHUTDOWN_GRACE).await;
    data_plane.join().await;
    tracing::info!("ironboot stopped");
    served.map_err(|e| ServiceError::Serve {
        what: "API",
        source: e,
    })
}

/// Enables the `pxe` and `ipxe` boot interfaces on the service's renderer, roots and cache.
fn add_netboot_interfaces(
    interfaces: &mut Interfaces,
    config: &Config,
    renderer: &Arc<Renderer>,
    layout: &Layout,
    cache: &Arc<crate::images::ImageCache>,
    registry: &mut Registry,
) -> Result<(), ServiceError> {
    use crate::boot::{
        BootMetrics, BootMode, ipxe::IpxeBoot, netboot::NetBootConfig, pxe::PxeBoot,
    };
    let netboot = NetBootConfig {
        settings: config.file.pxe.clone(),
        renderer: renderer.clone(),
        layout: layout.clone(),
        cache: cache.clone(),
        http_url: config.http_url.clone(),
        default_boot_mode: match config.file.agent.default_boot_mode {
            crate::config::BootMode::Bios => BootMode::Bios,
            crate::config::BootMode::Uefi => BootMode::Uefi,
        },
    };
    let metrics = BootMetrics::register(registry);
    interfaces.add_boot(Arc::new(PxeBoot::new(netboot.clone(), metrics.clone())?));
    interfaces.add_boot(Arc::new(IpxeBoot::new(netboot, metrics)?));
    Ok(())
}

/// Evicts unused cache entries periodically (TTL, then oldest first down to the size cap).
fn spawn_cache_clean_up(
    conductor: &Arc<Conductor>,
    cache: Arc<crate::images::ImageCache>,
    interval: u64,
) {
    if interval == 0 {
        return;
    }
    conductor.spawn_periodic(
        "image_cache_clean_up",
        Duration::from_secs(interval),
        move |_| {
            let cache = cache.clone();
            async move {
                match cache.clean_up(None).await {
                    Ok(report) if !report.removed.is_empty() => {
                        tracing::info!(
                            removed = report.removed.len(),
                            "image cache clean-up evicted unused images"
                        )
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "image cache clean-up failed"),
                }
            }
        },
    );
}

/// Cancels `token` on SIGTERM or SIGINT.
pub fn cancel_on_signals(token: CancellationToken) {
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = term => tracing::info!("SIGTERM received, shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
        }
        token.cancel();
    });
}
