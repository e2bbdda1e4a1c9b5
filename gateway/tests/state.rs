//! The state dir when things go wrong, with the real binary and real
//! files: a `routes.json` that cannot be used stops the start with the file
//! and the recovery named, and changes nothing; `[state] on_corrupt =
//! "set-aside"` keeps the bad file aside (never deleted) and starts from the
//! configuration's set; a temporary file an interrupted write left is
//! removed at start; a full disk (a real tmpfs, filled) answers API writes
//! with 507 naming the cause and the file, a read-only state dir with 500,
//! and nothing changes: not the route set served, not its generation, not a
//! byte of `routes.json`, and no temporary file is left.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Proc, Scratch, client, prefixes};
use overpass::api::ErrorBody;
use overpass::config::Config;
use overpass_testkit::testbed::{Ns, Testbed, TestbedSpec, require_root, wait_until};

/// Runs `overpass ARGS --config CFG` to its end (it must not start):
/// (success, stderr).
fn run_to_end(args: &[&str], cfg: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_overpass"))
        .args(args)
        .arg("--config")
        .arg(cfg)
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The `routes.json.corrupt-*` files in `dir`.
fn set_aside(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("routes.json.corrupt-"))
        })
        .collect();
    v.sort();
    v
}

/// What a refused start must say: the file, the problem, the recovery.
fn assert_names_file_and_recovery(stderr: &str, file: &Path, cfg: &Path, problem: &str) {
    for needle in [
        &file.display().to_string(),
        problem,
        "on_corrupt = \"set-aside\"",
        "[state]",
        &cfg.display().to_string(),
        &format!("mv {}", file.display()),
    ] {
        assert!(
            stderr.contains(needle),
            "the error lacks {needle:?}:\n{stderr}"
        );
    }
}

#[test]
fn an_unusable_routes_json_stops_the_start_naming_file_and_recovery() {
    let s = Scratch::new("state-bad");
    let state = s.path("state");
    std::fs::create_dir_all(&state).unwrap();
    let file = state.join("routes.json");
    let cfg = s.path("overpass.toml");
    std::fs::write(&cfg, s.config(false, Some((&state, "")))).unwrap();
    for (text, problem) in [
        (
            "{\"version\": 1, \"generation\": 4, \"rou",
            "not a route set",
        ),
        (
            r#"{"version": 7, "generation": 4, "routes": []}"#,
            "version 7 is not supported",
        ),
        // JSON of the right version whose set no longer validates.
        (
            r#"{"version": 1, "generation": 4, "routes": [{"prefix": "10.244.9.0/24",
                "node": {"name": "n9", "underlay_ip": "198.18.0.19", "vni": 16777216,
                         "vtep_mac": "02:00:00:00:00:09"}}]}"#,
            "routes[0].node.vni",
        ),
    ] {
        std::fs::write(&file, text).unwrap();
        for mode in ["api-only", "run"] {
            if mode == "run" && problem.starts_with("routes[") {
                continue; // `run` validates against the host: see the test bed test
            }
            let (ok, stderr) = run_to_end(&[mode], &cfg);
            assert!(!ok, "{mode} started on a bad routes.json");
            assert_names_file_and_recovery(&stderr, &file, &cfg, problem);
            assert_eq!(
                std::fs::read_to_string(&file).unwrap(),
                text,
                "the bad file is left as it was"
            );
            assert!(set_aside(&state).is_empty());
        }
    }
}

#[test]
fn set_aside_keeps_the_bad_file_and_starts_from_the_configuration() {
    let s = Scratch::new("state-aside");
    let state = s.path("state");
    std::fs::create_dir_all(&state).unwrap();
    let file = state.join("routes.json");
    let cfg = s.path("overpass.toml");
    std::fs::write(
        &cfg,
        s.config(false, Some((&state, "on_corrupt = \"set-aside\""))),
    )
    .unwrap();
    for (i, bad) in [
        "\u{0}\u{0}\u{0} torn",
        r#"{"version": 1, "generation": 9, "routes": [{"prefix": "10.244.0.0/16",
            "node": {"name": "n", "underlay_ip": "198.18.0.19", "vtep_mac": "02:00:00:00:00:09"}}]}"#,
    ]
    .into_iter()
    .enumerate()
    {
        std::fs::write(&file, bad).unwrap();
        let mut p = Proc::spawn(&["api-only"], &cfg, &s.path(&format!("aside{i}.log")), &[]);
        let url = p.url(Duration::from_secs(20));
        // The configuration's set, at generation 1.
        let set = client(&url).routes().unwrap();
        assert_eq!(set.generation, 1);
        assert_eq!(prefixes(&url), ["10.244.1.0/24"]);
        // The bad file is kept, byte for byte, beside the new routes.json.
        let aside = set_aside(&state);
        assert_eq!(aside.len(), i + 1, "{aside:?}");
        let kept = aside
            .iter()
            .find(|p| std::fs::read_to_string(p).unwrap() == bad)
            .unwrap_or_else(|| panic!("the bad file is not among {aside:?}"));
        let log = p.log_text();
        assert!(
            log.contains("ERROR")
                && log.contains(&file.display().to_string())
                && log.contains(&kept.display().to_string()),
            "the set-aside is logged loudly, naming both files:\n{log}"
        );
        // The state dir holds the set in force again.
        let now: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        assert_eq!(now["generation"], 1);
        assert_eq!(now["routes"][0]["prefix"], "10.244.1.0/24");
        assert!(p.terminate(Duration::from_secs(10)).success());
    }
}

