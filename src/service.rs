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
use crate::config::{Auth, Config, Database};
use crate::metrics::Registry;
use crate::serve::confine::Confinement;
use crate::serve::http::{self as boot_http, HttpMetrics};
use crate::serve::limits::FdBudget;
use crate::serve::listener::{Listener, ListenerMetrics, Refusals};
use crate::serve::tftp::{TftpMetrics, TftpService};
use crate::store::postgres::PostgresStore;
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
    #[error("another ironboot is already using {what} {} (lock file {} is held)", path.display(), lock.display())]
    Locked {
        what: &'static str,
        path: PathBuf,
        lock: PathBuf,
    },
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
    #[error("ipmi: {0}")]
    Ipmi(#[from] crate::bmc::ipmi::IpmiError),
    #[error(
        "not enough free space to start: {} has {} free, at least {} is needed; free space \
         there (or point data_dir elsewhere) and start again",
        path.display(), crate::fsutil::human_bytes(*free), crate::fsutil::human_bytes(*needed)
    )]
    NoSpace {
        path: PathBuf,
        free: u64,
        needed: u64,
    },
    #[error("cannot write into {path}: {source}")]
    NotWritable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot remove the leftovers of an earlier run under {path}: {source}")]
    Leftovers {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the ready file {path}: {source}")]
    ReadyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("virtual media publishing: {0}")]
    Publish(#[from] crate::publish::PublishError),
    #[error("redfish: {0}")]
    Redfish(#[source] Box<crate::bmc::redfish::RedfishError>),
}

/// The data plane's tasks, stopped with the service's token.
struct DataPlane {
    tftp: Option<tokio::task::JoinHandle<Result<(), crate::serve::tftp::TftpError>>>,
    http: Option<tokio::task::JoinHandle<Result<(), crate::serve::http::HttpError>>>,
    tftp_addr: Option<SocketAddr>,
    http_addr: Option<SocketAddr>,
}

/// Prepares the boot roots (boot.ipxe, the common GRUB config, boot loaders) and starts the
/// TFTP and HTTP servers on the service's shutdown token. Binding happens here, so a port
/// problem stops the start-up.
async fn start_data_plane(
    config: &Config,
    parts: &Parts,
    budget: &FdBudget,
    registry: &mut Registry,
    listeners: &ListenerMetrics,
    shutdown: &CancellationToken,
) -> Result<DataPlane, ServiceError> {
    let boot_ipxe = parts.renderer.render_boot_ipxe()?;
    let grub_common = parts.renderer.render_grub_common()?;
    let loaders = config.pxe.loader_file_paths.clone();
    let layout = parts.layout.clone();
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
        tftp_addr: None,
        http_addr: None,
    };
    if config.tftp.enabled {
        let settings = crate::serve::tftp::TftpSettings {
            max_transfers: budget.tftp_transfers,
            ..config.tftp.clone()
        };
        let confinement =
            Confinement::new(&config.tftp_root, std::slice::from_ref(&config.cache_dir))?;
        let service = TftpService::bind(&settings, confinement, tftp_metrics)?;
        plane.tftp_addr = Some(service.local_addr());
        let (token, stop_all) = (shutdown.child_token(), shutdown.clone());
        plane.tftp = Some(tokio::spawn(async move {
            let result = service.run(token).await;
            stop_service_on_error("tftp", &result, &stop_all);
            result
        }));
    }
    if config.http.enabled {
        let settings = &config.http;
        let listener = boot_http::bind(settings).await?;
        plane.http_addr = listener.local_addr().ok();
        let confinement =
            Confinement::new(&config.http_root, std::slice::from_ref(&config.cache_dir))?;
        let router = boot_http::router(confinement, settings, http_metrics);
        let limits = settings.limits(budget.http_connections);
        let conn_metrics = listeners.for_listener("boot_http");
        let zero_copy = settings.zero_copy;
        let (token, stop_all) = (shutdown.child_token(), shutdown.clone());
        plane.http = Some(tokio::spawn(async move {
            let result =
                boot_http::serve(listener, router, limits, conn_metrics, zero_copy, token).await;
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
        Self::acquire_file(data_dir.join("ironboot.lock"), "data directory", data_dir)
    }

    /// The lock of a SQLite database, `<database>.lock`, which may lie outside the data
    /// directory (`[database] url`). SQLite serves one ironboot at a time: two services with
    /// their own data directories (their own roots, another host name) may use one database
    /// file in turn — a conductor taking over from a stopped one — never at once.
    pub fn acquire_database(database: &Path) -> Result<DataDirLock, ServiceError> {
        let mut lock = database.as_os_str().to_owned();
        lock.push(".lock");
        Self::acquire_file(PathBuf::from(lock), "database", database)
    }

    fn acquire_file(
        path: PathBuf,
        what: &'static str,
        locked: &Path,
    ) -> Result<DataDirLock, ServiceError> {
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
                ServiceError::Locked {
                    what,
                    path: locked.to_path_buf(),
                    lock: path,
                }
            } else {
                ServiceError::Lock { path, source: err }
            });
        }
        Ok(DataDirLock { _file: file })
    }
}

