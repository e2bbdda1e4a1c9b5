//! The guest tier from Rust: a QEMU guest (TCG) whose NIC can do AF_XDP
//! zero-copy, linked through a tap to a network namespace of the test, in
//! which host binaries run (`deploy/guest/run.sh`; `deploy/guest/install.sh`
//! installs QEMU and the guest kernel).
//!
//! A test makes a [`PeerNs`] (the host side of the link), starts a
//! [`GuestRun`] with a command (e.g. `overpass-guest-probe`, or a test binary
//! of the workspace: the host's root is the guest's, read-only), talks to the
//! guest from the peer namespace while it runs, and reads its output and exit
//! status from [`GuestRun::wait`].

use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The repository's root (where `deploy/` is).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives in the workspace")
        .to_path_buf()
}

/// Runs `deploy/guest/install.sh` once per process (a no-op in a fraction
/// of a second when QEMU and the guest kernel are in place). Needs root.
pub fn install() -> anyhow::Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let script = repo_root().join("deploy/guest/install.sh");
        let out = Command::new(&script)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} failed ({}): {}{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// The guest's NIC model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nic {
    /// virtio-net-pci with `disable-legacy=on,iommu_platform=on` (driver
    /// `virtio_net`, zero-copy from Linux 6.13).
    Virtio,
    /// QEMU's igb, an Intel 82576 (driver `igb`, zero-copy from Linux 6.14).
    Igb,
}

impl Nic {
    /// The name `run.sh --nic` takes.
    pub const fn as_str(self) -> &'static str {
        match self {
            Nic::Virtio => "virtio",
            Nic::Igb => "igb",
        }
    }

    /// The guest driver's name, as `ethtool -i` reports it.
    pub const fn driver(self) -> &'static str {
        match self {
            Nic::Virtio => "virtio_net",
            Nic::Igb => "igb",
        }
    }
}

/// How to start a guest.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    pub nic: Nic,
    /// The (existing) namespace the tap goes into.
    pub netns: String,
    /// The tap's name (at most 15 bytes).
    pub tap: String,
    /// IPv4 address (CIDR) on the tap, if any.
    pub host_addr: Option<String>,
    /// A bridge (in `netns`) to enslave the tap to, if any: a test bed's
    /// underlay switch, which puts the guest's NIC on the bed's underlay.
    pub bridge: Option<String>,
    /// IPv4 address (CIDR) on the guest's NIC (`eth0`), if any.
    pub guest_addr: Option<String>,
    /// The guest NIC's MAC.
    pub mac: String,
    /// The guest is killed after this long.
    pub timeout: Duration,
    /// Guest memory, MiB.
    pub mem_mb: u32,
}

impl GuestSpec {
    /// A guest with `nic` whose tap `ovg{tag}` sits in `netns`, 192.0.2.1/24
    /// on the tap and 192.0.2.2/24 on the guest, MAC 52:54:00:4f:56:02,
    /// 512 MiB, killed after 240 s.
    pub fn new(nic: Nic, netns: &str, tag: &str) -> GuestSpec {
        GuestSpec {
            nic,
            netns: netns.to_string(),
            tap: format!("ovg{tag}"),
            host_addr: Some(HOST_ADDR.to_string() + "/24"),
            bridge: None,
            guest_addr: Some(GUEST_ADDR.to_string() + "/24"),
            mac: GUEST_MAC.to_string(),
            timeout: Duration::from_secs(240),
            mem_mb: 512,
        }
    }
}

/// The tap's address in [`GuestSpec::new`].
pub const HOST_ADDR: &str = "192.0.2.1";
/// The guest's address in [`GuestSpec::new`].
pub const GUEST_ADDR: &str = "192.0.2.2";
/// The guest NIC's MAC in [`GuestSpec::new`].
pub const GUEST_MAC: &str = "52:54:00:4f:56:02";

