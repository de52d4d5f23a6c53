//! Publishing virtual media against real servers: a Swift all-in-one (TempAuth and Keystone v3)
//! fetched with curl through temp URLs, and the local web-root publisher.

use crate::support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ironboot::publish::swift::tempurl;
use ironboot::publish::{
    AuthVersion, Backend, Interface, ObjectName, PublishError, PublishMetrics, PublishSettings,
    Publisher, Publishers, Secret, SwiftSettings, TempUrlDigest,
};
use prometheus_client::registry::Registry;
use support::swift::{
    KEYSTONE_ADMIN, KEYSTONE_PASSWORD, KEYSTONE_PROJECT, Keystone, Swift, TEMPAUTH_KEY,
    TEMPAUTH_USER,
};
use support::{run, write_pattern_file};
use uuid::Uuid;

fn tempauth_settings(swift: &Swift) -> SwiftSettings {
    SwiftSettings {
        auth_url: swift.tempauth_url(),
        auth_version: AuthVersion::Tempauth,
        user: TEMPAUTH_USER.into(),
        key: Secret::new(TEMPAUTH_KEY),
        ..SwiftSettings::default()
    }
}

/// Publishers whose default is local, with Swift available per node.
fn publishers(
    root: &Path,
    swift: SwiftSettings,
    registry: &mut Registry,
) -> ironboot::publish::SelectedPublisher {
    let settings = PublishSettings {
        swift: Some(swift),
        ..PublishSettings::default()
    };
    let metrics = PublishMetrics::register(registry);
    let all = Publishers::new(&settings, root, "http://127.0.0.1:1/", metrics).unwrap();
    let p = all.select(Some("swift")).unwrap();
    assert_eq!(p.backend(), Backend::Swift);
    p
}

/// `curl` GET; returns (HTTP status, body bytes, response headers).
fn curl_get(url: &str, extra: &[&str]) -> (u16, Vec<u8>, String) {
    let dir = tempfile::tempdir().unwrap();
    let (body, headers) = (dir.path().join("body"), dir.path().join("headers"));
    let (ok, out, err) = run(Command::new("curl")
        .args(["-sS", "-g", "-o"])
        .arg(&body)
        .arg("-D")
        .arg(&headers)
        .args(["-w", "%{http_code}"])
        .args(extra)
        .arg(url));
    assert!(ok, "curl {url} failed: {err}");
    (
        out.trim().parse().unwrap(),
        fs::read(&body).unwrap_or_default(),
        fs::read_to_string(&headers).unwrap_or_default(),
    )
}

fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A TempAuth token and storage URL, fetched with curl (independently of ironboot).
fn tempauth_login(swift: &Swift) -> (String, String) {
    let (status, _, headers) = curl_get(
        &swift.tempauth_url(),
        &[
            "-H",
            &format!("X-Auth-User: {TEMPAUTH_USER}"),
            "-H",
            &format!("X-Auth-Key: {TEMPAUTH_KEY}"),
        ],
    );
    assert_eq!(status, 200);
    (
        header(&headers, "x-auth-token").unwrap().to_string(),
        header(&headers, "x-storage-url").unwrap().to_string(),
    )
}

fn object_url_of(temp_url: &str) -> reqwest::Url {
    let mut url = reqwest::Url::parse(temp_url).unwrap();
    url.set_query(None);
    url
}

fn metric(registry: &Registry, line_start: &str) -> f64 {
    metric_opt(registry, line_start).unwrap_or_else(|| {
        panic!(
            "{line_start} not in\n{}",
            ironboot::metrics::encode(registry)
        )
    })
}