/// Everything done before the database is opened or a port bound: the directories, the
/// locks (data directory and database), the leftovers of a killed run, and enough space to
/// work in. Returns the locks to hold.
fn claim_data_dir(config: &Config) -> Result<(DataDirLock, Option<DataDirLock>), ServiceError> {
    ensure_dirs(config)?;
    let dir = DataDirLock::acquire(&config.data_dir)?;
    // A shared database is shared on purpose; the data directory lock still keeps two
    // services off one set of served roots.
    let db = match &config.database {
        Database::Sqlite { path } => Some(DataDirLock::acquire_database(path)?),
        Database::Postgres { .. } => None,
    };
    remove_leftovers(config)?;
    check_storage(config)?;
    Ok((dir, db))
}

/// Temporary files a killed run left in the served roots (a config or a link caught between
/// write and rename): never served, and removed before anything is served again. The image
/// cache cleans its own directory when it opens.
fn remove_leftovers(config: &Config) -> Result<(), ServiceError> {
    for root in [&config.tftp_root, &config.http_root] {
        let removed =
            crate::fsutil::remove_temp_files(root).map_err(|source| ServiceError::Leftovers {
                path: root.clone(),
                source,
            })?;
        if !removed.is_empty() {
            tracing::info!(root = %root.display(), removed = ?removed,
                "removed temporary files an interrupted run left behind");
        }
    }
    Ok(())
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

/// Where the listeners ended up (port 0 in the config means "any free port"). Written as
/// JSON to `--ready-file` once everything is bound, so callers never have to pick a free port
/// and hope it stays free.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BoundAddresses {
    pub api: SocketAddr,
    pub http: Option<SocketAddr>,
    pub tftp: Option<SocketAddr>,
}

/// The long-lived parts every interface and server share.
struct Parts {
    cache: Arc<crate::images::ImageCache>,
    media: Arc<crate::media::MediaBuilder>,
    renderer: Arc<Renderer>,
    layout: Layout,
    /// The Redfish client of every Redfish interface (sessions are logged out at shutdown).
    redfish: crate::bmc::redfish::Redfish,
}

impl Parts {
    fn build(config: &Config, registry: &mut Registry) -> Result<Parts, ServiceError> {
        let cache = Arc::new(crate::images::ImageCache::open(
            config.image_cache.clone(),
            &config.cache_dir,
            &[config.tftp_root.clone(), config.http_root.clone()],
            registry,
        )?);
        let media = Arc::new(
            crate::media::MediaBuilder::new(config.media.clone())?
                .with_metrics(Arc::new(crate::media::MediaMetrics::register(registry))),
        );
        let redfish = crate::bmc::redfish::Redfish::new(
            config.redfish.clone(),
            Some(crate::bmc::redfish::RedfishMetrics::register(registry)),
        )
        .map_err(|e| ServiceError::Redfish(Box::new(e)))?;
        Ok(Parts {
            cache,
            media,
            renderer: Arc::new(Renderer::new(&config.pxe)?),
            layout: Layout::new(&config.tftp_root, &config.http_root),
            redfish,
        })
    }
}

