//! Virtual media deploys against BMCs that fail: each node's deploy fails cleanly (`deploy
//! failed`), its `last_error` names the BMC and says what to do, and nothing stays published
//! or inserted. The faults come from sushy-tools itself (wrong credentials, a wrong system id),
//! from the fault-injecting proxy in front of it (5xx, no virtual media, an InsertMedia
//! refused), from a listener that never answers, and from a TLS certificate for another name.

use crate::support;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use support::redfish_proxy::{Behaviour, Fault, Hang, RedfishProxy};
use support::sushy::{Options, Sushy, TestCa};
use support::vmedia_lab::{VmediaLab, assert_slots_empty, system};

/// One failing BMC: what the node's driver_info becomes, and what `last_error` must say.
struct Case {
    name: &'static str,
    driver_info: Value,
    /// The BMC as the message must name it.
    bmc: String,
    /// What the message must also contain (the problem and what to do).
    says: Vec<&'static str>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_bmcs_fail_the_deploy_cleanly_and_say_what_to_do() {
    let test = "vmedia faults";
    let Some(ca) = TestCa::create(test) else {
        return;
    };
    let quick = Options {
        quick_power: true,
        ..Options::default()
    };
    // Short Redfish timeouts: the BMC that never answers costs seconds, not minutes.
    let env = [("IRONBOOT_REDFISH__REQUEST_TIMEOUT_SECS", "2")];
    let Some(lab) = VmediaLab::start(test, quick.clone(), "", &env) else {
        return;
    };
    let Some(tls) = Sushy::start(
        test,
        Options {
            tls: Some(ca.pair("other")),
            ..quick
        },
    ) else {
        return;
    };
    let kernel = lab.file("k", 4096, 1);
    let ramdisk = lab.file("r", 8192, 2);
    let image = lab.file("disk.img", 65536, 3);
    let media = json!({"deploy_kernel": kernel, "deploy_ramdisk": ramdisk});
    let sushy = lab.sushy.url();
    let five_hundred = RedfishProxy::start(&sushy, Behaviour::default()).await;
    let no_vmedia = RedfishProxy::start(
        &sushy,
        Behaviour {
            hide_system_vmedia: true,
            hide_manager_vmedia: true,
            ..Behaviour::default()
        },
    )
    .await;
    let refusing = RedfishProxy::start(&sushy, Behaviour::default()).await;
    let hang = Hang::start().await;
    let hang_url = format!("http://{}", hang.addr);
    let with = |extra: Value| {
        let mut info = lab.driver_info(system(), media.clone());
        for (k, v) in extra.as_object().unwrap() {
            info[k] = v.clone();
        }
        info
    };
    let cases = [
        Case {
            name: "server-errors",
            driver_info: with(json!({"redfish_address": five_hundred.url()})),
            bmc: five_hundred.url(),
            says: vec!["answered 503 (after 2 attempts)", "check its health"],
        },
        Case {
            name: "wrong-password",
            driver_info: with(json!({"redfish_password": "not-the-password"})),
            bmc: sushy.clone(),
            says: vec![
                "refused the credentials",
                "check redfish_username and redfish_password",
            ],
        },
        Case {
            name: "no-answer",
            driver_info: with(json!({"redfish_address": hang_url})),
            bmc: hang_url.clone(),
            says: vec![
                "no answer within 2 s",
                "this conductor reaches redfish_address",
            ],
        },
        Case {
            name: "no-virtual-media",
            driver_info: with(json!({"redfish_address": no_vmedia.url()})),
            bmc: no_vmedia.url(),
            says: vec!["has no virtual media", "licence"],
        },
        Case {
            name: "insert-refused",
            driver_info: with(json!({"redfish_address": refusing.url()})),
            bmc: refusing.url(),
            says: vec![
                "could not insert the deploy ISO",
                "The image URL is not reachable",
                "check that it reaches this conductor's HTTP server",
            ],
        },
        Case {
            name: "wrong-system",
            driver_info: with(json!({"redfish_system_id": "/redfish/v1/Systems/nope"})),
            bmc: sushy.clone(),
            says: vec!["redfish_system_id \"/redfish/v1/Systems/nope\" is not a member"],
        },
        Case {
            name: "tls-mismatch",
            driver_info: {
                let mut info = with(json!({"redfish_address": tls.url()}));
                info["redfish_verify_ca"] = json!(ca.ca().display().to_string());
                info
            },
            bmc: tls.url(),
            says: vec!["TLS certificate was refused", "redfish_verify_ca"],
        },
    ];

