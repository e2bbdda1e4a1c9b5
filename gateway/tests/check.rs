//! `overpass check` against the real interfaces of a netns test bed: a
//! healthy bed has no blockers (veth: native XDP yes, zero-copy no), and
//! deliberately broken set-ups produce the expected findings. Root only.

use std::path::PathBuf;
use std::process::Command;

use overpass::check::{self, Finding, Report, Severity};
use overpass::config::{BindMode, Config};
use overpass_testkit::testbed::{Ns, Testbed, TestbedSpec, require_root};

fn one<'a>(r: &'a Report, check: &str, subject: &str) -> &'a Finding {
    let found = r.find(check, Some(subject));
    assert_eq!(
        found.len(),
        1,
        "expected one {check} finding about {subject}:\n{}",
        r.render()
    );
    found[0]
}

fn severity(r: &Report, check: &str, subject: &str) -> Severity {
    one(r, check, subject).severity
}

fn write_config(config: &Config, name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("overpass-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, config.to_toml()).unwrap();
    path
}

/// Runs the real binary: (exit success, stdout).
fn run_binary(path: &PathBuf) -> (bool, String) {
    run_binary_with(path, &[])
}

/// [`run_binary`] with extra arguments.
fn run_binary_with(path: &PathBuf, extra: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_overpass"))
        .args(["check", "--config"])
        .arg(path)
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.success(), stdout)
}

#[test]
fn check_on_a_test_bed_healthy_then_broken() {
    if !require_root("overpass check against a netns test bed") {
        return;
    }
    let bed = Testbed::create(&TestbedSpec {
        tag: "ck1".to_string(),
        underlay_queues: 1,
    })
    .unwrap();
    let gw = bed.ns(Ns::Gateway);
    let config = bed.gateway_config();

    // Healthy: no blockers, and the per-interface facts are right.
    let r = check::inspect(&config);
    eprintln!("healthy bed:\n{}", r.render());
    assert!(!r.has_blockers(), "{}", r.render());
    for kernel_check in ["kernel.version", "af_xdp.socket", "xdp.load"] {
        assert!(
            r.find(kernel_check, None)
                .iter()
                .all(|f| f.severity == Severity::Ok),
            "{kernel_check}:\n{}",
            r.render()
        );
    }
    assert_eq!(severity(&r, "netns", &gw), Severity::Ok);
    for dev in ["ul0", "gwp-a", "gwp-b"] {
        assert_eq!(severity(&r, "nic.exists", dev), Severity::Ok);
        assert!(one(&r, "nic.exists", dev).message.contains("driver veth"));
        assert_eq!(severity(&r, "nic.up", dev), Severity::Ok);
        // veth: native XDP yes …
        assert_eq!(severity(&r, "nic.xdp_native", dev), Severity::Ok);
        // … zero-copy no.
        assert!(
            one(&r, "nic.zero_copy", dev)
                .message
                .contains("no AF_XDP zero-copy")
        );
        // Asked of the kernel (`netdev` generic netlink), not a driver list:
        // veth reports basic and redirect (rx-sg, ndo-xmit with a program
        // on its peer), no xsk-zerocopy.
        let native = &one(&r, "nic.xdp_native", dev).message;
        assert!(
            native.contains("driver veth, xdp-features [basic, redirect"),
            "{native}"
        );
        assert!(!native.contains("xsk-zerocopy"), "{native}");
        assert!(
            one(&r, "nic.plan", dev)
                .message
                .starts_with("plan: native XDP")
        );
    }
    assert!(
        one(&r, "nic.plan", "ul0")
            .message
            .contains("AF_XDP copy mode, one UMEM shared with the pods"),
        "{}",
        r.render()
    );
    assert_eq!(severity(&r, "nic.zero_copy", "ul0"), Severity::Warn);
    assert_eq!(severity(&r, "nic.zero_copy", "gwp-a"), Severity::Ok);
    assert_eq!(severity(&r, "nic.queues", "ul0"), Severity::Ok);
    for pod in ["gwp-a", "gwp-b"] {
        let f = one(&r, "pod.tx_checksum", pod);
        assert_eq!(f.severity, Severity::Ok, "{f:?}");
        assert!(f.message.contains("eth0 in netns ovp-ck1-p"), "{f:?}");
    }
    // Pods MTU 1450 + VXLAN 50 = 1500 = ul0's MTU.
    for peer in ["peer[0] n1", "peer[1] n2"] {
        let f = one(&r, "nic.mtu", peer);
        assert_eq!(f.severity, Severity::Ok, "{f:?}");
        assert!(f.message.contains("= 1500"), "{f:?}");
    }
    let good = write_config(&config, "good.toml");
    let (ok, stdout) = run_binary(&good);
    assert!(ok, "overpass check failed on a healthy bed");
    assert!(stdout.contains("summary:") && stdout.contains(" 0 BLOCKER"));

    // Broken 1: the underlay MTU cannot carry pod MTU 1450 + 50.
    bed.exec(&gw, &["ip", "link", "set", "dev", "ul0", "mtu", "1400"])
        .unwrap();
    // Broken 2: pod a's end of its veth has TX checksum offload on.
    bed.exec(
        &bed.ns(Ns::LocalPod('a')),
        &["ethtool", "-K", "eth0", "tx", "on"],
    )
    .unwrap();
    // Broken 3: pod b's host end is down.
    bed.exec(&gw, &["ip", "link", "set", "dev", "gwp-b", "down"])
        .unwrap();
    let r = check::inspect(&config);
    eprintln!("broken bed:\n{}", r.render());
    for peer in ["peer[0] n1", "peer[1] n2"] {
        let f = one(&r, "nic.mtu", peer);
        assert_eq!(f.severity, Severity::Blocker, "{f:?}");
        assert!(
            f.message.contains("ul0 MTU 1400") && f.message.contains("+ 50 (VXLAN) = 1500"),
            "{f:?}"
        );
        assert!(
            f.fix
                .as_deref()
                .unwrap()
                .contains("ip link set dev ul0 mtu 1500"),
            "{f:?}"
        );
    }
    let f = one(&r, "pod.tx_checksum", "gwp-a");
    assert_eq!(f.severity, Severity::Blocker, "{f:?}");
    assert!(f.fix.as_deref().unwrap().contains("ethtool -K eth0 tx off"));
    assert_eq!(severity(&r, "pod.tx_checksum", "gwp-b"), Severity::Ok);
    assert_eq!(severity(&r, "nic.up", "gwp-b"), Severity::Warn);
    assert_eq!(severity(&r, "nic.up", "ul0"), Severity::Ok);

    let (ok, stdout) = run_binary(&good);
    assert!(!ok, "overpass check must exit non-zero on blockers");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("BLOCKER") && l.contains("nic.mtu") && l.contains("fix:")),
        "{stdout}"
    );
    // The same findings as JSON, for scripts.
    let (ok, stdout) = run_binary_with(&good, &["--json"]);
    assert!(
        !ok,
        "overpass check --json must exit non-zero on blockers too"
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON on stdout");
    assert_eq!(
        v["summary"]["blocker"],
        r.count(Severity::Blocker) as u64,
        "{v}"
    );
    let findings = v["findings"].as_array().expect("findings array");
    assert_eq!(findings.len(), r.findings.len());
    assert!(
        findings.iter().any(|f| f["check"] == "pod.tx_checksum"
            && f["subject"] == "gwp-a"
            && f["severity"] == "blocker"),
        "{v}"
    );

    // Broken 4: configuration asks for what the host cannot give.
    bed.exec(&gw, &["ip", "link", "set", "dev", "ul0", "mtu", "1500"])
        .unwrap();
    let mut wrong = config.clone();
    wrong.underlay[0].bind_mode = BindMode::ZeroCopy;
    wrong.pod[1].interface = "gwp-z".to_string();
    wrong.gateway.cores = Some(vec![4096]);
    let r = check::inspect(&wrong);
    eprintln!("wrong configuration:\n{}", r.render());
    assert_eq!(severity(&r, "nic.zero_copy", "ul0"), Severity::Blocker);
    assert_eq!(severity(&r, "nic.exists", "gwp-z"), Severity::Blocker);
    assert_eq!(
        severity(&r, "cpu.cores", "gateway.cores"),
        Severity::Blocker
    );
    assert!(
        r.find("nic.mtu", None)
            .iter()
            .all(|f| f.severity == Severity::Ok),
        "{}",
        r.render()
    );

    // A namespace that does not exist.
    let mut nons = config.clone();
    nons.gateway.netns = Some("ovp-ck1-nope".to_string());
    let r = check::inspect(&nons);
    assert_eq!(severity(&r, "netns", "ovp-ck1-nope"), Severity::Blocker);

    bed.destroy().unwrap();
}