/// Runs the service until `shutdown` fires (or a listener fails). With `ready_file`, the bound
/// addresses are written there (atomically) once every listener is up.
pub async fn run(
    mut config: Config,
    shutdown: CancellationToken,
    ready_file: Option<&Path>,
) -> Result<(), ServiceError> {
    let budget = descriptor_budget(&config);
    let _locks = claim_data_dir(&config)?;
    let store = open_store(&config).await?;
    let mut registry = Registry::default();
    let listeners = ListenerMetrics::register(&mut registry);
    let parts = Parts::build(&config, &mut registry)?;
    let conductor_metrics = ConductorMetrics::register(&mut registry);
    let api_metrics = api::metrics::ApiMetrics::register(&mut registry);
    let auth = basic_auth(&config, &api_metrics)?;

    let api_listener = bind_tcp("the API", config.api.listen).await?;
    let data_plane = start_data_plane(
        &config,
        &parts,
        &budget,
        &mut registry,
        &listeners,
        &shutdown,
    )
    .await?;
    let api_addr = api_listener
        .local_addr()
        .map_err(|source| ServiceError::Serve {
            what: "API",
            source,
        })?;
    config.set_bound_ports(api_addr, data_plane.http_addr);
    let interfaces = interfaces(&config, &parts, &mut registry)?;
    let conductor = Conductor::new(
        store.clone(),
        config.host.clone(),
        config.conductor.clone(),
        interfaces,
        conductor_metrics,
        config.api_public_url.clone(),
        config.agent.clone(),
        shutdown.child_token(),
    );
    conductor.start().await?;
    spawn_cache_clean_up(
        &conductor,
        parts.cache.clone(),
        config.conductor.cache_clean_up_interval,
    );
    let app = api_app(
        &config,
        conductor.clone(),
        store,
        registry,
        auth,
        api_metrics,
    )?;
    let bound = BoundAddresses {
        api: api_addr,
        http: data_plane.http_addr,
        tftp: data_plane.tftp_addr,
    };
    if let Some(path) = ready_file {
        write_ready_file(path, &bound)?;
    }
    tracing::info!(api = %bound.api, http = ?bound.http, tftp = ?bound.tftp,
        data_dir = %config.data_dir.display(), host = %config.host, "ironboot is serving");
    let api = Listener {
        name: "api",
        tcp: api_listener,
        limits: config.api.limits(budget.api_connections),
        refusals: api_refusals(),
        metrics: listeners.for_listener("api"),
        zero_copy: false,
    };
    let served = crate::serve::listener::serve(api, app, shutdown.clone()).await;
    shutdown.cancel();
    conductor.shutdown(SHUTDOWN_GRACE).await;
    parts.redfish.close().await;
    data_plane.join().await;
    tracing::info!("ironboot stopped");
    served.map_err(|e| ServiceError::Serve {
        what: "API",
        source: e,
    })
}

/// Raises the open-file limit and fits the listeners' caps into it (see
/// [`crate::serve::limits`]): a flood of one listener then cannot take the descriptors the
/// others, the database and the conductor need.
fn descriptor_budget(config: &Config) -> FdBudget {
    let limit = match crate::serve::limits::raise_nofile() {
        Ok(l) => l.soft,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit; assuming 1024");
            1024
        }
    };
    let http = if config.http.enabled {
        config.http.max_connections
    } else {
        0
    };
    let tftp = if config.tftp.enabled {
        config.tftp.max_transfers
    } else {
        0
    };
    let budget = FdBudget::plan(limit, config.api.max_connections, http, tftp);
    if budget.lowered {
        tracing::warn!(
            open_file_limit = limit,
            api_connections = budget.api_connections,
            http_connections = budget.http_connections,
            tftp_transfers = budget.tftp_transfers,
            "the open-file limit cannot hold the configured connection caps; lowered them \
             (raise LimitNOFILE to serve more at once)"
        );
    }
    budget
}

/// `http_basic`'s users, cache and failure counter, when configured.
fn basic_auth(
    config: &Config,
    metrics: &api::metrics::ApiMetrics,
) -> Result<Option<Arc<api::auth::BasicAuth>>, ServiceError> {
    let Auth::HttpBasic { user_file } = &config.auth else {
        return Ok(None);
    };
    let users = Arc::new(api::auth::Htpasswd::load(user_file)?);
    let auth =
        api::auth::BasicAuth::new(users, config.api.auth_cache_ttl, metrics.auth_failures())?;
    Ok(Some(Arc::new(auth)))
}

/// The API's refusals (503 past its cap, unparsable requests) in Ironic's error format.
fn api_refusals() -> Refusals {
    Refusals {
        content_type: "application/json",
        body: |status, message| api::error::error_body(status, message).to_string(),
    }
}

async fn open_store(config: &Config) -> Result<Arc<dyn Store>, ServiceError> {
    match &config.database {
        Database::Sqlite { path } => {
            let store = SqliteStore::open(path).await.map_err(|e| e.at(path))?;
            Ok(Arc::new(crate::store::Located::new(store, path)))
        }
        Database::Postgres { url } => Ok(Arc::new(PostgresStore::open(url).await?)),
    }
}

