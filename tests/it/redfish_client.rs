//! The Redfish client (`ironboot::bmc::redfish`) against sushy-tools 2.2.0 (fake driver), one
//! emulator per test, with a fault-injecting proxy in front where a test needs the BMC to
//! misbehave or to lack something (see `support::redfish_proxy`).
//!
//! sushy-tools has no SessionService: session authentication is exercised through the
//! proxy's emulated one (a test double in front of the real emulator), and `auto` is checked
//! to fall back to basic authentication against the emulator itself.

use std::time::{Duration, Instant};

use ironboot::bmc::redfish::{
    BootDevice, BootFrequency, BootMode, DriverInfo, ErrorClass, MediaKind, PowerState,
    PowerTarget, Redfish, RedfishError, RedfishMetrics, RedfishSettings, ResetType,
};
use serde_json::{Value, json};

use crate::support;
use crate::support::origin::{Entry, Origin};
use crate::support::redfish_proxy::{AuthSeen, Behaviour, Fault, Hang, RedfishProxy};
use crate::support::sushy::{
    Options, PASSWORD, SECOND_SYSTEM_UUID, SYSTEM_UUID, Sushy, TestCa, USER,
};

/// Short pauses: the tests inject failures on purpose.
fn settings() -> RedfishSettings {
    RedfishSettings {
        connection_attempts: 3,
        connection_retry_interval_ms: 50,
        connect_timeout_secs: 5,
        request_timeout_secs: 30,
        // sushy's fake driver applies a power change 0-11 s after the reset.
        power_state_change_timeout_secs: 30,
        power_state_poll_interval_ms: 200,
        ..RedfishSettings::default()
    }
}

fn redfish() -> Redfish {
    Redfish::new(settings(), None).unwrap()
}

/// driver_info for `address` with the emulator's credentials, plus `extra` keys.
fn info(address: &str, extra: Value) -> DriverInfo {
    let mut m = json!({
        "redfish_address": address,
        "redfish_username": USER,
        "redfish_password": PASSWORD,
    });
    for (k, v) in extra.as_object().unwrap() {
        m[k] = v.clone();
    }
    DriverInfo::parse(m.as_object().unwrap()).unwrap()
}

/// The error names the BMC and the call (method and path).
fn assert_names(err: &RedfishError, bmc: &str, call: &str) {
    let text = err.to_string();
    assert!(
        text.contains(&format!("BMC {bmc}")),
        "no BMC {bmc} in: {text}"
    );
    assert!(text.contains(call), "no {call} in: {text}");
    assert!(!text.contains(PASSWORD), "password in: {text}");
}

/// Data that differs per seed (so two images are never equal).
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p");
    support::write_pattern_file(&p, len, seed);
    std::fs::read(p).unwrap()
}

/// GET on the emulator itself, bypassing the client under test.
async fn emulator_doc(sushy: &Sushy, path: &str) -> Value {
    support::http_client()
        .get(format!("{}{path}", sushy.url()))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn discovery_with_and_without_system_id() {
    const T: &str = "redfish discovery";
    let Some(sushy) = Sushy::start(T, Options::default()) else {
        return;
    };
    let rf = redfish();
    let sys = rf.connect(&info(&sushy.url(), json!({}))).await.unwrap();
    assert_eq!(sys.path(), sushy.system_path());
    assert_eq!(sys.bmc(), sushy.url());
    for id in [SYSTEM_UUID.to_string(), sushy.system_path()] {
        let sys = rf
            .connect(&info(&sushy.url(), json!({"redfish_system_id": id})))
            .await
            .unwrap();
        assert_eq!(sys.path(), sushy.system_path());
    }

    let err = rf
        .connect(&info(
            &sushy.url(),
            json!({"redfish_system_id": "no-such-system"}),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Config, "{err}");
    let text = err.to_string();
    assert!(text.contains(&format!("BMC {}", sushy.url())), "{text}");
    assert!(text.contains("\"no-such-system\""), "{text}");
    assert!(text.contains(&sushy.system_path()), "{text}");

    let Some(two) = Sushy::start(
        T,
        Options {
            two_systems: true,
            ..Options::default()
        },
    ) else {
        return;
    };
    let err = rf.connect(&info(&two.url(), json!({}))).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("redfish_system_id"), "{text}");
    assert!(
        text.contains(SYSTEM_UUID) && text.contains(SECOND_SYSTEM_UUID),
        "{text}"
    );
    let sys = rf
        .connect(&info(
            &two.url(),
            json!({"redfish_system_id": SECOND_SYSTEM_UUID}),
        ))
        .await
        .unwrap();
    assert!(sys.path().ends_with(SECOND_SYSTEM_UUID), "{}", sys.path());

    // A scheme other than http(s) never reaches the network.
    let err = DriverInfo::parse(
        json!({"redfish_address": format!("ftp://127.0.0.1:{}", sushy.port)})
            .as_object()
            .unwrap(),
    )
    .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Config);
    let text = err.to_string();
    assert!(
        text.contains("redfish_address = ftp://127.0.0.1:"),
        "{text}"
    );
    assert!(text.contains("https://"), "{text}");
}

