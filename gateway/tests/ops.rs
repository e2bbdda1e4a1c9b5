//! Operating the binary as systemd does: `overpass run --config`, SIGHUP
//! reloads (hitless; an invalid file is refused and forwarding goes on),
//! SIGTERM stops gracefully (no XDP program left, route set persisted).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use overpass::config::{Config, StateConfig};
use overpass::control::store::RoutesFile;
use overpass_testkit::testbed::{
    KillOnDrop, Ns, PingOpts, Testbed, TestbedSpec, require_root, wait_until,
};

fn routes_file(state: &Path) -> RoutesFile {
    let text = std::fs::read_to_string(state.join("routes.json")).expect("routes.json written");
    serde_json::from_str(&text).expect("routes.json parses")
}

fn signal(child: &Child, sig: &str) {
    let st = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

/// A ping flood in the background: (transmitted, received) when done.
fn flood(
    bed: &Testbed,
    from: &str,
    to: std::net::Ipv4Addr,
    count: u32,
) -> std::thread::JoinHandle<(u32, u32, String)> {
    let ns = from.to_string();
    let ping = bed.ping_command(&ns, to, count, 0.005);
    std::thread::spawn(move || {
        let out = Command::new(&ping[0]).args(&ping[1..]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or_default()
            .to_string();
        let nums: Vec<u32> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|s| s.parse().ok())
            .collect();
        (
            nums.first().copied().unwrap_or(0),
            nums.get(1).copied().unwrap_or(0),
            text,
        )
    })
}

#[test]
fn sighup_reloads_hitlessly_and_sigterm_stops_cleanly() {
    if !require_root("SIGHUP/SIGTERM test (network namespaces, XDP)") {
        return;
    }
    let bed = Testbed::create(&TestbedSpec {
        tag: "op1".to_string(),
        underlay_queues: 1,
    })
    .expect("building the test bed");
    let dir: PathBuf = std::env::temp_dir().join(format!("overpass-op1-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state");
    let mut config: Config = bed.gateway_config();
    config.state = Some(StateConfig::new(&state));
    let path = dir.join("overpass.toml");
    std::fs::write(&path, config.to_toml()).unwrap();

    let log_path = dir.join("overpass.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_overpass"))
            .args(["run", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning overpass run"),
    );
    let gw_ns = bed.ns(Ns::Gateway);
    let attached = |dev: &str| bed.link_xdp_attached(&gw_ns, dev).unwrap();
    wait_until("overpass run attached XDP", Duration::from_secs(15), || {
        attached("ul0")
    });
    let pod = bed.ns(Ns::LocalPod('a'));
    wait_until(
        "traffic flows through overpass run",
        Duration::from_secs(10),
        || {
            bed.ping(&pod, bed.remote_pod_ip(1), 1, &PingOpts::default())
                .map(|r| r.all_received())
                .unwrap_or(false)
        },
    );
    let gen0 = routes_file(&state).generation;

    // 1. A changed route set under traffic: a new prefix for node 2.
    let traffic = flood(&bed, &pod, bed.remote_pod_ip(1), 600);
    std::thread::sleep(Duration::from_millis(500));
    let mut changed = config.clone();
    let mut extra = changed.peer[1].clone();
    extra.pod_cidr = "10.245.2.0/24".parse().unwrap();
    extra.name = "n2-extra".to_string();
    // A second prefix to the same node shares its tunnel settings.
    changed.peer.push(extra);
    std::fs::write(&path, changed.to_toml()).unwrap();
    signal(&child, "HUP");
    wait_until("the reload persisted", Duration::from_secs(5), || {
        routes_file(&state).generation > gen0
    });
    let after = routes_file(&state);
    assert!(
        after
            .routes
            .iter()
            .any(|r| r.prefix.to_string() == "10.245.2.0/24"),
        "the new prefix is in the persisted set"
    );

    // 2. An invalid file: refused, running configuration kept.
    std::fs::write(
        &path,
        changed.to_toml().replace("[[peer]]", "[[peer]]\nvnii = 3"),
    )
    .unwrap();
    signal(&child, "HUP");
    std::thread::sleep(Duration::from_millis(500));
    let (sent, received, raw) = traffic.join().unwrap();
    assert!(sent >= 600, "{raw}");
    assert_eq!(received, sent, "packets lost across the reloads:\n{raw}");
    assert_eq!(
        routes_file(&state).generation,
        after.generation,
        "the refused file changed nothing"
    );
    let mut text = String::new();
    std::fs::File::open(&log_path)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert!(text.contains("configuration reloaded"), "{text}");
    assert!(
        text.contains("reload refused") && text.contains("vnii"),
        "the log names the bad key:\n{text}"
    );
    let r = bed
        .ping(&pod, bed.remote_pod_ip(2), 3, &PingOpts::default())
        .unwrap();
    assert!(
        r.all_received(),
        "still forwarding after the refused reload: {}",
        r.raw
    );

    // 3. SIGTERM: graceful stop.
    signal(&child, "TERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    for dev in ["ul0", "gwp-a", "gwp-b"] {
        assert!(!attached(dev), "XDP still attached to {dev} after SIGTERM");
    }
    let last = routes_file(&state);
    assert_eq!(last.generation, after.generation);
    assert_eq!(
        last.routes, after.routes,
        "the route set in force is persisted"
    );
    let mut text = String::new();
    std::fs::File::open(&log_path)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    assert!(text.contains("route set persisted"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