/// Refuses to start, before anything is bound, when a directory the service writes into has
/// too little space or cannot be written: better a clear refusal naming the path than a
/// service that answers and then fails every write.
fn check_storage(config: &Config) -> Result<(), ServiceError> {
    let mut dirs = vec![
        config.data_dir.clone(),
        config.tftp_root.clone(),
        config.http_root.clone(),
        config.cache_dir.clone(),
    ];
    if let Database::Sqlite { path } = &config.database
        && let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
    {
        dirs.push(parent.to_path_buf());
    }
    dirs.dedup();
    for dir in dirs {
        let free = crate::fsutil::free_bytes(&dir).map_err(|source| ServiceError::NotWritable {
            path: dir.clone(),
            source,
        })?;
        if free < crate::store::DB_MIN_FREE {
            return Err(ServiceError::NoSpace {
                path: dir,
                free,
                needed: crate::store::DB_MIN_FREE,
            });
        }
        crate::fsutil::write_probe(&dir).map_err(|source| {
            if source.raw_os_error() == Some(libc::ENOSPC) {
                ServiceError::NoSpace {
                    path: dir.clone(),
                    free,
                    needed: crate::store::DB_MIN_FREE,
                }
            } else {
                ServiceError::NotWritable {
                    path: dir.clone(),
                    source,
                }
            }
        })?;
    }
    Ok(())
}

/// The API with its state: the management and ramdisk endpoints, `/metrics`, `/healthz`.
fn api_app(
    config: &Config,
    conductor: Arc<Conductor>,
    store: Arc<dyn Store>,
    registry: Registry,
    auth: Option<Arc<api::auth::BasicAuth>>,
    metrics: api::metrics::ApiMetrics,
) -> Result<tower_http::normalize_path::NormalizePath<axum::Router>, ServiceError> {
    // Conductors talk plain or TLS HTTP to each other's API (api_url as each registered it).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let forwarder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| ServiceError::Serve {
            what: "conductor-to-conductor HTTP client",
            source: std::io::Error::other(e),
        })?;
    let state = AppState {
        forwarder,
        conductor,
        store,
        base_url: Arc::from(config.api_public_url.as_str()),
        links: Arc::new(if config.api_public_url_configured() {
            api::links::LinkPolicy::Fixed(config.api_public_url.clone())
        } else {
            api::links::LinkPolicy::FromRequest {
                fallback: config.api_public_url.clone(),
                trusted_proxies: Arc::from(config.api.trusted_proxies.clone()),
            }
        }),
        registry: Arc::new(registry),
        max_limit: api::MAX_LIMIT,
        ramdisk: Arc::new(api::ramdisk::RamdiskConfig {
            heartbeat_timeout: config.api.ramdisk_heartbeat_timeout,
            md5_checksum_enable: config.agent.md5_checksum_enable,
            permitted_image_formats: config.agent.permitted_image_formats.clone(),
            enable_bios_bootloader_install: config.agent.enable_bios_bootloader_install,
            refused: metrics.ramdisk_refused(),
            discovery_driver: config.auto_discovery.driver_if_enabled(),
        }),
    };
    Ok(api::service(
        state,
        api::ApiOptions {
            auth,
            max_body_bytes: config.api.max_body_bytes,
            metrics,
        },
    ))
}

fn write_ready_file(path: &Path, bound: &BoundAddresses) -> Result<(), ServiceError> {
    let text = serde_json::to_vec(bound).unwrap_or_default();
    crate::fsutil::write_atomic(path, &text).map_err(|source| ServiceError::ReadyFile {
        path: path.to_path_buf(),
        source,
    })
}

