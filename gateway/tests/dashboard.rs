//! The web dashboard in a real browser: builds the network-namespace test
//! bed, starts the gateway with the API (and so the embedded dashboard) on
//! 127.0.0.1:<free port> with a token file, keeps real traffic flowing
//! (pings through the tunnels and between local pods), and runs the
//! browser tests of `web-ui/tests/` (`node --test`, playwright-core driving
//! Debian's headless Chromium; `npm ci` first). The tests save screenshots
//! to `target/screenshots/`; with `OVERPASS_UPDATE_SCREENSHOT=1` (or when
//! it is missing) the overview one is also copied to `docs/screenshot.png`.
//!
//! Needs root (fails under CI=true without it, skips loudly otherwise),
//! and `chromium`, `node` and `npm` (deploy/install-deps.sh installs them).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use overpass::api::{ApiState, Auth, Server};
use overpass::control::store::Store;
use overpass_testkit::testbed::{Ns, Testbed, TestbedSpec, require_root};

const CHROMIUM: &str = "/usr/bin/chromium";

/// Pings `dst` from `ns` in 5-second runs until `stop` is set.
fn ping_until(
    ns: String,
    dst: String,
    interval: &'static str,
    size: &'static str,
    stop: Arc<AtomicBool>,
) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut runs = 0;
        while !stop.load(Ordering::Relaxed) {
            let _ = Command::new("ip")
                .args([
                    "netns", "exec", &ns, "ping", "-n", "-q", "-i", interval, "-s", size, "-w",
                    "5", &dst,
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            runs += 1;
        }
        runs
    })
}

/// Stops the traffic when the test ends, however it ends.
struct Traffic {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<u64>>,
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn have(cmd: &str) -> bool {
    Command::new(cmd)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn dashboard_in_headless_chromium_against_live_gateway() {
    if !require_root("dashboard browser tests (network namespaces, XDP, AF_XDP, headless Chromium)")
    {
        return;
    }
    assert!(
        Path::new(CHROMIUM).exists() && have("node") && have("npm"),
        "the dashboard tests need {CHROMIUM}, node and npm: run deploy/install-deps.sh"
    );
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let web_ui = root.join("web-ui");

    // Test dependencies (playwright-core only: it drives the system
    // Chromium and never downloads a browser).
    let npm = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&web_ui)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .status()
        .expect("running npm ci");
    assert!(npm.success(), "npm ci in web-ui/ failed");

    let bed = Testbed::create(&TestbedSpec {
        tag: "ui1".to_string(),
        underlay_queues: 1,
    })
    .expect("building the test bed");
    let dir = std::env::temp_dir().join(format!("overpass-ui1-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // The token as production reads it: a file of mode 0600.
    let token = "dashboard-test-token-0123456789";
    let token_file = dir.join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let token = Auth::load_token(&token_file).unwrap();
    let store = Arc::new(Store::open(&dir.join("state")).unwrap());

    let gw = bed.start_gateway().expect("starting the gateway");
    let state = ApiState::new(
        gw.rib().clone().with_store(Some(store)),
        gw.view(),
        Auth::new(Some(token.clone()), false),
        1 << 20,
        "dataplane",
    );
    let server = Server::start("127.0.0.1:0".parse().unwrap(), state).unwrap();
    let url = format!("http://{}", server.addr);

    // Real traffic for the whole run: encap and decap through both VXLAN
    // nodes, pod to pod, and some that is dropped.
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = Traffic {
        threads: vec![
            ping_until(
                bed.ns(Ns::LocalPod('a')),
                bed.remote_pod_ip(1).to_string(),
                "0.02",
                "1000",
                stop.clone(),
            ),
            ping_until(
                bed.ns(Ns::NodePod(2)),
                bed.local_pod_ip('b').to_string(),
                "0.05",
                "200",
                stop.clone(),
            ),
            ping_until(
                bed.ns(Ns::LocalPod('a')),
                bed.local_pod_ip('b').to_string(),
                "0.1",
                "56",
                stop.clone(),
            ),
            // A destination no route covers: a few no_route drops a second.
            ping_until(
                bed.ns(Ns::LocalPod('a')),
                "10.244.99.9".to_string(),
                "0.5",
                "56",
                stop.clone(),
            ),
        ],
        stop,
    };
    std::thread::sleep(Duration::from_secs(2));

    let shots = root.join("target/screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let docs_shot = root.join("docs/screenshot.png");
    let update_docs =
        std::env::var("OVERPASS_UPDATE_SCREENSHOT").as_deref() == Ok("1") || !docs_shot.exists();
    let mut node = Command::new("timeout");
    node.args([
        "-k",
        "10",
        "900",
        "node",
        "--test",
        "--test-reporter=spec",
        "tests/dashboard.test.mjs",
    ])
    .current_dir(&web_ui)
    .env("OVERPASS_URL", &url)
    .env("OVERPASS_TOKEN", &token)
    .env("OVERPASS_SCREENSHOTS", &shots)
    .env("CHROMIUM", CHROMIUM);
    if update_docs {
        node.env("OVERPASS_DOCS_SCREENSHOT", &docs_shot);
    }
    let status = node.status().expect("running node --test");

    drop(traffic);
    server.stop();
    gw.stop();
    drop(bed);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        status.success(),
        "the dashboard's browser tests failed ({status}); screenshots in {}",
        shots.display()
    );
    eprintln!("dashboard: screenshots in {}", shots.display());
}