#[tokio::test]
async fn basic_auth_and_auto_falling_back_to_it() {
    const T: &str = "redfish basic auth";
    let Some(sushy) = Sushy::start(T, Options::default()) else {
        return;
    };
    // sushy-tools 2.2.0 offers no SessionService: the service root links none.
    let root = emulator_doc(&sushy, "/redfish/v1/").await;
    assert!(root.get("SessionService").is_none(), "{root}");
    assert!(root.pointer("/Links/Sessions").is_none(), "{root}");

    let proxy = RedfishProxy::start(&sushy.url(), Behaviour::default()).await;
    let rf = redfish();
    for auth in ["auto", "basic"] {
        let sys = rf
            .connect(&info(&proxy.url(), json!({"redfish_auth_type": auth})))
            .await
            .unwrap();
        assert_eq!(sys.power_state().await.unwrap(), PowerState::Off);
    }
    let seen = proxy.seen();
    let system_gets: Vec<_> = seen
        .iter()
        .filter(|s| s.path.starts_with("/redfish/v1/Systems"))
        .collect();
    assert!(!system_gets.is_empty());
    assert!(
        system_gets
            .iter()
            .all(|s| s.auth == AuthSeen::Basic && s.status == 200),
        "{system_gets:?}"
    );
    assert_eq!(rf.sessions().active().await, 0);

    let err = rf
        .connect(&info(&proxy.url(), json!({"redfish_auth_type": "session"})))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::NotSupported, "{err}");
    assert!(err.to_string().contains("Redfish sessions"), "{err}");

    let err = rf
        .connect(&info(&sushy.url(), json!({"redfish_password": "wrong-pw"})))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Auth, "{err}");
    assert_names(&err, &sushy.url(), "GET /redfish/v1/Systems");
    let text = err.to_string();
    assert!(
        text.contains("\"admin\"") && text.contains("redfish_password"),
        "{text}"
    );
    assert!(!text.contains("wrong-pw"), "{text}");

    // Without credentials the emulator refuses everything past the service root.
    let anonymous =
        DriverInfo::parse(json!({"redfish_address": sushy.url()}).as_object().unwrap()).unwrap();
    let err = rf.connect(&anonymous).await.unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
}