/// The interfaces this conductor enables: the fakes, `script` power when allowed, `ipmitool`
/// power and management, `noop` management, `pxe` and `ipxe` boot, the `redfish` power,
/// management and `redfish-virtual-media` boot interfaces, and the `direct` deploy.
fn interfaces(
    config: &Config,
    parts: &Parts,
    registry: &mut Registry,
) -> Result<Interfaces, ServiceError> {
    use crate::boot::{BootMetrics, ipxe::IpxeBoot, netboot::NetBootConfig, pxe::PxeBoot};
    let mut interfaces = Interfaces::with_fakes();
    if config.conductor.enable_script_power {
        tracing::warn!(
            "the script power interface is enabled: node driver_info can run commands on this host"
        );
        interfaces.add_power(Arc::new(crate::bmc::script::ScriptPower));
    }
    add_ipmi(&mut interfaces, config, registry)?;
    let netboot = NetBootConfig {
        settings: config.pxe.clone(),
        renderer: parts.renderer.clone(),
        layout: parts.layout.clone(),
        cache: parts.cache.clone(),
        http_url: config.http_url.clone(),
        default_boot_mode: config.agent.default_boot_mode,
    };
    let metrics = BootMetrics::register(registry);
    interfaces.add_boot(Arc::new(PxeBoot::new(netboot.clone(), metrics.clone())?));
    interfaces.add_boot(Arc::new(IpxeBoot::new(netboot, metrics.clone())?));
    add_redfish(&mut interfaces, config, parts, registry, metrics)?;
    crate::conductor::agent_deploy::register(
        &mut interfaces,
        crate::conductor::agent_deploy::AgentDeployConfig {
            settings: config.agent.clone(),
            clean_priorities: config.clean_priorities,
            erase_params: config.erase_params,
            api_url: config.api_public_url.clone(),
            http_url: config.http_url.clone(),
            http_root: config.http_root.clone(),
            cache: parts.cache.clone(),
            media: parts.media.clone(),
        },
        crate::agent::AgentMetrics::register(registry),
    );
    Ok(interfaces)
}

/// The `redfish` power and management interfaces and the `redfish-virtual-media` boot
/// interface, which publishes to `[vmedia]` (local media under the HTTP root, reached by BMCs
/// at `[deploy] external_http_url`, else `http_url`).
fn add_redfish(
    interfaces: &mut Interfaces,
    config: &Config,
    parts: &Parts,
    registry: &mut Registry,
    metrics: crate::boot::BootMetrics,
) -> Result<(), ServiceError> {
    use crate::bmc::redfish::{RedfishManagement, RedfishPower};
    use crate::boot::vmedia::{VirtualMediaBoot, VmediaConfig};
    let redfish = parts.redfish.clone();
    interfaces.add_power(Arc::new(RedfishPower::new(redfish.clone())));
    interfaces.add_management(Arc::new(RedfishManagement::new(
        redfish.clone(),
        config.agent.default_boot_mode,
    )));
    let root_url = config
        .external_http_url
        .clone()
        .unwrap_or_else(|| config.http_url.clone());
    let publishers = crate::publish::Publishers::new(
        &config.vmedia,
        &config.http_root,
        &root_url,
        crate::publish::PublishMetrics::register(registry),
    )?;
    let vmedia = VmediaConfig {
        redfish,
        cache: parts.cache.clone(),
        media: parts.media.clone(),
        publishers,
        work_dir: config.data_dir.join("vmedia-work"),
        kernel_append_params: config.redfish.kernel_append_params.clone(),
        default_boot_mode: config.agent.default_boot_mode,
    };
    interfaces.add_boot(Arc::new(VirtualMediaBoot::new(vmedia, metrics)?));
    Ok(())
}

/// The `ipmitool` power and management interfaces, sharing the process's one [`Ipmitool`]
/// (one command at a time per BMC across every node), and `noop` management.
///
/// [`Ipmitool`]: crate::bmc::ipmi::Ipmitool
fn add_ipmi(
    interfaces: &mut Interfaces,
    config: &Config,
    registry: &mut Registry,
) -> Result<(), ServiceError> {
    use crate::bmc::ipmi::{IpmiMetrics, Ipmitool, IpmitoolManagement, IpmitoolPower};
    let metrics = IpmiMetrics::register(registry);
    let ipmitool = Ipmitool::new(config.ipmi.clone(), Some(metrics))?;
    // Not fatal: a conductor without IPMI nodes does not need it.
    if ipmitool.find_program().is_none() {
        tracing::warn!(
            ipmitool = %config.ipmi.ipmitool.display(),
            "ipmitool is not installed (or [ipmi] ipmitool is wrong): every ipmi node will fail its power and boot device calls"
        );
    }
    let boot_mode = config.agent.default_boot_mode;
    interfaces.add_power(Arc::new(IpmitoolPower::new(ipmitool.clone(), boot_mode)));
    interfaces.add_management(Arc::new(IpmitoolManagement::new(ipmitool, boot_mode)));
    interfaces.add_management(Arc::new(crate::bmc::noop::NoopManagement));
    Ok(())
}

/// Evicts unused cache entries periodically (TTL, then oldest first down to the size cap).
fn spawn_cache_clean_up(
    conductor: &Arc<Conductor>,
    cache: Arc<crate::images::ImageCache>,
    interval: Duration,
) {
    if interval.is_zero() {
        return;
    }
    conductor.spawn_periodic("image_cache_clean_up", interval, move |_| {
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
    });
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