#[test]
fn check_flags_unserved_underlay_queues() {
    if !require_root("overpass check against a 2-queue test bed") {
        return;
    }
    let bed = Testbed::create(&TestbedSpec {
        tag: "ck2".to_string(),
        underlay_queues: 2,
    })
    .unwrap();
    // Default: one worker per active queue; the pod veths have one active
    // queue each, which the socket plan refuses (a blocker naming the pod).
    let config = bed.gateway_config();
    let r = check::inspect(&config);
    eprintln!("{}", r.render());
    assert_eq!(one(&r, "nic.queues", "ul0").severity, Severity::Ok);
    let plan = one(&r, "dataplane.ports", "plan");
    assert_eq!(plan.severity, Severity::Blocker, "{plan:?}");
    assert!(
        plan.message.contains("gwp-a") && plan.message.contains("needs exactly 2"),
        "{plan:?}"
    );
    // Serving one queue of two leaves the other's flows to the kernel (the
    // XDP program passes them, counted as unserved_queue): the gateway runs
    // and logs this same sentence, so check warns rather than blocks.
    let mut one_queue = config.clone();
    one_queue.underlay[0].queues = Some(1);
    let r = check::inspect(&one_queue);
    let f = one(&r, "nic.queues", "ul0");
    assert_eq!(f.severity, Severity::Warn, "{f:?}");
    assert_eq!(
        Some(f.message.as_str()),
        overpass::control::ports::unserved_queues("ul0", 2, 1).as_deref(),
        "{f:?}"
    );
    assert!(f.message.contains("unserved_queue"), "{f:?}");
    assert!(
        f.fix
            .as_deref()
            .unwrap()
            .contains("ethtool -L ul0 combined 1")
    );
    assert_eq!(one(&r, "dataplane.ports", "plan").severity, Severity::Ok);
    bed.destroy().unwrap();
}