/// A series that was never touched is absent (labelled families create series on first use).
fn metric_opt(registry: &Registry, line_start: &str) -> Option<f64> {
    let text = ironboot::metrics::encode(registry);
    text.lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swift_publish_fetch_range_expiry_and_unpublish() {
    let Some(swift) = Swift::start("swift_publish_fetch_range_expiry_and_unpublish") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let iso = tmp.path().join("boot.iso");
    let size = 3 * 1024 * 1024 + 123;
    write_pattern_file(&iso, size, 7);
    let want = fs::read(&iso).unwrap();
    let mut registry = Registry::default();
    let p = publishers(
        tmp.path(),
        SwiftSettings {
            expiry_secs: 600,
            ..tempauth_settings(&swift)
        },
        &mut registry,
    );
    let node = Uuid::new_v4();
    let name = ObjectName::boot_iso(node);
    assert!(!p.exists(&name).await.unwrap());

    let started = Instant::now();
    let published = p.publish(&iso, &name).await.unwrap();
    eprintln!("publish of {size} bytes took {:?}", started.elapsed());
    assert_eq!(published.bytes, size as u64);
    let url = reqwest::Url::parse(&published.url).unwrap();
    let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(q["filename"], name.as_str());
    assert_eq!(q["temp_url_sig"].len(), 64, "sha256 hex by default");
    let expires: i64 = q["temp_url_expires"].parse().unwrap();
    assert!((expires - (now() + 600)).abs() <= 5, "{expires}");
    assert_eq!(
        url.path(),
        format!("/v1/AUTH_test/ironboot_vmedia/{name}"),
        "object lands in the default container"
    );

    // A BMC's view: plain GET through the temp URL, byte for byte.
    let (status, body, headers) = curl_get(&published.url, &[]);
    assert_eq!(status, 200, "{headers}");
    assert!(body == want, "downloaded bytes differ");
    let cd = header(&headers, "content-disposition").unwrap();
    assert!(cd.contains(&format!("filename=\"{name}\"")), "{cd}");

    // Range requests (BMCs read media in pieces).
    let (status, body, _) = curl_get(&published.url, &["-r", "1000000-1002047"]);
    assert_eq!(status, 206);
    assert!(body == want[1_000_000..1_002_048]);

    // The object expires on its own (X-Delete-After), about when the URL does.
    let (token, storage) = tempauth_login(&swift);
    let (status, _, headers) = curl_get(
        &format!("{storage}/ironboot_vmedia/{name}"),
        &["-I", "-H", &format!("X-Auth-Token: {token}")],
    );
    assert_eq!(status, 200);
    let delete_at: i64 = header(&headers, "x-delete-at").unwrap().parse().unwrap();
    assert!(
        (delete_at - (now() + 600)).abs() <= 5,
        "X-Delete-At {delete_at}"
    );

    // No key was configured: ironboot generated one and set it on the account.
    let (_, _, headers) = curl_get(&storage, &["-I", "-H", &format!("X-Auth-Token: {token}")]);
    let account_key = header(&headers, "x-account-meta-temp-url-key")
        .expect("account temp URL key set by ironboot")
        .to_string();
    assert_eq!(account_key.len(), 64);

    // Expired and wrongly keyed URLs are refused; the same signature math with the right key
    // and a future expiry works (so the refusals are about expiry and key only).
    let object = object_url_of(&published.url);
    let sign = |key: &str, exp: i64, digest| {
        tempurl::temp_url(&object, key.as_bytes(), digest, exp, name.as_str())
    };
    assert_eq!(
        curl_get(&sign(&account_key, now() + 60, TempUrlDigest::Sha256), &[]).0,
        200
    );
    assert_eq!(
        curl_get(&sign(&account_key, now() - 1, TempUrlDigest::Sha256), &[]).0,
        401
    );
    assert_eq!(
        curl_get(&sign("wrong-key", now() + 60, TempUrlDigest::Sha256), &[]).0,
        401
    );

    // sha1 and sha512 signatures, and a configured key equal to the account's.
    for digest in [TempUrlDigest::Sha1, TempUrlDigest::Sha512] {
        let mut reg = Registry::default();
        let p2 = publishers(
            tmp.path(),
            SwiftSettings {
                digest,
                temp_url_key: Some(Secret::new(account_key.clone())),
                ..tempauth_settings(&swift)
            },
            &mut reg,
        );
        let published = p2.publish(&iso, &name).await.unwrap();
        let (status, body, _) = curl_get(&published.url, &[]);
        assert_eq!(status, 200, "{digest:?}");
        assert!(body == want, "{digest:?}");
    }

    assert!(p.exists(&name).await.unwrap());
    p.unpublish(&name).await.unwrap();
    assert!(!p.exists(&name).await.unwrap());
    let (status, _, _) = curl_get(&published.url, &[]);
    assert_eq!(status, 404, "unpublished object must be gone");
    // Unpublishing something already gone is fine.
    p.unpublish(&name).await.unwrap();

    assert_eq!(
        metric(
            &registry,
            r#"ironboot_publish_operations_total{backend="swift",operation="publish"}"#
        ),
        1.0
    );
    assert_eq!(
        metric(
            &registry,
            r#"ironboot_publish_bytes_total{backend="swift"}"#
        ),
        size as f64
    );
    assert_eq!(
        metric(
            &registry,
            r#"ironboot_publish_operations_total{backend="swift",operation="unpublish"}"#
        ),
        2.0
    );
    assert_eq!(
        metric(&registry, "ironboot_publish_swift_authentications_total"),
        1.0
    );

    // The same through the binary and a config file: `[vmedia] publisher = "swift"`.
    let config = tmp.path().join("ironboot.toml");
    fs::write(
        &config,
        format!(
            "[vmedia]\npublisher = \"swift\"\n[vmedia.swift]\nauth_version = \"tempauth\"\n\
             auth_url = \"{}\"\nuser = \"{TEMPAUTH_USER}\"\nkey = \"{TEMPAUTH_KEY}\"\n",
            swift.tempauth_url()
        ),
    )
    .unwrap();
    let cli = |args: &[&str]| {
        let out = Command::new(support::ironboot_bin())
            .arg("--config")
            .arg(&config)
            .args(["publish", "--data-dir"])
            .arg(tmp.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let url = cli(&["put", iso.to_str().unwrap(), "--name", name.as_str()]);
    assert!(
        url.contains("temp_url_sig=") && url.contains(&format!("filename={name}")),
        "{url}"
    );
    let (status, body, _) = curl_get(&url, &[]);
    assert_eq!(status, 200);
    assert!(body == want);
    assert_eq!(cli(&["exists", "--name", name.as_str()]), "published");
    cli(&["remove", "--name", name.as_str()]);
    assert_eq!(cli(&["exists", "--name", name.as_str()]), "not published");
    assert_eq!(curl_get(&url, &[]).0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swift_token_is_refreshed_after_401() {
    let Some(mut swift) = Swift::start("swift_token_is_refreshed_after_401") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("floppy.img");
    write_pattern_file(&img, 1_474_560, 3);
    let mut registry = Registry::default();
    let p = publishers(tmp.path(), tempauth_settings(&swift), &mut registry);
    let name = ObjectName::floppy(Uuid::new_v4());
    p.publish(&img, &name).await.unwrap();
    assert_eq!(
        metric(&registry, "ironboot_publish_swift_authentications_total"),
        1.0
    );

    // TempAuth keeps tokens only in memcached: a restart invalidates the cached token, the
    // next upload gets 401, logs in again and succeeds.
    swift.restart_memcached();
    let published = p.publish(&img, &name).await.unwrap();
    assert_eq!(
        metric(&registry, "ironboot_publish_swift_authentications_total"),
        2.0
    );
    let (status, body, _) = curl_get(&published.url, &[]);
    assert_eq!(status, 200);
    assert!(body == fs::read(&img).unwrap());

    // The same for bodiless requests (HEAD, DELETE).
    swift.restart_memcached();
    assert!(p.exists(&name).await.unwrap());
    assert_eq!(
        metric(&registry, "ironboot_publish_swift_authentications_total"),
        3.0
    );
    swift.restart_memcached();
    p.unpublish(&name).await.unwrap();
    assert!(!p.exists(&name).await.unwrap());
    assert_eq!(
        metric(&registry, "ironboot_publish_swift_authentications_total"),
        4.0
    );
    assert_eq!(
        metric_opt(
            &registry,
            r#"ironboot_publish_failures_total{backend="swift""#
        ),
        None,
        "no call failed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swift_stopped_mid_upload_gives_clear_error_and_no_object() {
    let Some(mut swift) = Swift::start("swift_stopped_mid_upload_gives_clear_error_and_no_object")
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let iso = tmp.path().join("big.iso");
    // Sparse: big enough that the upload is still running when Swift dies.
    fs::File::create(&iso).unwrap().set_len(2 << 30).unwrap();
    let mut registry = Registry::default();
    let p = publishers(
        tmp.path(),
        SwiftSettings {
            upload_attempts: 2,
            ..tempauth_settings(&swift)
        },
        &mut registry,
    );
    let name = ObjectName::boot_iso(Uuid::new_v4());
    let upload = {
        let (p, iso, name) = (p.clone(), iso.clone(), name.clone());
        tokio::spawn(async move { p.publish(&iso, &name).await })
    };
    let written_before = swift.bytes_written_by("object");
    let deadline = Instant::now() + Duration::from_secs(60);
    while swift.bytes_written_by("object") < written_before + (64 << 20) {
        if upload.is_finished() {
            panic!("upload ended before Swift was stopped: {:?}", upload.await);
        }
        assert!(
            Instant::now() < deadline,
            "upload never started:\n{}",
            swift.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for server in ["proxy", "object", "container", "account"] {
        swift.stop_server(server);
    }
    let err = tokio::time::timeout(Duration::from_secs(60), upload)
        .await
        .expect("publish must give up, not hang")
        .unwrap()
        .unwrap_err();
    let text = err.to_string();
    eprintln!("error after Swift stopped: {text}");
    assert!(
        matches!(err, PublishError::UploadFailed { attempts: 2, .. }),
        "{text}"
    );
    assert!(
        text.contains(name.as_str()) && text.contains("ironboot_vmedia"),
        "{text}"
    );
    assert!(
        text.to_lowercase().contains("connect"),
        "names the cause: {text}"
    );

    for server in ["account", "container", "object", "proxy"] {
        swift.start_server(server);
    }
    swift.wait_healthy();
    let exists = p.exists(&name).await;
    assert!(
        !exists
            .as_ref()
            .unwrap_or_else(|e| panic!("{e}\n{}", swift.logs())),
        "no half-published object"
    );
    let (token, storage) = tempauth_login(&swift);
    let (status, _, _) = curl_get(
        &format!("{storage}/ironboot_vmedia/{name}"),
        &["-I", "-H", &format!("X-Auth-Token: {token}")],
    );
    assert_eq!(status, 404);
    assert_eq!(
        metric(
            &registry,
            r#"ironboot_publish_failures_total{backend="swift",operation="publish"}"#
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keystone_v3_auth_and_catalog_endpoint_selection() {
    let test = "keystone_v3_auth_and_catalog_endpoint_selection";
    let Some(keystone) = Keystone::start(test) else {
        return;
    };
    let Some(swift) = Swift::start_with_keystone(test, &keystone) else {
        return;
    };
    let dead = format!("http://127.0.0.1:{}", support::free_tcp_port());
    let live = swift.url();
    let tmpl = |base: &str| format!("{base}/v1/AUTH_$(project_id)s");
    keystone.register_object_store(&[
        ("internal", "RegionOne", &tmpl(&dead)),
        ("public", "RegionTwo", &tmpl(&dead)),
        ("public", "RegionOne", &tmpl(&live)),
    ]);
    let settings = SwiftSettings {
        // Without /v3: ironboot appends it.
        auth_url: keystone.auth_url().trim_end_matches("/v3").to_string(),
        auth_version: AuthVersion::V3,
        user: KEYSTONE_ADMIN.into(),
        key: Secret::new(KEYSTONE_PASSWORD),
        project_name: KEYSTONE_PROJECT.into(),
        region: Some("RegionOne".into()),
        interface: Interface::Public,
        ..SwiftSettings::default()
    };
    let tmp = tempfile::tempdir().unwrap();
    let iso = tmp.path().join("boot.iso");
    write_pattern_file(&iso, 2 * 1024 * 1024 + 5, 11);
    let mut registry = Registry::default();
    let p = publishers(tmp.path(), settings.clone(), &mut registry);
    let name = ObjectName::boot_iso(Uuid::new_v4());
    let published = p.publish(&iso, &name).await.unwrap_or_else(|e| {
        panic!("{e}\n{}\n{}", swift.logs(), keystone.log());
    });
    assert!(
        published.url.starts_with(&format!("{live}/v1/AUTH_")),
        "{}",
        published.url
    );
    let (status, body, _) = curl_get(&published.url, &[]);
    assert_eq!(status, 200);
    assert!(body == fs::read(&iso).unwrap());
    p.unpublish(&name).await.unwrap();
    assert!(!p.exists(&name).await.unwrap());
    assert_eq!(
        metric(&registry, "ironboot_publish_swift_authentications_total"),
        1.0
    );

    // Wrong password: Keystone's 401, named as an authentication failure.
    let mut reg = Registry::default();
    let bad = publishers(
        tmp.path(),
        SwiftSettings {
            key: Secret::new("not-the-password"),
            ..settings.clone()
        },
        &mut reg,
    );
    let err = bad.publish(&iso, &name).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, PublishError::Auth { .. }), "{text}");
    assert!(text.contains("401"), "{text}");
    assert!(!text.contains("not-the-password"), "secret leaked: {text}");

    // No admin endpoint in the catalog: the error lists what there is.
    let mut reg = Registry::default();
    let none = publishers(
        tmp.path(),
        SwiftSettings {
            interface: Interface::Admin,
            ..settings
        },
        &mut reg,
    );
    let text = none.publish(&iso, &name).await.unwrap_err().to_string();
    assert!(
        text.contains("interface admin in region RegionOne")
            && text.contains("internal/RegionOne, public/RegionTwo, public/RegionOne"),
        "{text}"
    );
}

/// The local publisher's files and URLs, fetched from ironboot's own HTTP server (the real
/// `ironboot serve`, publishing into its data directory's HTTP root).
#[tokio::test]
async fn local_publish_serves_the_file_and_unpublish_gives_404() {
    let test = "local_publish_serves_the_file_and_unpublish_gives_404";
    if !support::require_peer(test, &["curl"]) {
        return;
    }
    let srv = support::server::Server::start();
    let root = srv.data_dir.join("httpboot");
    let base = srv.http_url();
    let tmp = tempfile::tempdir().unwrap();

    let mut registry = Registry::default();
    let metrics = PublishMetrics::register(&mut registry);
    let settings = PublishSettings::default();
    let p = Publishers::new(&settings, &root, &format!("{base}/"), metrics)
        .unwrap()
        .select(None)
        .unwrap();
    assert_eq!(p.backend(), Backend::Local);
    let node = Uuid::new_v4();
    let src = tmp.path().join("built.iso");
    write_pattern_file(&src, 1_000_003, 5);
    for name in [
        ObjectName::boot_iso(node),
        ObjectName::floppy(node),
        ObjectName::configdrive(node),
    ] {
        let published = p.publish(&src, &name).await.unwrap();
        assert_eq!(published.url, format!("{base}/redfish/{name}"));
        let path: PathBuf = root.join("redfish").join(name.as_str());
        assert!(path.is_file());
        let (status, body, _) = curl_get(&published.url, &[]);
        assert_eq!(status, 200);
        assert!(body == fs::read(&src).unwrap());
        p.unpublish(&name).await.unwrap();
        assert!(!path.exists());
        assert_eq!(curl_get(&published.url, &[]).0, 404);
    }
    assert_eq!(
        metric(
            &registry,
            r#"ironboot_publish_bytes_total{backend="local"}"#
        ),
        3_000_009.0
    );
}
