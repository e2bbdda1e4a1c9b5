//! What the tests that run the `overpass` binary as a service share: a
//! scratch directory with a token and a configuration, the spawned process
//! (its API address from stdout, its log in a file), signals, and
//! `/proc` facts about it.
#![allow(dead_code)] // each test file uses its own part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use overpass::api::client::Client;
use overpass_testkit::testbed::KillOnDrop;

pub const TOKEN: &str = "service-test-token-0123456789";

/// A scratch directory (removed on drop) holding `token` (mode 0600).
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("overpass-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(dir.join("token"))
            .unwrap();
        writeln!(f, "{TOKEN}").unwrap();
        Scratch { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// An `api-only` configuration: node1 (10.244.1.0/24), plus node2
    /// (10.244.2.0/24) with `second_peer`; the API on any free loopback
    /// port with this directory's token; `[state]` in `state` (with the
    /// extra `state_keys`, e.g. `on_corrupt = "set-aside"`) when given.
    pub fn config(&self, second_peer: bool, state: Option<(&Path, &str)>) -> String {
        self.config_with(second_peer, state, "")
    }

    /// As [`Scratch::config`], with `api_extra` added to the `[api]` section.
    pub fn config_with(
        &self,
        second_peer: bool,
        state: Option<(&Path, &str)>,
        api_extra: &str,
    ) -> String {
        let mut c = format!(
            r#"[gateway]
pod_cidr = "10.244.0.0/24"
underlay_ip = "198.18.0.1"
vtep_mac = "02:00:00:00:00:01"

[[underlay]]
interface = "ul0"

[[peer]]
name = "node1"
pod_cidr = "10.244.1.0/24"
underlay_ip = "198.18.0.11"
vtep_mac = "02:0b:00:00:00:01"

[api]
listen = "127.0.0.1:0"
token_file = "{}"
{api_extra}
"#,
            self.path("token").display()
        );
        if second_peer {
            c.push_str(
                r#"
[[peer]]
name = "node2"
pod_cidr = "10.244.2.0/24"
underlay_ip = "198.18.0.12"
vtep_mac = "02:0b:00:00:00:02"
"#,
            );
        }
        if let Some((dir, keys)) = state {
            c.push_str(&format!("\n[state]\ndir = \"{}\"\n{keys}\n", dir.display()));
        }
        c
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Replaces `path` atomically (as configuration management does), so a
/// process reading it at the same moment sees the old or the new file.
pub fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A running `overpass` (killed on drop): its API URL arrives from stdout.
pub struct Proc {
    pub child: KillOnDrop,
    pub log: PathBuf,
    url: mpsc::Receiver<String>,
}

impl Proc {
    /// Spawns `overpass ARGS` with `env`, stderr to `log`.
    pub fn spawn(args: &[&str], config: &Path, log: &Path, env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_overpass"));
        cmd.args(args)
            .arg("--config")
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawning overpass");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some(url) = line.strip_prefix("overpass: API listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        Proc {
            child: KillOnDrop(child),
            log: log.to_path_buf(),
            url: rx,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The exit status if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.0.try_wait().unwrap()
    }

    /// The API's URL once it listens; panics (with the log) if the process
    /// dies first or `timeout` passes.
    pub fn url(&mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            match self.url.recv_timeout(Duration::from_millis(20)) {
                Ok(url) => return url,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            if let Some(status) = self.exited() {
                panic!(
                    "overpass exited ({status}) before its API listened; log:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "overpass API not listening after {timeout:?}; log:\n{}",
                self.log_text()
            );
        }
    }

    /// Sends `sig` (e.g. `libc::SIGHUP`).
    pub fn signal(&self, sig: i32) {
        use nix::sys::signal::{Signal, kill};
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        kill(pid, Signal::try_from(sig).unwrap())
            .unwrap_or_else(|e| panic!("kill({pid}, {sig}): {e}"));
    }

    /// SIGTERM, then the exit status (bounded).
    pub fn terminate(mut self, timeout: Duration) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exited() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "overpass still running {timeout:?} after SIGTERM; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the process is the overpass binary (exec done) and
    /// catches `sig` (its handler is installed: /proc/PID/status SigCgt).
    /// Before that, no code of ours runs, so no code of ours can save it
    /// from a signal whose default action kills.
    pub fn wait_catches(&mut self, sig: i32, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !catches(self.pid(), sig) {
            if let Some(status) = self.exited() {
                panic!(
                    "overpass exited ({status}) during start; log:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "overpass does not catch signal {sig} after {timeout:?}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_micros(100));
        }
    }
}

/// Whether process `pid` runs the overpass binary and catches `sig`.
pub fn catches(pid: u32, sig: i32) -> bool {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm.trim() != "overpass" {
        return false; // not exec'd yet (or gone)
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (sig - 1)) != 0)
}

/// A client with the scratch token.
pub fn client(url: &str) -> Client {
    Client::new(url, Some(TOKEN.to_string()))
}

/// The prefixes of the route set the API serves.
pub fn prefixes(url: &str) -> Vec<String> {
    client(url)
        .routes()
        .expect("GET /api/v1/routes")
        .routes
        .iter()
        .map(|r| r.prefix.to_string())
        .collect()
}