/// A guest running one command.
#[derive(Debug)]
pub struct GuestRun {
    child: Option<Child>,
    started: Instant,
    stdout: Option<std::thread::JoinHandle<String>>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

/// What a guest's command printed, and how it ended.
#[derive(Debug)]
pub struct GuestOutput {
    /// The command's exit status as `run.sh` returns it (124: the guest
    /// timed out; 125: the guest failed before or around the command).
    pub status: ExitStatus,
    /// The command's stdout and stderr, merged.
    pub output: String,
    /// `run.sh`'s own messages (the guest console on failure).
    pub stderr: String,
    /// From start to the guest's end: boot, command, power-off.
    pub elapsed: Duration,
}

impl GuestRun {
    /// Starts `deploy/guest/run.sh` for `spec` with `command` (the guest runs
    /// it in the current directory of this process, on the host's root).
    pub fn spawn(spec: &GuestSpec, command: &[&str]) -> anyhow::Result<GuestRun> {
        let script = repo_root().join("deploy/guest/run.sh");
        let mut cmd = Command::new(&script);
        cmd.args(["--nic", spec.nic.as_str()])
            .args(["--netns", &spec.netns])
            .args(["--tap", &spec.tap])
            .args(["--mac", &spec.mac])
            .args(["--mem", &spec.mem_mb.to_string()])
            .args(["--timeout", &spec.timeout.as_secs().to_string()]);
        if let Some(a) = &spec.host_addr {
            cmd.args(["--host-addr", a]);
        }
        if let Some(b) = &spec.bridge {
            cmd.args(["--bridge", b]);
        }
        if let Some(a) = &spec.guest_addr {
            cmd.args(["--guest-addr", a]);
        }
        cmd.arg("--")
            .args(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: dropping a run stops QEMU too.
            .process_group(0);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", script.display()))?;
        let reader = |mut r: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut s = Vec::new();
                let _ = r.read_to_end(&mut s);
                String::from_utf8_lossy(&s).into_owned()
            })
        };
        let stdout = child.stdout.take().map(|o| reader(Box::new(o)));
        let stderr = child.stderr.take().map(|e| reader(Box::new(e)));
        Ok(GuestRun {
            child: Some(child),
            started: Instant::now(),
            stdout,
            stderr,
        })
    }

    /// Whether the guest has stopped.
    pub fn finished(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| !matches!(c.try_wait(), Ok(None)))
    }

    /// Waits for the guest to stop and returns what its command printed.
    pub fn wait(mut self) -> anyhow::Result<GuestOutput> {
        let Some(mut child) = self.child.take() else {
            bail!("guest already waited for");
        };
        let status = child.wait().context("waiting for run.sh")?;
        let elapsed = self.started.elapsed();
        let join = |h: Option<std::thread::JoinHandle<String>>| {
            h.map(|h| h.join().unwrap_or_default()).unwrap_or_default()
        };
        Ok(GuestOutput {
            status,
            output: join(self.stdout.take()),
            stderr: join(self.stderr.take()),
            elapsed,
        })
    }
}

impl Drop for GuestRun {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child
            && matches!(child.try_wait(), Ok(None))
        {
            // The whole group: run.sh, timeout, QEMU. run.sh's trap removes
            // the tap.
            let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGTERM);
            let _ = child.wait();
        }
    }
}

/// A network namespace for the host side of a guest's link, `{base}-{pid}`,
/// deleted on drop (with the tap in it). The process id keeps concurrent
/// runs (other checkouts on the machine) apart; namespaces of the same base
/// whose process is gone (a crashed run) are deleted on creation.
#[derive(Debug)]
pub struct PeerNs {
    name: String,
}