#[test]
fn a_stale_temp_file_is_removed_at_start() {
    let s = Scratch::new("state-tmp");
    let state = s.path("state");
    std::fs::create_dir_all(&state).unwrap();
    let cfg = s.path("overpass.toml");
    std::fs::write(&cfg, s.config(false, Some((&state, "")))).unwrap();
    // What a crash between create and rename leaves.
    let tmp = state.join(".routes.json.tmp");
    std::fs::write(&tmp, "{\"version\": 1, \"gener").unwrap();
    let mut p = Proc::spawn(&["api-only"], &cfg, &s.path("tmp.log"), &[]);
    let url = p.url(Duration::from_secs(20));
    assert_eq!(prefixes(&url), ["10.244.1.0/24"]);
    assert!(!tmp.exists(), "the stale temp file is still there");
    let log = p.log_text();
    assert!(
        log.contains("removed the temporary file") && log.contains(".routes.json.tmp"),
        "{log}"
    );
    assert!(p.terminate(Duration::from_secs(10)).success());
}

/// A tmpfs mounted on `dir` for the test's life (unmounted on drop).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount -t tmpfs on {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `dir` with `dir/filler` until ENOSPC.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0xa5u8; 4096];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", dir.display()),
        }
    }
    let _ = f.sync_all();
    path
}

#[test]
fn a_full_or_read_only_state_dir_answers_5xx_naming_the_cause_and_changes_nothing() {
    if !require_root("a full state dir (mounts a tmpfs)") {
        return;
    }
    let s = Scratch::new("state-full");
    let state = s.path("state");
    let _fs = Tmpfs::mount(&state, "256k");
    let file = state.join("routes.json");
    let cfg = s.path("overpass.toml");
    std::fs::write(&cfg, s.config(false, Some((&state, "")))).unwrap();
    let mut p = Proc::spawn(&["api-only"], &cfg, &s.path("full.log"), &[]);
    let url = p.url(Duration::from_secs(20));
    let c = client(&url);
    let node = |prefix: &str, n: u8| {
        format!(
            r#"{{"prefix": "{prefix}", "node": {{"name": "n{n}", "underlay_ip": "198.18.0.{n}",
                 "vtep_mac": "02:00:00:00:00:{n:02x}"}}}}"#
        )
    };
    // With room: accepted.
    let r = c
        .request(
            "POST",
            "/api/v1/routes",
            Some(&node("10.244.5.0/24", 15)),
            None,
        )
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let gen_before = c.routes().unwrap().generation;
    let bytes_before = std::fs::read(&file).unwrap();

    let filler = fill(&state);
    // Every kind of write: one route, a route replaced, a whole set.
    let whole = format!(r#"{{"routes": [{}]}}"#, node("10.244.7.0/24", 17));
    for (method, path, body) in [
        (
            "POST",
            "/api/v1/routes".to_string(),
            node("10.244.6.0/24", 16),
        ),
        (
            "PUT",
            "/api/v1/routes/10.244.5.0/24".to_string(),
            node("10.244.5.0/24", 18),
        ),
        ("PUT", "/api/v1/routes".to_string(), whole),
        (
            "DELETE",
            "/api/v1/routes/10.244.5.0/24".to_string(),
            String::new(),
        ),
    ] {
        let body = (!body.is_empty()).then_some(body.as_str());
        let r = c.request(method, &path, body, None).unwrap();
        assert_eq!(r.status, 507, "{method} {path}: {}", r.body);
        let e: ErrorBody = serde_json::from_str(&r.body).unwrap();
        assert_eq!(e.error.field, "store");
        for needle in ["No space left on device", &file.display().to_string()] {
            assert!(
                e.error.message.contains(needle),
                "{method} {path}: the message lacks {needle:?}: {}",
                e.error.message
            );
        }
        // Nothing changed: served set and generation, the file, no temp file.
        let now = c.routes().unwrap();
        assert_eq!(now.generation, gen_before, "{method} {path}");
        assert_eq!(prefixes(&url), ["10.244.1.0/24", "10.244.5.0/24"]);
        assert_eq!(
            std::fs::read(&file).unwrap(),
            bytes_before,
            "{method} {path}"
        );
        assert!(
            !state.join(".routes.json.tmp").exists(),
            "{method} {path}: a temp file was left behind"
        );
    }
    assert!(p.exited().is_none(), "{}", p.log_text());
    // Room again: writes go through.
    std::fs::remove_file(&filler).unwrap();
    let r = c
        .request(
            "POST",
            "/api/v1/routes",
            Some(&node("10.244.6.0/24", 16)),
            None,
        )
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(c.routes().unwrap().generation, gen_before + 1);
    let gen_before = gen_before + 1;
    let bytes_before = std::fs::read(&file).unwrap();

    // An unwritable state dir: a read-only bind mount over it (as root,
    // permissions do not stop us; a read-only mount does).
    let ro = ReadOnly::bind(&state);
    let r = c
        .request("DELETE", "/api/v1/routes/10.244.6.0/24", None, None)
        .unwrap();
    assert_eq!(r.status, 500, "{}", r.body);
    let e: ErrorBody = serde_json::from_str(&r.body).unwrap();
    assert_eq!(e.error.field, "store");
    for needle in ["Read-only file system", &file.display().to_string()] {
        assert!(
            e.error.message.contains(needle),
            "the message lacks {needle:?}: {}",
            e.error.message
        );
    }
    assert_eq!(c.routes().unwrap().generation, gen_before);
    assert!(prefixes(&url).contains(&"10.244.6.0/24".to_string()));
    drop(ro);
    assert_eq!(std::fs::read(&file).unwrap(), bytes_before);
    assert!(!state.join(".routes.json.tmp").exists());
    assert!(p.terminate(Duration::from_secs(10)).success());
}