#[tokio::test]
async fn session_auth_reuses_renews_and_logs_out() {
    const T: &str = "redfish sessions";
    let Some(sushy) = Sushy::start(T, Options::default()) else {
        return;
    };
    let proxy = RedfishProxy::start(
        &sushy.url(),
        Behaviour {
            sessions: true,
            ..Behaviour::default()
        },
    )
    .await;
    let mut registry = ironboot::metrics::Registry::default();
    let metrics = RedfishMetrics::register(&mut registry);
    let rf = Redfish::new(settings(), Some(metrics)).unwrap();

    let sys = rf.connect(&info(&proxy.url(), json!({}))).await.unwrap();
    assert_eq!(sys.power_state().await.unwrap(), PowerState::Off);
    assert_eq!(proxy.logins(), 1);
    let system_calls: Vec<_> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.path.starts_with("/redfish/v1/Systems"))
        .collect();
    assert!(
        system_calls.iter().all(|s| s.auth == AuthSeen::Token),
        "{system_calls:?}"
    );

    // Another connect (another node on the same BMC, or the next call) reuses the session.
    let again = rf
        .connect(&info(&proxy.url(), json!({"redfish_auth_type": "session"})))
        .await
        .unwrap();
    again.power_state().await.unwrap();
    assert_eq!(proxy.logins(), 1);

    // The BMC forgets its sessions: the next call gets 401, logs in once more and succeeds.
    proxy.expire_sessions();
    assert_eq!(sys.power_state().await.unwrap(), PowerState::Off);
    assert_eq!(proxy.logins(), 2);
    assert_eq!(rf.sessions().active().await, 1);

    // Wrong password: the login is refused and the error says so (no fallback to basic).
    let err = rf
        .connect(&info(&proxy.url(), json!({"redfish_password": "wrong-pw"})))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Auth, "{err}");
    assert_names(
        &err,
        &proxy.url(),
        "POST /redfish/v1/SessionService/Sessions",
    );

    rf.close().await;
    assert_eq!(proxy.logouts(), ["/redfish/v1/SessionService/Sessions/2"]);
    drop((sys, again));
    assert_eq!(rf.sessions().active().await, 0);
    let text = ironboot::metrics::encode(&registry);
    assert!(
        text.contains("ironboot_redfish_session_logins_total 2"),
        "{text}"
    );
    assert!(
        text.contains(r#"ironboot_redfish_calls_total{method="GET",outcome="unauthorized"} 1"#),
        "{text}"
    );

    // A session left unused past session_idle_timeout_secs is logged out, not reused.
    let idle = Redfish::new(
        RedfishSettings {
            session_idle_timeout_secs: 1,
            ..settings()
        },
        None,
    )
    .unwrap();
    let first = idle.connect(&info(&proxy.url(), json!({}))).await.unwrap();
    drop(first);
    assert_eq!(proxy.logins(), 3);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = idle.connect(&info(&proxy.url(), json!({}))).await.unwrap();
    second.power_state().await.unwrap();
    assert_eq!(proxy.logins(), 4);
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.logouts().len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        proxy.logouts(),
        [
            "/redfish/v1/SessionService/Sessions/2",
            "/redfish/v1/SessionService/Sessions/3"
        ]
    );
}

