//! The deployable appliance's files (deploy/): the example configuration
//! documents every option and validates, the Kubernetes ConfigMap carries
//! it verbatim, the systemd unit is hardened and accepted by
//! `systemd-analyze verify`, and deploy/install.sh installs and uninstalls
//! into a staging root. (The Debian package itself is built, installed and
//! purged by deploy/test-deploy.sh, run by deploy/test.sh as root.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use overpass::config::Config;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(deploy().join(name)).unwrap_or_else(|e| panic!("deploy/{name}: {e}"))
}

/// The example with every `# key = value` line and `# [section]` header
/// uncommented: a configuration that sets every option.
fn uncomment_all(text: &str) -> String {
    text.lines()
        .map(|l| {
            let body = l.strip_prefix("# ").unwrap_or(l);
            let is_key = body.split_once(" = ").is_some_and(|(k, _)| {
                !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
            });
            let is_header = body.starts_with('[') && body.trim_end().ends_with(']');
            if l.starts_with("# ") && (is_key || is_header) {
                body.to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn keys(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn example_config_validates_and_documents_every_option() {
    let text = read("overpass.toml");
    // As shipped (the package's default conffile): valid.
    let shipped = Config::from_toml(&text).unwrap_or_else(|e| panic!("deploy/overpass.toml: {e}"));
    assert_eq!(
        shipped.state.as_ref().map(|s| s.dir.clone()),
        Some(PathBuf::from("/var/lib/overpass")),
        "the default config keeps state in the unit's StateDirectory"
    );
    // Every optional key uncommented: still valid (no typos, no unknown keys).
    let full_text = uncomment_all(&text);
    let full = Config::from_toml(&full_text)
        .unwrap_or_else(|e| panic!("deploy/overpass.toml with every option set: {e}\n{full_text}"));
    // Every field of every table is documented: the configuration's own
    // serialisation (Options serialise as null) has no key the file lacks.
    let ours = serde_json::to_value(&full).unwrap();
    let file: toml::Value = toml::from_str(&full_text).unwrap();
    let file = serde_json::to_value(&file).unwrap();
    assert_eq!(keys(&ours), keys(&file), "top-level sections");
    for table in ["gateway", "api", "state", "attach"] {
        assert_eq!(
            keys(&ours[table]),
            keys(&file[table]),
            "[{table}]: keys of Config vs keys documented in deploy/overpass.toml"
        );
    }
    for array in ["underlay", "pod", "peer", "cluster"] {
        assert_eq!(
            keys(&ours[array][0]),
            keys(&file[array][0]),
            "[[{array}]]: keys of Config vs keys documented in deploy/overpass.toml"
        );
    }
}

#[test]
fn k8s_configmap_carries_the_example_config() {
    let cm = read("k8s/configmap.yaml");
    let (_, body) = cm
        .split_once("  overpass.toml: |\n")
        .expect("configmap has data.overpass.toml");
    let unindented: String = body
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        unindented.trim_end(),
        read("overpass.toml").trim_end(),
        "deploy/k8s/configmap.yaml must embed deploy/overpass.toml verbatim"
    );
    // The manifests are YAML (when python3 with PyYAML is around to say so).
    let py = Command::new("python3")
        .args([
            "-c",
            "import sys, yaml\nfor f in sys.argv[1:]: list(yaml.safe_load_all(open(f)))",
        ])
        .args(
            [
                "namespace.yaml",
                "configmap.yaml",
                "daemonset.yaml",
                "kustomization.yaml",
            ]
            .map(|f| deploy().join("k8s").join(f)),
        )
        .output();
    if let Ok(out) = py {
        let err = String::from_utf8_lossy(&out.stderr);
        if !err.contains("No module named") {
            assert!(out.status.success(), "YAML: {err}");
        }
    }
    let ds = read("k8s/daemonset.yaml");
    for needle in [
        "hostNetwork: true",
        "overpass.io/gateway",
        "/sys/fs/bpf",
        "/var/lib/overpass",
        "NET_ADMIN",
        "BPF",
        "IPC_LOCK",
        "NET_RAW",
        "SYS_ADMIN",
    ] {
        assert!(ds.contains(needle), "daemonset.yaml lacks {needle}");
    }
}

#[test]
fn unit_is_hardened() {
    let unit = read("overpass.service");
    let directives: Vec<&str> = unit
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .collect();
    let has = |d: &str| directives.contains(&d);
    for d in [
        "ExecStart=/usr/bin/overpass run --config /etc/overpass/overpass.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        // Started means serving (READY=1), and a wedged worker restarts it.
        "Type=notify",
        "NotifyAccess=main",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "StateDirectory=overpass",
        "ConfigurationDirectory=overpass",
        "LimitMEMLOCK=infinity",
        "StandardError=journal",
    ] {
        assert!(has(d), "overpass.service lacks {d}");
    }
    let caps: BTreeSet<&str> = directives
        .iter()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("CapabilityBoundingSet")
        .split_whitespace()
        .collect();
    assert_eq!(
        caps,
        BTreeSet::from([
            "CAP_NET_ADMIN",
            "CAP_NET_RAW",
            "CAP_BPF",
            "CAP_SYS_ADMIN",
            "CAP_IPC_LOCK"
        ])
    );
    assert!(directives.iter().any(|l| l.starts_with("RestartSec=")));
    assert!(
        directives.iter().any(|l| l.starts_with("WatchdogSec=")),
        "overpass.service lacks WatchdogSec="
    );
}

#[test]
fn unit_file_descriptor_limit_holds_the_api_cap_and_the_dataplane() {
    let unit = read("overpass.service");
    let limit: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("LimitNOFILE="))
        .expect("overpass.service sets LimitNOFILE (the API's connections and the dataplane's sockets share it)")
        .trim()
        .parse()
        .expect("LimitNOFILE is a number");
    let need = overpass::config::ApiConfig::default().max_connections as u64
        + overpass::api::server::RESERVED_DESCRIPTORS;
    assert!(
        limit >= need,
        "LimitNOFILE={limit} is below the default api.max_connections plus the dataplane's share ({need})"
    );
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "systemd-analyze missing (deploy/install-deps.sh installs systemd)"
        );
        eprintln!("SKIPPED: no systemd-analyze");
        return;
    }
    // verify checks that ExecStart's binary exists: point it at the one
    // cargo built (the installed path is verified by deploy/test-deploy.sh).
    let dir = std::env::temp_dir().join(format!("overpass-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let unit = dir.join("overpass.service");
    std::fs::write(
        &unit,
        read("overpass.service").replace("/usr/bin/overpass", env!("CARGO_BIN_EXE_overpass")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {err}");
    // verify also prints warnings without failing: there must be none about our unit.
    assert!(
        !err.contains("overpass.service"),
        "systemd-analyze verify complained:\n{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn install_script_stages_and_removes() {
    let stage = std::env::temp_dir().join(format!("overpass-stage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&stage);
    let script = deploy().join("install.sh");
    let run = |args: &[&str]| {
        let out = Command::new("bash")
            .arg(&script)
            .args(args)
            .arg("--destdir")
            .arg(&stage)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "install.sh {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["install", "--binary", env!("CARGO_BIN_EXE_overpass")]);
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| {
        std::fs::metadata(stage.join(p))
            .unwrap_or_else(|e| panic!("{p}: {e}"))
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("usr/local/bin/overpass"), 0o755);
    assert_eq!(mode("etc/overpass"), 0o750);
    assert_eq!(mode("etc/overpass/overpass.toml"), 0o640);
    assert_eq!(mode("var/lib/overpass"), 0o700);
    assert_eq!(mode("etc/systemd/system/overpass.service"), 0o644);
    let unit = std::fs::read_to_string(stage.join("etc/systemd/system/overpass.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/usr/local/bin/overpass run --config /etc/overpass/overpass.toml")
    );
    // A second install keeps an edited configuration.
    std::fs::write(stage.join("etc/overpass/overpass.toml"), "# mine\n").unwrap();
    run(&["install", "--binary", env!("CARGO_BIN_EXE_overpass")]);
    assert_eq!(
        std::fs::read_to_string(stage.join("etc/overpass/overpass.toml")).unwrap(),
        "# mine\n"
    );
    run(&["uninstall"]);
    assert!(!stage.join("usr/local/bin/overpass").exists());
    assert!(!stage.join("etc/systemd/system/overpass.service").exists());
    assert!(stage.join("etc/overpass/overpass.toml").exists());
    assert!(stage.join("var/lib/overpass").exists());
    run(&["uninstall", "--purge"]);
    assert!(!stage.join("etc/overpass").exists());
    assert!(!stage.join("var/lib/overpass").exists());
    std::fs::remove_dir_all(&stage).unwrap();
}