/// A read-only bind mount of a directory over itself (unmounted on drop).
struct ReadOnly(PathBuf);

impl ReadOnly {
    fn bind(dir: &Path) -> ReadOnly {
        for args in [&["--bind"][..], &["-o", "remount,bind,ro"][..]] {
            let st = Command::new("mount")
                .args(args)
                .args([dir, dir])
                .status()
                .unwrap();
            assert!(st.success(), "mount {args:?} {}", dir.display());
        }
        ReadOnly(dir.to_path_buf())
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn run_with_a_set_that_no_longer_validates_fails_or_sets_it_aside() {
    if !require_root("`overpass run` on a test bed (network namespaces, XDP)") {
        return;
    }
    let bed = Testbed::create(&TestbedSpec {
        tag: "h15c3".to_string(),
        underlay_queues: 1,
    })
    .expect("building the test bed");
    let s = Scratch::new("state-run");
    let state = s.path("state");
    std::fs::create_dir_all(&state).unwrap();
    let file = state.join("routes.json");
    // Persisted earlier, when the host had a veth gwp-c: gone now.
    let stale = r#"{"version": 1, "generation": 12, "routes": [{"prefix": "10.244.0.9/32",
        "pod": {"name": "gone", "interface": "gwp-c", "mac": "02:00:00:00:00:09"}}]}"#;
    std::fs::write(&file, stale).unwrap();
    let mut config: Config = bed.gateway_config();
    let cfg = s.path("overpass.toml");
    let gw_ns = bed.ns(Ns::Gateway);

    config.state = Some(overpass::config::StateConfig::new(&state));
    std::fs::write(&cfg, config.to_toml()).unwrap();
    let (ok, stderr) = run_to_end(&["run"], &cfg);
    assert!(
        !ok,
        "run started with a persisted set that does not validate"
    );
    assert_names_file_and_recovery(&stderr, &file, &cfg, "routes[0].pod.interface");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), stale);
    assert!(
        !bed.link_xdp_attached(&gw_ns, "ul0").unwrap(),
        "nothing was attached"
    );

    config.state.as_mut().unwrap().on_corrupt = overpass::config::OnCorrupt::SetAside;
    // The API, to see what is served.
    config.api = Some(overpass::config::ApiConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    });
    std::fs::write(&cfg, config.to_toml()).unwrap();
    let mut p = Proc::spawn(&["run"], &cfg, &s.path("run.log"), &[]);
    let url = p.url(Duration::from_secs(30));
    wait_until("XDP attached", Duration::from_secs(10), || {
        bed.link_xdp_attached(&gw_ns, "ul0").unwrap()
    });
    let set = client(&url).routes().unwrap();
    assert_eq!(set.generation, 1, "the configuration's set");
    assert!(
        set.routes
            .iter()
            .all(|r| r.prefix.to_string() != "10.244.0.9/32")
    );
    let aside = set_aside(&state);
    assert_eq!(aside.len(), 1);
    assert_eq!(std::fs::read_to_string(&aside[0]).unwrap(), stale);
    assert!(p.terminate(Duration::from_secs(20)).success());
}