#[tokio::test]
async fn power_on_restart_and_off_are_observed() {
    const T: &str = "redfish power";
    let Some(sushy) = Sushy::start(T, Options::default()) else {
        return;
    };
    let proxy = RedfishProxy::start(&sushy.url(), Behaviour::default()).await;
    let sys = redfish()
        .connect(&info(&proxy.url(), json!({})))
        .await
        .unwrap();
    let resets = || -> Vec<String> {
        proxy
            .seen()
            .iter()
            .filter(|s| s.path.ends_with("/Actions/ComputerSystem.Reset"))
            .map(|s| s.body["ResetType"].as_str().unwrap().to_string())
            .collect()
    };
    let emulator_power = || async {
        emulator_doc(&sushy, &sushy.system_path()).await["PowerState"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(sys.power_state().await.unwrap(), PowerState::Off);

    assert_eq!(
        sys.set_power(PowerTarget::On).await.unwrap(),
        PowerState::On
    );
    assert_eq!(emulator_power().await, "On");
    // Already on: nothing is sent.
    assert_eq!(
        sys.set_power(PowerTarget::On).await.unwrap(),
        PowerState::On
    );
    assert_eq!(
        sys.set_power(PowerTarget::Reboot).await.unwrap(),
        PowerState::On
    );
    assert_eq!(emulator_power().await, "On");
    assert_eq!(
        sys.set_power(PowerTarget::Off).await.unwrap(),
        PowerState::Off
    );
    assert_eq!(emulator_power().await, "Off");
    assert_eq!(resets(), ["On", "ForceRestart", "ForceOff"]);
}

#[tokio::test]
async fn graceful_restart_and_shutdown_are_observed() {
    const T: &str = "redfish graceful power";
    let Some(sushy) = Sushy::start(
        T,
        Options {
            power_on: true,
            ..Options::default()
        },
    ) else {
        return;
    };
    let proxy = RedfishProxy::start(&sushy.url(), Behaviour::default()).await;
    let sys = redfish()
        .connect(&info(&proxy.url(), json!({})))
        .await
        .unwrap();
    assert_eq!(sys.power_state().await.unwrap(), PowerState::On);
    assert_eq!(
        sys.set_power(PowerTarget::SoftReboot).await.unwrap(),
        PowerState::On
    );
    assert_eq!(
        sys.set_power(PowerTarget::SoftOff).await.unwrap(),
        PowerState::Off
    );
    let doc = emulator_doc(&sushy, &sushy.system_path()).await;
    assert_eq!(doc["PowerState"], "Off");
    let resets: Vec<Value> = proxy
        .seen()
        .iter()
        .filter(|s| s.path.ends_with("/Actions/ComputerSystem.Reset"))
        .map(|s| s.body["ResetType"].clone())
        .collect();
    assert_eq!(
        resets,
        [json!("GracefulRestart"), json!("GracefulShutdown")]
    );
}

#[tokio::test]
async fn boot_override_is_set_and_read_back() {
    const T: &str = "redfish boot override";
    let Some(sushy) = Sushy::start(T, Options::default()) else {
        return;
    };
    let sys = redfish()
        .connect(&info(&sushy.url(), json!({})))
        .await
        .unwrap();
    let b = sys
        .set_boot_override(BootDevice::Cd, BootFrequency::Once, Some(BootMode::Uefi))
        .await
        .unwrap();
    assert_eq!(b.device(), Some(BootDevice::Cd));
    assert_eq!(b.mode.as_deref(), Some("UEFI"));
    // sushy-tools ignores BootSourceOverrideEnabled and always reports Continuous.
    assert_eq!(b.enabled.as_deref(), Some("Continuous"));
    let doc = emulator_doc(&sushy, &sushy.system_path()).await;
    assert_eq!(doc["Boot"]["BootSourceOverrideTarget"], "Cd");

    let b = sys
        .set_boot_override(
            BootDevice::Pxe,
            BootFrequency::Continuous,
            Some(BootMode::Legacy),
        )
        .await
        .unwrap();
    assert_eq!(
        (b.device(), b.mode.as_deref(), b.persistent()),
        (Some(BootDevice::Pxe), Some("Legacy"), Some(true))
    );
    let b = sys
        .set_boot_override(BootDevice::Hdd, BootFrequency::Continuous, None)
        .await
        .unwrap();
    assert_eq!(
        (b.device(), b.mode.as_deref()),
        (Some(BootDevice::Hdd), Some("Legacy"))
    );
    assert_eq!(sys.boot_override().await.unwrap(), b);

    // The emulator lists Pxe, Cd, Hdd: Floppy is refused before anything is sent.
    let err = sys
        .set_boot_override(BootDevice::Floppy, BootFrequency::Once, None)
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::NotSupported, "{err}");
    let text = err.to_string();
    assert!(text.contains(&format!("BMC {}", sushy.url())), "{text}");
    assert!(text.contains("BootSourceOverrideTarget Floppy"), "{text}");
    assert!(text.contains("allows Pxe, Cd, Hdd"), "{text}");
    assert_eq!(
        sys.boot_override().await.unwrap().device(),
        Some(BootDevice::Hdd)
    );
}

#[tokio::test]
async fn virtual_media_insert_eject_and_eject_before_insert() {
    const T: &str = "redfish virtual media";
    let Some(sushy) = Sushy::start(T, Options::default()) else {
        return;
    };
    let origin = Origin::start().await;
    let iso = pattern(3 << 20, 11);
    let floppy = pattern(1_474_560, 12);
    let second = pattern(1 << 20, 13);
    origin.put("/boot.iso", Entry::new(iso.clone()));
    origin.put("/floppy.img", Entry::new(floppy.clone()));
    origin.put("/second.iso", Entry::new(second.clone()));
    let proxy = RedfishProxy::start(&sushy.url(), Behaviour::default()).await;
    let sys = redfish()
        .connect(&info(&proxy.url(), json!({})))
        .await
        .unwrap();

    let cd = sys
        .insert_media(MediaKind::Cd, &origin.url("/boot.iso"))
        .await
        .unwrap();
    assert!(cd.holds(&origin.url("/boot.iso")), "{cd:?}");
    assert!(cd.path.ends_with("/VirtualMedia/Cd"), "{cd:?}");
    assert_eq!((cd.inserted, cd.write_protected), (Some(true), Some(true)));
    // The emulator fetched the whole image once, and holds exactly those bytes.
    let gets = origin.seen("/boot.iso");
    assert_eq!(gets.len(), 1, "{gets:?}");
    assert_eq!(gets[0].status, 200);
    assert_eq!(sushy.downloaded(), [("boot.iso".to_string(), iso.clone())]);

    let fd = sys
        .insert_media(MediaKind::Floppy, &origin.url("/floppy.img"))
        .await
        .unwrap();
    assert!(fd.holds(&origin.url("/floppy.img")), "{fd:?}");
    assert!(fd.path.ends_with("/VirtualMedia/Floppy"), "{fd:?}");
    assert!(
        sushy
            .downloaded()
            .contains(&("floppy.img".to_string(), floppy.clone()))
    );

    // Another ISO: the CD is ejected first (the emulator deletes the old copy on eject).
    let cd = sys
        .insert_media(MediaKind::Cd, &origin.url("/second.iso"))
        .await
        .unwrap();
    assert!(cd.holds(&origin.url("/second.iso")), "{cd:?}");
    let posts: Vec<String> = proxy
        .seen()
        .iter()
        .filter(|s| s.method == "POST" && s.path.contains("/VirtualMedia/Cd/"))
        .map(|s| format!("{} {}", s.path.rsplit('.').next().unwrap(), s.body["Image"]))
        .collect();
    let second_url = origin.url("/second.iso");
    assert_eq!(
        posts,
        [
            format!("InsertMedia \"{}\"", origin.url("/boot.iso")),
            "EjectMedia null".to_string(),
            format!("InsertMedia \"{second_url}\""),
        ]
    );
    assert_eq!(
        sushy.downloaded(),
        [
            ("floppy.img".to_string(), floppy.clone()),
            ("second.iso".to_string(), second),
        ]
    );

    let ejected = sys.eject_media(MediaKind::Cd).await.unwrap();
    assert_eq!(ejected.len(), 1);
    assert!(!ejected[0].is_loaded(), "{ejected:?}");
    assert_eq!(sushy.downloaded(), [("floppy.img".to_string(), floppy)]);

    let ejected = sys.eject_all().await.unwrap();
    assert_eq!(ejected.len(), 1, "{ejected:?}");
    assert!(ejected[0].path.ends_with("/VirtualMedia/Floppy"));
    assert!(sushy.downloaded().is_empty());
    let slots = sys.virtual_media().await.unwrap();
    assert_eq!(slots.len(), 2);
    assert!(slots.iter().all(|s| !s.is_loaded()), "{slots:?}");
    assert!(sys.eject_all().await.unwrap().is_empty());
}

#[tokio::test]
async fn virtual_media_under_the_manager_and_by_patch() {
    const T: &str = "redfish vmedia manager";
    let Some(sushy) = Sushy::start(T, Options::default()) else {
        return;
    };
    let origin = Origin::start().await;
    let iso = pattern(1 << 20, 21);
    origin.put("/boot.iso", Entry::new(iso.clone()));
    // An iLO-5-like BMC: no VirtualMedia link on the System, slots without actions.
    let proxy = RedfishProxy::start(
        &sushy.url(),
        Behaviour {
            hide_system_vmedia: true,
            patch_only_vmedia: true,
            ..Behaviour::default()
        },
    )
    .await;
    let sys = redfish()
        .connect(&info(&proxy.url(), json!({})))
        .await
        .unwrap();
    let url = origin.url("/boot.iso");
    let cd = sys.insert_media(MediaKind::Cd, &url).await.unwrap();
    assert!(cd.holds(&url), "{cd:?}");
    assert_eq!(proxy.count("GET", &format!("/Managers/{SYSTEM_UUID}")), 1);
    let patches: Vec<Value> = proxy
        .seen()
        .iter()
        .filter(|s| s.method == "PATCH")
        .map(|s| s.body.clone())
        .collect();
    assert_eq!(
        patches,
        [json!({"Image": url, "Inserted": true, "WriteProtected": true})]
    );
    assert_eq!(proxy.count("POST", "VirtualMedia.InsertMedia"), 0);
    assert_eq!(sushy.downloaded(), [("boot.iso".to_string(), iso)]);

    let ejected = sys.eject_all().await.unwrap();
    assert_eq!(ejected.len(), 1);
    assert!(!ejected[0].is_loaded());
    assert_eq!(proxy.count("PATCH", "/VirtualMedia/Cd"), 2);
    assert!(sushy.downloaded().is_empty());
}

#[tokio::test]
async fn refused_and_missing_virtual_media() {
    const T: &str = "redfish vmedia faults";
    let Some(sushy) = Sushy::start(T, Options::default()) else {
        return;
    };
    let origin = Origin::start().await;
    origin.put("/boot.iso", Entry::new(pattern(4096, 31)));
    let insert = "/VirtualMedia/Cd/Actions/VirtualMedia.InsertMedia";
    let refusal = json!({"error": {
        "code": "Base.1.0.GeneralError",
        "message": "A general error has occurred. See ExtendedInfo for more information.",
        "@Message.ExtendedInfo": [{
            "MessageId": "Base.1.4.ActionParameterValueFormatError",
            "Message": "The value for the parameter Image in the action InsertMedia is invalid.",
            "Resolution": "Correct the value and resubmit."}]}});
    let proxy = RedfishProxy::start(
        &sushy.url(),
        Behaviour {
            faults: vec![Fault::new(Some("POST"), insert, 400, 1).with_body(refusal)],
            ..Behaviour::default()
        },
    )
    .await;
    let sys = redfish()
        .connect(&info(&proxy.url(), json!({})))
        .await
        .unwrap();
    let url = origin.url("/boot.iso");

    // A slot that refuses the insert: the BMC's ExtendedInfo reaches the error.
    let err = sys.insert_media(MediaKind::Cd, &url).await.unwrap_err();
    assert_eq!(
        (err.class(), err.status()),
        (ErrorClass::Rejected, Some(400)),
        "{err}"
    );
    assert_names(
        &err,
        &proxy.url(),
        &format!("POST {}{insert}", sushy.system_path()),
    );
    assert!(
        err.to_string()
            .contains("The value for the parameter Image in the action InsertMedia is invalid. (resolution: Correct the value and resubmit.)"),
        "{err}"
    );
    assert_eq!(proxy.count("POST", insert), 1, "a 400 is not retried");

    // The emulator itself refuses an image it cannot download.
    let err = sys
        .insert_media(MediaKind::Cd, &origin.url("/missing.iso"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");
    assert!(
        err.to_string().contains("Cannot download virtual media"),
        "{err}"
    );

    // No slot of the kind asked for.
    let Some(cd_only) = Sushy::start(
        T,
        Options {
            vmedia_devices: Some(
                "{'Cd': {'Name': 'Virtual CD', 'MediaTypes': ['CD', 'DVD']}}".into(),
            ),
            ..Options::default()
        },
    ) else {
        return;
    };
    let sys = redfish()
        .connect(&info(&cd_only.url(), json!({})))
        .await
        .unwrap();
    let err = sys.insert_media(MediaKind::Floppy, &url).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::NotSupported, "{err}");
    let text = err.to_string();
    assert!(text.contains("no virtual media slot for Floppy"), "{text}");
    assert!(text.contains("/VirtualMedia/Cd [CD, DVD]"), "{text}");

    // A system without virtual media at all (neither System nor Manager link to any).
    proxy.update(|b| b.hide_manager_vmedia = true);
    let sys = redfish()
        .connect(&info(&proxy.url(), json!({})))
        .await
        .unwrap();
    let err = sys.insert_media(MediaKind::Cd, &url).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::NotSupported, "{err}");
    let text = err.to_string();
    assert!(text.contains(&format!("BMC {}", proxy.url())), "{text}");
    assert!(text.contains("has no virtual media"), "{text}");
    assert!(
        text.contains(&format!("/redfish/v1/Managers/{SYSTEM_UUID}")),
        "{text}"
    );
}

#[tokio::test]
async fn server_errors_are_retried_then_reported() {
    const T: &str = "redfish 5xx";
    let Some(sushy) = Sushy::start(T, Options::default()) else {
        return;
    };
    let system = sushy.system_path();
    let proxy = RedfishProxy::start(
        &sushy.url(),
        Behaviour {
            faults: vec![Fault::new(Some("GET"), "/redfish/v1/Systems", 503, 2)],
            ..Behaviour::default()
        },
    )
    .await;
    let mut registry = ironboot::metrics::Registry::default();
    let rf = Redfish::new(settings(), Some(RedfishMetrics::register(&mut registry))).unwrap();
    let sys = rf.connect(&info(&proxy.url(), json!({}))).await.unwrap();
    assert_eq!(proxy.count("GET", "/redfish/v1/Systems"), 3);
    let text = ironboot::metrics::encode(&registry);
    assert!(
        text.contains(r#"ironboot_redfish_calls_total{method="GET",outcome="server_error"} 2"#),
        "{text}"
    );

    // Still failing after every attempt: the last status, the attempts, the BMC's message.
    proxy.update(|b| {
        b.faults = vec![
            Fault::new(Some("GET"), &system, 500, 10)
                .with_body(json!({"error": {"message": "Internal BMC failure"}})),
        ]
    });
    let err = sys.power_state().await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(err.class(), ErrorClass::Unavailable);
    assert_names(&err, &proxy.url(), &format!("GET {system} answered 500"));
    assert!(
        err.to_string()
            .contains("Internal BMC failure (after 3 attempts)"),
        "{err}"
    );
    assert_eq!(proxy.count("GET", &system), 3);

    // A 401 in the middle of basic-authenticated calls.
    proxy.update(|b| b.faults = vec![Fault::new(Some("GET"), &system, 401, 1)]);
    let err = sys.power_state().await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Auth, "{err}");
    assert_names(&err, &proxy.url(), &format!("GET {system}"));

    // A reset the BMC refuses: what it allows is part of the error.
    proxy.update(|b| b.faults = vec![Fault::new(Some("POST"), "ComputerSystem.Reset", 400, 1)]);
    let err = sys.set_power(PowerTarget::On).await.unwrap_err();
    assert_names(
        &err,
        &proxy.url(),
        "Actions/ComputerSystem.Reset answered 400",
    );
    assert!(
        err.to_string()
            .contains("the BMC lists ResetType On, ForceOff"),
        "{err}"
    );

    // A reset whose answer never comes is not sent again: it may have been carried out.
    let impatient = Redfish::new(
        RedfishSettings {
            request_timeout_secs: 1,
            ..settings()
        },
        None,
    )
    .unwrap();
    let sys = impatient
        .connect(&info(&proxy.url(), json!({})))
        .await
        .unwrap();
    proxy.update(|b| {
        b.faults = vec![
            Fault::new(Some("POST"), "ComputerSystem.Reset", 204, 1)
                .with_delay(Duration::from_secs(5)),
        ]
    });
    let resets = proxy.count("POST", "ComputerSystem.Reset");
    let err = sys.reset(ResetType::On).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Unavailable, "{err}");
    assert_names(
        &err,
        &proxy.url(),
        "Actions/ComputerSystem.Reset failed after 1 attempt(s): no answer within 1 s",
    );
    assert_eq!(proxy.count("POST", "ComputerSystem.Reset"), resets + 1);

    // A BMC that accepts a reset and never carries it out: the wait ends, naming the state.
    proxy.update(|b| b.swallow_reset = true);
    let quick = Redfish::new(
        RedfishSettings {
            power_state_change_timeout_secs: 1,
            ..settings()
        },
        None,
    )
    .unwrap();
    let sys = quick.connect(&info(&proxy.url(), json!({}))).await.unwrap();
    let started = Instant::now();
    let err = sys.set_power(PowerTarget::On).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(err.class(), ErrorClass::Timeout, "{err}");
    let text = err.to_string();
    assert!(
        text.contains("did not reach power state On within 1 s"),
        "{text}"
    );
    assert!(text.contains("last state seen: Off"), "{text}");
}