impl PeerNs {
    pub fn create(base: &str) -> anyhow::Result<PeerNs> {
        let prefix = format!("{base}-");
        if let Ok(dir) = std::fs::read_dir("/run/netns") {
            for entry in dir.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let stale = name
                    .strip_prefix(&prefix)
                    .and_then(|pid| pid.parse::<u32>().ok())
                    .is_some_and(|pid| !Path::new("/proc").join(pid.to_string()).exists());
                if stale {
                    let _ = Command::new("ip").args(["netns", "del", &name]).status();
                }
            }
        }
        let name = &format!("{base}-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .context("ip netns add")?
            .success()
            && Command::new("ip")
                .args(["-n", name, "link", "set", "lo", "up"])
                .status()
                .context("ip link set lo up")?
                .success();
        if !ok {
            bail!("creating network namespace {name}");
        }
        Ok(PeerNs {
            name: name.to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NS ARGS`; true when it succeeded.
    pub fn ip(&self, args: &[&str]) -> bool {
        Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for PeerNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}

/// The guest's command agent (`testkit/support/guest_agent.py`): the command
/// of a guest that a test drives step by step from the host, over TCP from a
/// host namespace that reaches the guest's NIC.
pub const GUEST_AGENT_PY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/support/guest_agent.py");

/// The guest's command line that runs the agent on `listen` (`ADDR:PORT`, an
/// address of the guest's NIC). Debian's python3: the guest runs the host's
/// root, read-only.
pub fn agent_command(listen: &str) -> Vec<String> {
    ["/usr/bin/python3", GUEST_AGENT_PY, "--listen", listen]
        .map(str::to_string)
        .to_vec()
}

/// A connection to a guest's agent (see [`GUEST_AGENT_PY`] for the
/// protocol). Every call is one request and one reply.
#[derive(Debug)]
pub struct GuestAgent {
    reader: std::io::BufReader<std::net::TcpStream>,
    writer: std::net::TcpStream,
}

/// What [`GuestAgent::exec`] and [`GuestAgent::wait`] return.
#[derive(Debug, Clone)]
pub struct AgentOutput {
    /// Exit status; `None` while a spawned process runs; 128 + N when a
    /// signal N ended it; 124 when an exec outlived its timeout.
    pub status: Option<i32>,
    /// Its stdout and stderr, merged.
    pub out: String,
}

impl AgentOutput {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
}

impl GuestAgent {
    /// Connects from network namespace `netns` to the agent at `addr`,
    /// retrying until `timeout` (the guest boots meanwhile).
    pub fn connect(
        netns: &str,
        addr: std::net::SocketAddr,
        timeout: Duration,
    ) -> anyhow::Result<GuestAgent> {
        let deadline = Instant::now() + timeout;
        loop {
            let attempt = overpass::host::netns::in_netns(Some(netns), || {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))
            })
            .with_context(|| format!("entering {netns}"))?;
            match attempt {
                Ok(stream) => {
                    stream.set_read_timeout(Some(Duration::from_secs(300)))?;
                    let writer = stream.try_clone()?;
                    return Ok(GuestAgent {
                        reader: std::io::BufReader::new(stream),
                        writer,
                    });
                }
                Err(e) if Instant::now() >= deadline => {
                    bail!("the guest agent at {addr} did not answer within {timeout:?}: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }

    fn call(&mut self, req: serde_json::Value) -> anyhow::Result<serde_json::Value> {
        use std::io::{BufRead as _, Write as _};
        let mut line = req.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .context("sending to the guest agent")?;
        let mut reply = String::new();
        self.reader
            .read_line(&mut reply)
            .context("reading the guest agent's reply")?;
        if reply.is_empty() {
            bail!("the guest agent closed the connection (request {req})");
        }
        let v: serde_json::Value = serde_json::from_str(&reply)
            .with_context(|| format!("the guest agent's reply {reply:?}"))?;
        if let Some(e) = v.get("error") {
            bail!("the guest agent refused {req}: {e}");
        }
        Ok(v)
    }

    fn output(v: &serde_json::Value) -> AgentOutput {
        AgentOutput {
            status: v["status"].as_i64().map(|s| s as i32),
            out: v["out"].as_str().unwrap_or_default().to_string(),
        }
    }

    /// Runs `argv` in the guest to completion (at most `timeout`).
    pub fn exec(&mut self, argv: &[&str], timeout: Duration) -> anyhow::Result<AgentOutput> {
        let v = self.call(serde_json::json!({
            "op": "exec", "argv": argv, "timeout": timeout.as_secs_f64(),
        }))?;
        Ok(Self::output(&v))
    }

    /// Runs a shell script in the guest; fails unless it exits 0.
    pub fn sh(&mut self, script: &str) -> anyhow::Result<String> {
        let r = self.exec(&["sh", "-ec", script], Duration::from_secs(120))?;
        if !r.success() {
            bail!("in the guest, {script:?} exited {:?}:\n{}", r.status, r.out);
        }
        Ok(r.out)
    }

    /// Starts `argv` in the background under `name` (output in
    /// `/tmp/{name}.log` in the guest).
    pub fn spawn(&mut self, name: &str, argv: &[&str]) -> anyhow::Result<()> {
        self.call(serde_json::json!({"op": "spawn", "name": name, "argv": argv}))?;
        Ok(())
    }

    /// Sends signal `sig` to the process spawned as `name`.
    pub fn signal(&mut self, name: &str, sig: i32) -> anyhow::Result<()> {
        self.call(serde_json::json!({"op": "signal", "name": name, "signal": sig}))?;
        Ok(())
    }

    /// Waits up to `timeout` for the process spawned as `name`.
    pub fn wait(&mut self, name: &str, timeout: Duration) -> anyhow::Result<AgentOutput> {
        let v = self.call(serde_json::json!({
            "op": "wait", "name": name, "timeout": timeout.as_secs_f64(),
        }))?;
        Ok(Self::output(&v))
    }

    /// Writes `data` to `path` in the guest (under /tmp or /run).
    pub fn write(&mut self, path: &str, data: &str) -> anyhow::Result<()> {
        self.call(serde_json::json!({"op": "write", "path": path, "data": data}))?;
        Ok(())
    }

    /// Ends the agent: the guest powers off.
    pub fn quit(mut self) -> anyhow::Result<()> {
        self.call(serde_json::json!({"op": "quit"}))?;
        Ok(())
    }
}
