//! Black-box tests of the image cache against a real local HTTP origin, real files, a real
//! tmpfs (disk full), real qemu-img images and the real `ironboot image fetch` process.

use crate::support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use ironboot::images::{
    CacheMetrics, CacheSettings, Clock, ImageCache, ImageError, ImageFormat, ImageKind,
    ImageRequest, ServerSettings,
};
use sha2::{Digest, Sha256};
use support::origin::{Entry, Origin};

const DAY: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug)]
struct TestClock(Mutex<SystemTime>);

impl TestClock {
    fn new() -> Arc<Self> {
        Arc::new(Self(Mutex::new(SystemTime::now())))
    }
    fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for TestClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap()
    }
}

fn settings() -> CacheSettings {
    CacheSettings {
        retry_backoff_ms: 20,
        read_timeout_secs: 5,
        ..CacheSettings::default()
    }
}

fn open(dir: &Path, settings: CacheSettings) -> ImageCache {
    open_with(dir, settings, Arc::new(ironboot::images::SystemClock), &[])
}

fn open_with(
    dir: &Path,
    settings: CacheSettings,
    clock: Arc<dyn Clock>,
    roots: &[PathBuf],
) -> ImageCache {
    ImageCache::open_with_clock(settings, dir, roots, CacheMetrics::default(), clock).unwrap()
}

fn pattern(len: usize, seed: u64) -> Bytes {
    let f = tempfile::NamedTempFile::new().unwrap();
    support::write_pattern_file(f.path(), len, seed);
    Bytes::from(std::fs::read(f.path()).unwrap())
}

fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn masters(dir: &Path) -> Vec<String> {
    names(dir)
        .into_iter()
        .filter(|n| !n.ends_with(".meta"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_concurrent_requests_make_one_origin_get() {
    let origin = Origin::start().await;
    let data = pattern(8 << 20, 1);
    origin.put(
        "/img/disk.raw",
        Entry {
            throttle: Some((256 * 1024, Duration::from_millis(5))),
            ..Entry::new(data.clone())
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let cache = open(&dir.path().join("cache"), settings());
    let href = origin.url("/img/disk.raw");
    let checksum = format!("sha256:{}", sha256(&data));
    let mut tasks = Vec::new();
    for i in 0..100 {
        let cache = cache.clone();
        let req = ImageRequest {
            checksum: Some(checksum.clone()),
            ..ImageRequest::new(&href)
        };
        let dest = dir.path().join(format!("nodes/{i}/disk"));
        tasks.push(tokio::spawn(async move {
            let image = cache.fetch(&req).await?;
            cache.place(&image, &dest).await?;
            Ok::<_, ImageError>(image)
        }));
    }
    let mut paths = Vec::new();
    for t in tasks {
        paths.push(t.await.unwrap().unwrap().path);
    }
    assert_eq!(
        origin.gets("/img/disk.raw"),
        1,
        "one origin GET for 100 requests"
    );
    paths.dedup();
    assert_eq!(paths.len(), 1);
    assert_eq!(std::fs::metadata(&paths[0]).unwrap().nlink(), 101);
    assert_eq!(
        std::fs::read(dir.path().join("nodes/57/disk")).unwrap(),
        data
    );
    assert_eq!(cache.metrics().misses.get(), 1);
    assert_eq!(cache.metrics().hits.get(), 99);
    assert_eq!(cache.metrics().downloaded_bytes.get(), 8 << 20);
    assert_eq!(cache.metrics().downloads_in_flight.get(), 0);
}

#[tokio::test]
async fn checksum_mismatch_names_both_values_and_leaves_nothing() {
    let origin = Origin::start().await;
    let real = pattern(1 << 20, 2);
    let mut lie = real.to_vec();
    lie[1000] ^= 0xff;
    origin.put(
        "/disk.raw",
        Entry {
            lie_with: Some(Bytes::from(lie.clone())),
            last_modified: Some(SystemTime::now() - DAY),
            ..Entry::new(real.clone())
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), settings());
    let req = ImageRequest {
        checksum: Some(sha256(&real)),
        ..ImageRequest::new(origin.url("/disk.raw"))
    };
    let err = cache.fetch(&req).await.unwrap_err().to_string();
    assert!(err.contains(&sha256(&real)), "{err}");
    assert!(err.contains(&sha256(&lie)), "{err}");
    assert!(
        names(dir.path()).is_empty(),
        "left behind: {:?}",
        names(dir.path())
    );

    // md5 given as a bare value, and a checksums file naming the image, both work.
    origin.update("/disk.raw", |e| e.lie_with = None);
    let md5 = hex::encode(md5::Md5::digest(&real));
    let image = cache
        .fetch(&ImageRequest {
            checksum: Some(md5.clone()),
            ..ImageRequest::new(origin.url("/disk.raw"))
        })
        .await
        .unwrap();
    assert_eq!(image.sha256(), sha256(&real));
    origin.put(
        "/SHA256SUMS",
        Entry::new(format!(
            "{}  other.raw\n{} *disk.raw\n",
            "0".repeat(64),
            sha256(&real)
        )),
    );
    let again = cache
        .fetch(&ImageRequest {
            checksum: Some(origin.url("/SHA256SUMS")),
            ..ImageRequest::new(origin.url("/disk.raw"))
        })
        .await
        .unwrap();
    assert_eq!(again.path, image.path);
    // A checksum that disagrees with the cached master forces a new download, which fails
    // (the origin still serves the same bytes) and leaves no master behind.
    let wrong = cache
        .fetch(&ImageRequest {
            os_hash_algo: Some("sha512".into()),
            os_hash_value: Some("ab".repeat(64)),
            ..ImageRequest::new(origin.url("/disk.raw"))
        })
        .await
        .unwrap_err();
    assert!(
        matches!(wrong.root(), ImageError::ChecksumMismatch { algo, .. } if algo == "sha512"),
        "{wrong}"
    );
    // The right sha512 is a hit: computed over the master once, then kept in its metadata.
    let sha512 = hex::encode(sha2::Sha512::digest(&real));
    let hit = cache
        .fetch(&ImageRequest {
            checksum: Some(format!("sha512:{sha512}")),
            ..ImageRequest::new(origin.url("/disk.raw"))
        })
        .await
        .unwrap();
    assert!(!hit.downloaded);
    let meta = std::fs::read_to_string(format!("{}.meta", hit.path.display())).unwrap();
    assert!(meta.contains(&sha512), "{meta}");
}

#[tokio::test]
async fn cut_connection_resumes_or_restarts() {
    let origin = Origin::start().await;
    let data = pattern(4 << 20, 3);
    let lm = SystemTime::now() - DAY;
    origin.put(
        "/resume.raw",
        Entry {
            cut_next: 1,
            last_modified: Some(lm),
            ..Entry::new(data.clone())
        },
    );
    origin.put(
        "/restart.raw",
        Entry {
            cut_next: 2,
            ranges: false,
            ..Entry::new(data.clone())
        },
    );
    origin.put(
        "/always-cut.raw",
        Entry {
            cut_next: 100,
            ..Entry::new(data.clone())
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), settings());
    let sum = format!("sha256:{}", sha256(&data));

    let img = cache
        .fetch(&ImageRequest {
            checksum: Some(sum.clone()),
            ..ImageRequest::new(origin.url("/resume.raw"))
        })
        .await
        .unwrap();
    assert_eq!(std::fs::read(&img.path).unwrap(), data);
    let seen = origin.seen("/resume.raw");
    assert_eq!(seen.len(), 2);
    // Resumed where the client's data stopped (at most the cut point: hyper may drop what it
    // had buffered when the connection broke).
    let from: usize = seen[1].range.as_deref().unwrap()["bytes=".len()..]
        .trim_end_matches('-')
        .parse()
        .unwrap();
    assert!(from > 0 && from <= data.len() / 2, "{seen:?}");
    assert_eq!(seen[1].status, 206);

    let img = cache
        .fetch(&ImageRequest {
            checksum: Some(sum.clone()),
            ..ImageRequest::new(origin.url("/restart.raw"))
        })
        .await
        .unwrap();
    assert_eq!(std::fs::read(&img.path).unwrap(), data);
    assert_eq!(origin.gets("/restart.raw"), 3);

    let err = cache
        .fetch(&ImageRequest::new(origin.url("/always-cut.raw")))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("after 4 attempt(s)"), "{err}");
    assert_eq!(origin.gets("/always-cut.raw"), 4);
    assert_eq!(masters(dir.path()).len(), 2, "{:?}", names(dir.path()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_download_leaves_no_partial_file_and_restart_completes() {
    let origin = Origin::start().await;
    let data = pattern(6 << 20, 4);
    origin.put(
        "/big.raw",
        Entry {
            throttle: Some((64 * 1024, Duration::from_millis(20))),
            last_modified: Some(SystemTime::now() - DAY),
            ..Entry::new(data.clone())
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let cache_dir = dir.path().join("cache");
    let dest = dir.path().join("httpboot/agent_images/node/disk");
    let fetch = || {
        let mut c = Command::new(support::ironboot_bin());
        c.arg("image")
            .arg("--data-dir")
            .arg(dir.path())
            .env("IRONBOOT_IMAGE_CACHE__RETRY_BACKOFF_MS", "20")
            .env_remove("IRONBOOT_CONFIG")
            .args(["fetch", &origin.url("/big.raw"), "--checksum"])
            .arg(sha256(&data))
            .arg("--dest")
            .arg(&dest)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    };
    let mut child = fetch().spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let master_name = loop {
        assert!(Instant::now() < deadline, "no download started");
        assert!(
            !dest.exists(),
            "destination appeared before the download finished"
        );
        let present = if cache_dir.exists() {
            names(&cache_dir)
        } else {
            Vec::new()
        };
        for n in &present {
            assert!(
                n.starts_with(".ironboot-tmp-"),
                "{n} visible before the download finished"
            );
        }
        if let Some(tmp) = present.into_iter().next() {
            let len = std::fs::metadata(cache_dir.join(&tmp))
                .map(|m| m.len())
                .unwrap_or(0);
            if len > (1 << 20) {
                break tmp;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!dest.exists());
    assert_eq!(
        names(&cache_dir),
        vec![master_name.clone()],
        "only the temporary file remains"
    );

    origin.update("/big.raw", |e| e.throttle = None);
    let out = fetch().output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("from     download") && stdout.contains("6.0 MiB"),
        "{stdout}"
    );
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    let left = names(&cache_dir);
    assert_eq!(left.len(), 2, "master and its metadata only: {left:?}");
    assert!(!left.contains(&master_name));
    assert_eq!(origin.gets("/big.raw"), 2);

    // Listing and a second fetch (served from the cache after a conditional GET) work too.
    let out = fetch().output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("from     cache"));
    let list = Command::new(support::ironboot_bin())
        .arg("image")
        .arg("--data-dir")
        .arg(dir.path())
        .arg("list")
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.contains("/big.raw") && list.contains("1 image(s), 6.0 MiB"),
        "{list}"
    );
}

#[tokio::test]
async fn eviction_spares_linked_masters_and_files_outside_the_cache() {
    let origin = Origin::start().await;
    for (i, p) in ["/a.raw", "/b.raw", "/c.raw"].iter().enumerate() {
        origin.put(p, Entry::new(pattern(600 * 1024, 10 + i as u64)));
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tftpboot");
    let cache_dir = dir.path().join("cache");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("undionly.kpxe"), b"boot loader").unwrap();
    std::fs::create_dir_all(&cache_dir).unwrap();
    std::fs::write(cache_dir.join("stray.iso"), b"not the cache's").unwrap();

    // The cache refuses a directory that is, contains or lies in a served root.
    for bad in [root.clone(), root.join("cache"), dir.path().to_path_buf()] {
        let e = ImageCache::open_with_clock(
            settings(),
            &bad,
            std::slice::from_ref(&root),
            CacheMetrics::default(),
            TestClock::new(),
        )
        .unwrap_err();
        assert!(matches!(e, ImageError::SharedDirectory { .. }), "{e}");
    }
    assert!(
        !root.join("cache").exists(),
        "a refused cache directory is not created"
    );

    let clock = TestClock::new();
    let cache = open_with(
        &cache_dir,
        CacheSettings {
            size_cap_mib: 1,
            ..settings()
        },
        clock.clone(),
        std::slice::from_ref(&root),
    );
    let a = cache
        .fetch(&ImageRequest::new(origin.url("/a.raw")))
        .await
        .unwrap();
    cache.place(&a, &root.join("node-1/disk")).await.unwrap();
    drop(a);
    let b = cache
        .fetch(&ImageRequest::new(origin.url("/b.raw")))
        .await
        .unwrap();
    let b_path = b.path.clone();
    drop(b);
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Fetching c pushes the cache over 1 MiB: the oldest unused master (b) goes; a is linked.
    let c = cache
        .fetch(&ImageRequest::new(origin.url("/c.raw")))
        .await
        .unwrap();
    assert!(!b_path.exists(), "b should have been evicted");
    assert_eq!(
        masters(&cache_dir).len(),
        3,
        "a, c and stray.iso: {:?}",
        names(&cache_dir)
    );
    // c is held by this request (not yet linked), so even a big reclaim leaves it.
    let r = cache.clean_up(Some(u64::MAX)).await.unwrap();
    assert!(r.removed.is_empty(), "{r:?}");
    assert!(c.path.exists());
    drop(c);
    clock.advance(30 * DAY);
    let r = cache.clean_up(None).await.unwrap();
    assert_eq!(r.removed.len(), 1, "{r:?}");
    assert_eq!(cache.metrics().evictions.get(), 2);
    assert_eq!(
        std::fs::read(root.join("undionly.kpxe")).unwrap(),
        b"boot loader"
    );
    assert_eq!(
        std::fs::read(cache_dir.join("stray.iso")).unwrap(),
        b"not the cache's"
    );
    assert_eq!(
        std::fs::metadata(root.join("node-1/disk")).unwrap().nlink(),
        2
    );
    let left = masters(&cache_dir);
    assert_eq!(left.len(), 2, "{left:?}");
}

#[tokio::test]
async fn ttl_follows_the_clock() {
    let origin = Origin::start().await;
    origin.put("/k", Entry::new(pattern(100_000, 20)));
    origin.put("/linked", Entry::new(pattern(100_000, 21)));
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::new();
    let cache = open_with(&dir.path().join("c"), settings(), clock.clone(), &[]);
    let req = ImageRequest {
        kind: ImageKind::BootFile,
        ..ImageRequest::new(origin.url("/k"))
    };
    drop(cache.fetch(&req).await.unwrap());
    let linked = cache
        .fetch(&ImageRequest::new(origin.url("/linked")))
        .await
        .unwrap();
    cache
        .place(&linked, &dir.path().join("tftp/node/deploy_ramdisk"))
        .await
        .unwrap();
    drop(linked);
    clock.advance(6 * DAY);
    assert!(cache.clean_up(None).await.unwrap().removed.is_empty());
    clock.advance(DAY + Duration::from_secs(60));
    let r = cache.clean_up(None).await.unwrap();
    assert_eq!(r.removed.len(), 1, "{r:?}");
    assert!(
        !r.removed[0].ends_with(".converted"),
        "the boot file was evicted: {r:?}"
    );
    clock.advance(365 * DAY);
    assert!(
        cache.clean_up(None).await.unwrap().removed.is_empty(),
        "linked master stays"
    );
}

#[tokio::test]
async fn last_modified_and_no_store_are_honoured() {
    let origin = Origin::start().await;
    let old = pattern(200_000, 30);
    let new = pattern(200_000, 31);
    origin.put(
        "/lm",
        Entry {
            last_modified: Some(SystemTime::now() - 10 * DAY),
            ..Entry::new(old.clone())
        },
    );
    origin.put(
        "/nostore",
        Entry {
            no_store: true,
            ..Entry::new(old.clone())
        },
    );
    origin.put("/nolm", Entry::new(old.clone()));
    let dir = tempfile::tempdir().unwrap();
    let cache = open(dir.path(), settings());
    let href = origin.url("/lm");
    let first = cache.fetch(&ImageRequest::new(&href)).await.unwrap();
    assert!(first.downloaded);
    let second = cache.fetch(&ImageRequest::new(&href)).await.unwrap();
    assert!(!second.downloaded);
    let seen = origin.seen("/lm");
    assert_eq!((seen.len(), seen[1].status), (2, 304));
    assert!(seen[1].if_modified_since.is_some());
    drop((first, second));

    origin.update("/lm", |e| {
        e.data = new.clone();
        e.last_modified = Some(SystemTime::now() + Duration::from_secs(5));
    });
    let third = cache.fetch(&ImageRequest::new(&href)).await.unwrap();
    assert!(third.downloaded);
    assert_eq!(std::fs::read(&third.path).unwrap(), new);

    // Without Last-Modified the master is always refreshed (Ironic's rule).
    cache
        .fetch(&ImageRequest::new(origin.url("/nolm")))
        .await
        .unwrap();
    assert!(
        cache
            .fetch(&ImageRequest::new(origin.url("/nolm")))
            .await
            .unwrap()
            .downloaded
    );

    // no-store: used once, never kept.
    let ns = cache
        .fetch(&ImageRequest::new(origin.url("/nostore")))
        .await
        .unwrap();
    assert!(ns.path.to_string_lossy().contains(".nostore-"));
    let dest = tempfile::tempdir().unwrap();
    cache.place(&ns, &dest.path().join("disk")).await.unwrap();
    let ns_path = ns.path.clone();
    drop(ns);
    assert!(ns_path.exists(), "still linked by the node");
    std::fs::remove_file(dest.path().join("disk")).unwrap();
    cache.clean_up(None).await.unwrap();
    assert!(!ns_path.exists(), "unlinked no-store image evicted at once");
    assert!(
        cache
            .fetch(&ImageRequest::new(origin.url("/nostore")))
            .await
            .unwrap()
            .downloaded
    );
    assert_eq!(origin.gets("/nostore"), 2);
}

#[tokio::test]
async fn auth_redirects_and_agent_image_serving() {
    let origin = Origin::start().await;
    let data = pattern(300_000, 40);
    origin.put(
        "/private/disk.raw",
        Entry {
            basic_auth: Some(("glance".into(), "s3cret".into())),
            ..Entry::new(data.clone())
        },
    );
    origin.put(
        "/moved",
        Entry {
            redirect_to: Some(origin.url("/private/disk.raw")),
            ..Entry::default()
        },
    );
    let dir = tempfile::tempdir().unwrap();
    let cache = open(&dir.path().join("a"), settings());
    let err = cache
        .fetch(&ImageRequest::new(origin.url("/private/disk.raw")))
        .await
        .unwrap_err();
    assert!(
        matches!(err.root(), ImageError::HttpStatus { status: 401, .. }),
        "{err}"
    );
    assert_eq!(origin.gets("/private/disk.raw"), 1, "4xx is not retried");

    let mut s = settings();
    s.servers.insert(
        format!("127.0.0.1:{}", origin.addr.port()),
        ServerSettings {
            username: Some("glance".into()),
            password: Some("s3cret".into()),
            ca_bundle: None,
        },
    );
    let cache = open(&dir.path().join("b"), s);
    let image = cache
        .fetch(&ImageRequest {
            expected_format: Some(ImageFormat::Raw),
            ..ImageRequest::new(origin.url("/moved"))
        })
        .await
        .unwrap();
    assert_eq!(image.format, Some(ImageFormat::Raw));
    let http_root = dir.path().join("httpboot");
    let node = uuid::Uuid::new_v4();
    let served = cache
        .place_agent_image(&image, &http_root, &node)
        .await
        .unwrap();
    assert_eq!(served.url_path, format!("agent_images/{node}"));
    assert_eq!(served.os_hash_value, sha256(&data));
    assert_eq!(
        std::fs::metadata(&served.path).unwrap().ino(),
        std::fs::metadata(&image.path).unwrap().ino()
    );
    cache.remove_agent_image(&http_root, &node).await.unwrap();
    assert!(!served.path.exists() && image.path.exists());
}

fn qemu_img(args: &[&str], cwd: &Path) {
    let (ok, _, err) = support::run(Command::new("qemu-img").args(args).current_dir(cwd));
    assert!(ok, "qemu-img {args:?}: {err}");
}

#[tokio::test]
async fn qcow2_with_backing_or_data_file_is_refused_and_plain_qcow2_converts() {
    if !support::require_peer("qcow2 images", &["qemu-img"]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    std::fs::write(w.join("base.raw"), pattern(1 << 20, 50)).unwrap();
    qemu_img(
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.raw",
            "-F",
            "raw",
            "overlay.qcow2",
        ],
        w,
    );
    qemu_img(
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-o",
            "data_file=ext.raw",
            "datafile.qcow2",
            "4M",
        ],
        w,
    );
    qemu_img(
        &[
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "base.raw",
            "plain.qcow2",
        ],
        w,
    );
    qemu_img(
        &[
            "convert",
            "-q",
            "-f",
            "qcow2",
            "-O",
            "raw",
            "plain.qcow2",
            "expected.raw",
        ],
        w,
    );
    let origin = Origin::start().await;
    for name in ["overlay.qcow2", "datafile.qcow2", "plain.qcow2"] {
        origin.put(
            &format!("/{name}"),
            Entry::new(std::fs::read(w.join(name)).unwrap()),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = open(&dir.path().join("c"), settings());
    let e = cache
        .fetch(&ImageRequest::new(origin.url("/overlay.qcow2")))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("backing file (base.raw)"), "{e}");
    let e = cache
        .fetch(&ImageRequest::new(origin.url("/datafile.qcow2")))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("external data file"), "{e}");
    assert!(
        names(&dir.path().join("c")).is_empty(),
        "{:?}",
        names(&dir.path().join("c"))
    );

    let image = cache
        .fetch(&ImageRequest::new(origin.url("/plain.qcow2")))
        .await
        .unwrap();
    assert!(image.converted);
    assert_eq!(image.format, Some(ImageFormat::Raw));
    let expected = std::fs::read(w.join("expected.raw")).unwrap();
    assert_eq!(
        image.sha256(),
        sha256(&expected),
        "checksum recomputed after conversion"
    );
    assert!(image.path.to_string_lossy().ends_with(".converted"));
    assert_eq!(std::fs::read(&image.path).unwrap(), expected);

    // Without conversion the qcow2 is kept as is; with a narrower permitted list it is refused.
    let keep = open(
        &dir.path().join("k"),
        CacheSettings {
            force_raw_images: false,
            ..settings()
        },
    );
    let q = keep
        .fetch(&ImageRequest::new(origin.url("/plain.qcow2")))
        .await
        .unwrap();
    assert_eq!((q.format, q.converted), (Some(ImageFormat::Qcow2), false));
    let strict = open(
        &dir.path().join("s"),
        CacheSettings {
            force_raw_images: false,
            permitted_image_formats: vec!["raw".into()],
            ..settings()
        },
    );
    let e = strict
        .fetch(&ImageRequest::new(origin.url("/plain.qcow2")))
        .await
        .unwrap_err();
    assert!(
        matches!(e.root(), ImageError::FormatNotPermitted { .. }),
        "{e}"
    );
}

/// A small tmpfs mounted for one test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test]
async fn disk_full_evicts_on_demand_then_fails_clearly() {
    let is_root = unsafe { libc::geteuid() } == 0;
    if !support::require_condition("disk_full", is_root, "needs root to mount a tmpfs") {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&work.path().join("fs"), "8m") else {
        assert!(
            support::require_condition("disk_full", false, "mount -t tmpfs failed"),
            "unreachable"
        );
        return;
    };
    let origin = Origin::start().await;
    origin.put("/five", Entry::new(pattern(5 << 20, 60)));
    origin.put("/six", Entry::new(pattern(6 << 20, 61)));
    origin.put("/sixteen", Entry::new(pattern(16 << 20, 62)));
    origin.put(
        "/chunked",
        Entry {
            chunked: true,
            ..Entry::new(pattern(12 << 20, 63))
        },
    );
    let cache_dir = fs.0.join("cache");
    let cache = open(&cache_dir, settings());
    drop(
        cache
            .fetch(&ImageRequest::new(origin.url("/five")))
            .await
            .unwrap(),
    );
    // 6 MiB does not fit next to 5 MiB in 8 MiB: the unused 5 MiB master is evicted first.
    let six = cache
        .fetch(&ImageRequest::new(origin.url("/six")))
        .await
        .unwrap();
    assert_eq!(six.size, 6 << 20);
    assert_eq!(cache.metrics().evictions.get(), 1);

    // 16 MiB never fits, and six is in use: a clear error before any byte is written.
    let e = cache
        .fetch(&ImageRequest::new(origin.url("/sixteen")))
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e.root(), ImageError::DiskFull { needed, .. } if *needed == 16 << 20),
        "{msg}"
    );
    assert!(
        msg.contains("needs at least 16.0 MiB") && msg.contains("free after eviction"),
        "{msg}"
    );
    assert!(six.path.exists());

    // Without a Content-Length the disk fills up mid-write: same error kind, nothing left.
    let e = cache
        .fetch(&ImageRequest::new(origin.url("/chunked")))
        .await
        .unwrap_err();
    assert!(matches!(e.root(), ImageError::DiskFull { .. }), "{e}");
    assert_eq!(masters(&cache_dir).len(), 1, "{:?}", names(&cache_dir));
    drop(six);
    drop(cache);
}

/// `openssl s_server -WWW` serving a directory over HTTPS with a certificate from a test CA.
struct TlsOrigin {
    child: std::process::Child,
    port: u16,
    ca: PathBuf,
}

impl TlsOrigin {
    fn start(dir: &Path) -> Self {
        let sh = |script: &str| {
            let (ok, _, err) =
                support::run(Command::new("sh").args(["-ec", script]).current_dir(dir));
            assert!(ok, "{script}: {err}");
        };
        sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 -subj /CN=ironboot-test-ca 2>/dev/null
            openssl req -newkey rsa:2048 -nodes -keyout srv.key -out srv.csr -subj /CN=127.0.0.1 2>/dev/null
            printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext
            openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out srv.pem -days 1 -extfile san.ext 2>/dev/null");
        let port = support::free_tcp_port();
        let child = Command::new("openssl")
            .args([
                "s_server", "-quiet", "-WWW", "-cert", "srv.pem", "-key", "srv.key", "-accept",
            ])
            .arg(format!("127.0.0.1:{port}"))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "openssl s_server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            port,
            ca: dir.join("ca.pem"),
        }
    }
}

impl Drop for TlsOrigin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn https_with_a_per_server_ca_bundle() {
    if !support::require_peer("https origin", &["openssl"]) {
        return;
    }
    let srv = tempfile::tempdir().unwrap();
    let data = pattern(500_000, 70);
    std::fs::write(srv.path().join("disk.raw"), &data).unwrap();
    let tls = TlsOrigin::start(srv.path());
    let href = format!("https://127.0.0.1:{}/disk.raw", tls.port);
    let dir = tempfile::tempdir().unwrap();

    // The system roots do not know the test CA.
    let plain = open(
        &dir.path().join("plain"),
        CacheSettings {
            download_retries: 0,
            ..settings()
        },
    );
    let e = plain
        .fetch(&ImageRequest::new(&href))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.to_lowercase().contains("certificate"), "{e}");

    let mut s = settings();
    s.servers.insert(
        format!("127.0.0.1:{}", tls.port),
        ServerSettings {
            ca_bundle: Some(tls.ca.clone()),
            ..ServerSettings::default()
        },
    );
    s.validate().unwrap();
    let cache = open(&dir.path().join("ca"), s);
    let image = cache
        .fetch(&ImageRequest {
            checksum: Some(sha256(&data)),
            ..ImageRequest::new(&href)
        })
        .await
        .unwrap();
    assert_eq!(std::fs::read(&image.path).unwrap(), data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_download_semaphore_bounds_concurrent_downloads() {
    let origin = Origin::start().await;
    for i in 0..5 {
        origin.put(
            &format!("/img{i}"),
            Entry {
                throttle: Some((32 * 1024, Duration::from_millis(10))),
                ..Entry::new(pattern(512 * 1024, 80 + i))
            },
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let cache = open(
        dir.path(),
        CacheSettings {
            max_concurrent_downloads: 2,
            ..settings()
        },
    );
    let tasks: Vec<_> = (0..5)
        .map(|i| {
            let (cache, href) = (cache.clone(), origin.url(&format!("/img{i}")));
            tokio::spawn(async move { cache.fetch(&ImageRequest::new(href)).await.map(|_| ()) })
        })
        .collect();
    let mut peak = 0;
    while !tasks.iter().all(|t| t.is_finished()) {
        peak = peak.max(cache.metrics().downloads_in_flight.get());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        peak, 2,
        "at most (and, with 5 waiting, exactly) 2 downloads at once"
    );
    assert_eq!(cache.metrics().misses.get(), 5);
}