#[tokio::test]
async fn unreachable_bmcs_fail_within_the_settings() {
    let rf = Redfish::new(
        RedfishSettings {
            connection_attempts: 2,
            request_timeout_secs: 1,
            ..settings()
        },
        None,
    )
    .unwrap();

    // A closed port.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let bmc = format!("http://{closed}");
    let err = rf.connect(&info(&bmc, json!({}))).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_names(
        &err,
        &bmc,
        "GET /redfish/v1/ failed after 2 attempt(s): cannot connect",
    );

    // A BMC that accepts the connection and never answers.
    let hang = Hang::start().await;
    let bmc = format!("http://{}", hang.addr);
    let started = Instant::now();
    let err = rf.connect(&info(&bmc, json!({}))).await.unwrap_err();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "{took:?}"
    );
    assert_eq!(err.class(), ErrorClass::Unavailable, "{err}");
    assert_names(
        &err,
        &bmc,
        "GET /redfish/v1/ failed after 2 attempt(s): no answer within 1 s",
    );
}

#[tokio::test]
async fn tls_certificates_are_verified() {
    const T: &str = "redfish tls";
    let Some(ca) = TestCa::create(T) else {
        return;
    };
    let Some(sushy) = Sushy::start(
        T,
        Options {
            tls: Some(ca.pair("server")),
            ..Options::default()
        },
    ) else {
        return;
    };
    let url = sushy.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let rf = redfish();

    // Verification is on by default: the test CA is unknown to the system.
    let err = rf.connect(&info(&url, json!({}))).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Config, "{err}");
    assert_names(&err, &url, "GET /redfish/v1/");
    let text = err.to_string();
    assert!(
        text.contains("not signed by a CA this conductor trusts"),
        "{text}"
    );
    assert!(text.contains("redfish_verify_ca"), "{text}");

    let ca_path = ca.ca().display().to_string();
    for verify in [json!(ca_path), json!(false), json!("False")] {
        let sys = rf
            .connect(&info(&url, json!({"redfish_verify_ca": verify})))
            .await
            .unwrap_or_else(|e| panic!("redfish_verify_ca={verify}: {e}"));
        assert_eq!(sys.power_state().await.unwrap(), PowerState::Off);
    }
    // A bare host means https.
    let bare = url.trim_start_matches("https://").to_string();
    let sys = rf
        .connect(&info(&bare, json!({"redfish_verify_ca": ca_path})))
        .await
        .unwrap();
    assert_eq!(sys.bmc(), url);

    // A certificate from the right CA for another name.
    let Some(other) = Sushy::start(
        T,
        Options {
            tls: Some(ca.pair("other")),
            ..Options::default()
        },
    ) else {
        return;
    };
    let err = rf
        .connect(&info(&other.url(), json!({"redfish_verify_ca": ca_path})))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Config, "{err}");
    assert_names(&err, &other.url(), "GET /redfish/v1/");
    assert!(err.to_string().contains("it is not valid for"), "{err}");
    assert!(err.to_string().contains("bmc.example"), "{err}");
}