    // Every node is enrolled against the working emulator, then pointed at its failing BMC.
    let mut nodes = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let uuid = lab
            .enroll(
                case.name,
                lab.driver_info(system(), media.clone()),
                json!({"image_source": image}),
                &format!("52:54:00:fa:00:{i:02x}"),
            )
            .await;
        let (s, body) = lab
            .api(
                Method::PATCH,
                &format!("/v1/nodes/{uuid}"),
                Some(json!([{"op": "replace", "path": "/driver_info", "value": case.driver_info}])),
            )
            .await;
        assert_eq!(s, 200, "{}: {body}", case.name);
        nodes.push(uuid);
    }
    five_hundred.update(|b| b.faults.push(Fault::new(None, "", 503, 10_000)));
    refusing.update(|b| {
        b.faults.push(
            Fault::new(Some("POST"), "VirtualMedia.InsertMedia", 400, 10_000).with_body(json!({
                "error": {"code": "Base.1.0.GeneralError",
                    "message": "A general error has occurred. See ExtendedInfo for more information.",
                    "@Message.ExtendedInfo": [{"MessageId": "Base.1.0.GeneralError",
                        "Message": "The image URL is not reachable.",
                        "Resolution": "Check the image server."}]}
            })),
        )
    });

    for uuid in &nodes {
        let (s, body) = lab.provision(uuid, "active").await;
        assert_eq!(s, 202, "{body}");
    }
    for (case, uuid) in cases.iter().zip(&nodes) {
        let n = lab
            .wait_state(uuid, &["deploy failed"], Duration::from_secs(90))
            .await;
        let err = n["last_error"].as_str().unwrap_or_default();
        eprintln!("{}: last_error: {err}", case.name);
        assert!(
            err.contains(&format!("BMC {}", case.bmc)),
            "{}: the error does not name BMC {}: {err}",
            case.name,
            case.bmc
        );
        for want in &case.says {
            assert!(
                err.contains(want),
                "{}: {want:?} missing in: {err}",
                case.name
            );
        }
        assert!(
            n["driver_internal_info"].get("vmedia").is_none(),
            "{}: media still recorded: {}",
            case.name,
            n["driver_internal_info"]
        );
    }
    assert!(
        lab.published().is_empty(),
        "published media left behind: {:?}",
        lab.published().iter().map(|p| &p.0).collect::<Vec<_>>()
    );
    assert_slots_empty(&lab.sushy, system()).await;
    assert!(lab.sushy.downloaded().is_empty());
    // The refused insert was tried (the proxy saw it), so the clean up had something to do.
    assert!(refusing.count("POST", "VirtualMedia.InsertMedia") >= 1);

    // A redfish_address that is not http(s) is refused before anything happens.
    let uuid = lab
        .enroll(
            "bad-scheme",
            lab.driver_info(system(), media.clone()),
            json!({"image_source": image}),
            "52:54:00:fa:01:00",
        )
        .await;
    let (s, body) = lab
        .api(
            Method::PATCH,
            &format!("/v1/nodes/{uuid}"),
            Some(
                json!([{"op": "replace", "path": "/driver_info/redfish_address",
                "value": "ftp://127.0.0.1/redfish"}]),
            ),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = lab.provision(&uuid, "active").await;
    assert_eq!(s, 400, "{body}");
    let text = body.to_string();
    assert!(
        text.contains("redfish_address") && text.contains("ftp") && text.contains("https://"),
        "{text}"
    );
    assert_eq!(lab.node(&uuid).await["provision_state"], "available");
}
